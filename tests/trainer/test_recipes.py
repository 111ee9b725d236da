"""The presets are the public release's recipes, value for value, and read only the splits the release reads.

RELEASE restates the release's scripts (``scripts/slotcon_{coco,cocoplus,imagenet}_r50_*.sh``) and the defaults
they rely on (``main_pretrain.py``'s argparse defaults, ``utils/lars.py``'s η, ``utils/lr_scheduler.py``'s
``eta_min`` and ``ctr_loss_filtered``'s τ in ``models/slotcon.py``); each preset is compared with it field by
field.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from trainer.config import PRESETS, resolve_config
from trainer.data import DataError, training_images
from trainer.precision import choose_precision

#: What every release script trains with (main_pretrain.py defaults + the flags the scripts pass).
RELEASE_COMMON = dict(
    arch="resnet50", width=1.0, stride16=False, dim_hidden=4096, dim_out=256, teacher_momentum=0.99,
    teacher_temp=0.07, student_temp=0.1, center_momentum=0.9, group_loss_weight=0.5, slot_temp=0.2,
    batch_size=512, optimizer="lars", lr=1.0, lr_scaling="linear", weight_decay=1e-5, momentum=0.9,
    lars_eta=0.001, warmup_epochs=5.0, warmup_multiplier=100.0, final_lr=1e-6, image_size=224, min_scale=0.08,
    workers=8, log_every=10,
)  # fmt: skip
#: Per script: the dataset it globs, K, epochs and --save-freq.
RELEASE = {
    "coco-r50-800ep": dict(RELEASE_COMMON, split=["train2017"], num_prototypes=256, epochs=800, save_every=50),
    "cocoplus-r50-800ep": dict(
        RELEASE_COMMON, split=["train2017", "unlabeled2017"], num_prototypes=256, epochs=800, save_every=50
    ),
    "imagenet-r50-100ep": dict(RELEASE_COMMON, split=["train"], num_prototypes=2048, epochs=100, save_every=5),
    "imagenet-r50-200ep": dict(RELEASE_COMMON, split=["train"], num_prototypes=2048, epochs=200, save_every=5),
}
RELEASE_PRESETS = sorted(RELEASE)


def _config(name: str, **flags):
    return resolve_config(argparse.Namespace(preset=name, config=None, **flags))


def test_every_release_script_has_a_preset() -> None:
    assert set(RELEASE) <= set(PRESETS) and set(PRESETS) - set(RELEASE) == {"cpu-demo", "coco-r50-800ep-k27"}


@pytest.mark.parametrize("name", RELEASE_PRESETS)
def test_preset_equals_the_release_recipe(name: str) -> None:
    cfg = _config(name)
    got = {key: getattr(cfg, key) for key in RELEASE[name]}
    assert got == RELEASE[name]
    assert cfg.scaled_lr() == pytest.approx(1.0 * 512 / 256)  # lr = base_lr × total batch / 256
    # --fp16: "auto" is the release's fp16 with a grad scaler on every GPU
    assert cfg.precision == "auto"
    assert choose_precision("cuda", cuda_bf16=False)[0] == choose_precision("cuda", cuda_bf16=True)[0] == "fp16"


@pytest.fixture()
def coco_root(tmp_path: Path) -> Path:
    """A standard COCO root tree with (empty) JPEGs in every split folder."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    for split, n in (("train2017", 3), ("unlabeled2017", 2), ("val2017", 2), ("test2017", 2)):
        (root / split).mkdir()
        for i in range(n):
            (root / split / f"{i:012d}.jpg").write_bytes(b"")
    return root


@pytest.fixture()
def imagenet_root(tmp_path: Path) -> Path:
    root = tmp_path / "imagenet"
    for split in ("train", "val"):
        for cls in ("n01440764", "n01443537"):
            (root / split / cls).mkdir(parents=True)
            (root / split / cls / f"{split}_{cls}.JPEG").write_bytes(b"")
    return root


@pytest.mark.parametrize(
    "name, want",
    [
        ("coco-r50-800ep", {"train2017": 3}),
        ("cocoplus-r50-800ep", {"train2017": 3, "unlabeled2017": 2}),
    ],
)
def test_coco_presets_read_only_their_splits(coco_root: Path, name: str, want: dict[str, int]) -> None:
    paths = training_images(_config(name, data=str(coco_root)))
    folders = [p.parent.name for p in paths]
    assert {f: folders.count(f) for f in set(folders)} == want
    assert not {"val2017", "test2017"} & set(folders)


@pytest.mark.parametrize("name", ["imagenet-r50-100ep", "imagenet-r50-200ep"])
def test_imagenet_presets_read_the_train_split(imagenet_root: Path, name: str) -> None:
    paths = training_images(_config(name, data=str(imagenet_root)))
    assert len(paths) == 2 and {p.parents[1].name for p in paths} == {"train"}


def test_no_preset_reads_held_out_splits() -> None:
    for name in PRESETS:
        assert not {"val2017", "test2017", "val", "test"} & set(_config(name).split), name


def test_a_split_less_coco_root_is_refused(coco_root: Path) -> None:
    with pytest.raises(DataError, match="val2017, test2017.*--split train2017,unlabeled2017"):
        training_images(_config("coco-r50-800ep", data=str(coco_root), split=[]))
    assert len(training_images(_config("coco-r50-800ep", data=str(coco_root / "train2017"), split=[]))) == 3


def test_split_flag_yaml_and_old_configs_give_a_list(tmp_path: Path) -> None:
    from trainer.config import TrainConfig, get_args_parser

    args = get_args_parser().parse_args(["--preset", "coco-r50-800ep", "--split", "train2017, unlabeled2017"])
    assert resolve_config(args).split == ["train2017", "unlabeled2017"]
    assert resolve_config(get_args_parser().parse_args(["--split", ""])).split == []
    yml = tmp_path / "c.yaml"
    yml.write_text("split: [train2017, unlabeled2017]\n")
    assert resolve_config(get_args_parser().parse_args(["--config", str(yml)])).split == ["train2017", "unlabeled2017"]
    assert TrainConfig.from_dict({"split": "train2017"}).split == ["train2017"]  # a checkpoint's older config


def test_the_api_offers_every_preset() -> None:
    from typing import get_args

    from server.schemas import TrainRequest

    assert set(get_args(TrainRequest.model_fields["preset"].annotation)) == set(PRESETS)


@pytest.mark.slow
def test_the_release_recipe_trains_a_step_and_resumes(synthetic_root: Path, tmp_path: Path, read_metrics) -> None:
    """coco-r50-800ep as the release runs it (ResNet-50, projector 4096 → 256, K = 256, LARS, the warm-up,
    --precision auto), only on tiny images and a tiny batch: one step, then a resumed second one."""
    from core.checkpoint import read_checkpoint
    from trainer.__main__ import main

    run = tmp_path / "r50"
    args = [
        "--preset",
        "coco-r50-800ep",
        "--data",
        str(synthetic_root),
        "--output-dir",
        str(run),
        "--image-size",
        "64",
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--threads",
        "2",
        "--progress",
        "log",
    ]
    try:
        assert main([*args, "--max-steps", "1"]) == 0
        assert read_checkpoint(run / "current.pth")["step"] == 1
        assert main([*args, "--auto-resume", "--max-steps", "2"]) == 0
        steps, events = read_metrics(run)
        assert [r["step"] for r in steps] == [1, 2] and events[-1]["event"] == "finished"
        assert all(r["loss"] > 0 for r in steps)
        peak, warmup = 1.0 * 8 / 256, 5 * 3  # lr = 1.0 × batch/256; 5 epochs of 3 steps
        assert steps[0]["lr"] == pytest.approx(peak / 100)  # the release's GradualWarmupScheduler from lr/100
        assert steps[1]["lr"] == pytest.approx(peak / 100 * (99 * 1 / warmup + 1))
        ckpt = read_checkpoint(run / "final.pth")
        assert ckpt["step"] == 2
        trained = ckpt["train_config"]
        kept = {k: v for k, v in RELEASE["coco-r50-800ep"].items() if k not in ("image_size", "batch_size", "workers")}
        assert {k: trained[k] for k in kept} == kept
        assert trained["precision"] in ("fp32", "bf16") and trained["precision_reason"].startswith("auto")
        assert ckpt["model"]["grouping_k.slot_embed.weight"].shape == (256, 256)
    finally:
        for p in run.glob("*.pth"):
            p.unlink()  # 750 MB each
