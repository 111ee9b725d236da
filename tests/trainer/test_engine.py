"""The training loop: learning on a fixed batch, exact resume, metrics, faults, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from core.checkpoint import load_model, read_checkpoint
from core.datasets import find_images
from trainer.__main__ import main


@pytest.mark.slow
def test_run_writes_config_metrics_checkpoints(read_metrics, tiny_train_args: list[str], tmp_path: Path) -> None:
    assert main(tiny_train_args) == 0
    run = tmp_path / "run"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["batch_size"] == 8 and cfg["image_size"] == 64
    steps, events = read_metrics(run)
    assert [r["step"] for r in steps] == list(range(1, 7))
    want = {
        "step",
        "total_steps",
        "epoch",
        "epochs",
        "lr",
        "momentum",
        "loss",
        "loss_group",
        "loss_slot",
        "images_per_sec",
        "data_wait",
        "active_slots",
        "batch_dead",
        "positive_pairs",
        "skipped_steps",
        "elapsed_s",
        "eta_s",
        "time",
    }
    assert want <= set(steps[0]) and steps[0]["total_steps"] == 6
    assert all(0 <= r["positive_pairs"] <= 8 and r["skipped_steps"] == 0 for r in steps)
    assert events[-1]["event"] == "finished"
    for name in ("ckpt_epoch_1.pth", "ckpt_epoch_2.pth", "current.pth", "final.pth", "train.log"):
        assert (run / name).is_file(), name
    ckpt = read_checkpoint(run / "final.pth")
    assert ckpt["step"] == 6 and ckpt["epoch"] == 2 and ckpt["train_config"]["batch_size"] == 8
    assert {"optimizer", "scheduler", "rng", "scaler"} <= set(ckpt)
    assert load_model(run / "final.pth").config.num_prototypes == 8
    assert not list(run.glob(".*.tmp"))


@pytest.mark.slow
def test_resume_equals_uninterrupted(read_metrics, tiny_train_args: list[str], tmp_path: Path) -> None:
    """Stop mid-epoch (step 4 of 6), resume, and compare every step's loss with one straight run."""
    straight = [*tiny_train_args, "--output-dir", str(tmp_path / "a")]
    assert main(straight) == 0
    split = [*tiny_train_args, "--output-dir", str(tmp_path / "b")]
    assert main([*split, "--max-steps", "4"]) == 0
    assert read_checkpoint(tmp_path / "b" / "current.pth")["step"] == 4
    assert main([*split, "--auto-resume"]) == 0
    a, _ = read_metrics(tmp_path / "a")
    b, events = read_metrics(tmp_path / "b")
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", "loss_group", "loss_slot", "lr", "momentum"):
            assert rb[key] == pytest.approx(ra[key], abs=1e-5), (ra["step"], key)
    sa = load_model(tmp_path / "a" / "final.pth").state_dict()
    sb = load_model(tmp_path / "b" / "final.pth").state_dict()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.slow
def test_resume_from_explicit_path_continues(read_metrics, tiny_train_args: list[str], tmp_path: Path) -> None:
    assert main([*tiny_train_args, "--max-steps", "3"]) == 0
    ckpt = tmp_path / "run" / "ckpt_epoch_1.pth"
    assert main([*tiny_train_args, "--output-dir", str(tmp_path / "c"), "--resume", str(ckpt), "--max-steps", "5"]) == 0
    steps, _ = read_metrics(tmp_path / "c")
    assert [r["step"] for r in steps] == [4, 5]


def test_missing_dataset_is_a_clear_error(read_metrics, tiny_train_args: list[str], tmp_path: Path, caplog) -> None:
    assert main([*tiny_train_args, "--data", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in caplog.text
    _, events = read_metrics(tmp_path / "run")
    assert events[-1]["event"] == "failed"


def test_dataset_smaller_than_batch(tiny_train_args: list[str], caplog) -> None:
    assert main([*tiny_train_args, "--batch-size", "64"]) == 2
    assert "fewer than one batch" in caplog.text


def test_unreadable_image_names_the_file(
    tiny_train_args: list[str], tmp_path: Path, synthetic_root: Path, caplog
) -> None:
    data = tmp_path / "imgs"
    data.mkdir()
    for p in find_images(synthetic_root, "train2017")[:8]:
        (data / p.name).write_bytes(p.read_bytes())
    (data / "broken.jpg").write_bytes(b"not a jpeg at all")
    args = [*tiny_train_args, "--data", str(data), "--split", "", "--workers", "1", "--epochs", "3"]
    assert main(args) == 2
    assert "broken.jpg" in caplog.text and "--skip-unreadable" in caplog.text
    assert main([*args, "--skip-unreadable", "--output-dir", str(tmp_path / "ok")]) == 0


def test_cli_help_lists_presets_and_options(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for s in (
        "cpu-demo",
        "coco-r50-800ep",
        "cocoplus-r50-800ep",
        "imagenet-r50-100ep",
        "--auto-resume",
        "--max-steps",
        "--precision",
        "torchrun --nnodes=2",
    ):
        assert s in text


@pytest.mark.slow
def test_release_checkpoint_initialises_and_continues(
    tiny_train_args: list[str], tmp_path: Path, make_tiny_model, read_metrics
) -> None:
    from core.checkpoint import to_release_state

    release = to_release_state(make_tiny_model(seed=5))
    release["epoch"] = 1
    path = tmp_path / "release.pth"
    torch.save(release, path)
    assert (
        main([*tiny_train_args, "--output-dir", str(tmp_path / "init"), "--init-from", str(path), "--max-steps", "1"])
        == 0
    )
    assert (
        main([*tiny_train_args, "--output-dir", str(tmp_path / "cont"), "--resume", str(path), "--max-steps", "4"]) == 0
    )
    steps, _ = read_metrics(tmp_path / "cont")
    assert [r["step"] for r in steps] == [4]  # epoch 1 done = 3 steps of 3 per epoch


@pytest.mark.slow
def test_bf16_autocast_on_cpu(tiny_train_args: list[str], read_metrics, tmp_path: Path) -> None:
    assert main([*tiny_train_args, "--precision", "bf16", "--channels-last", "--max-steps", "2"]) == 0
    steps, _ = read_metrics(tmp_path / "run")
    assert all(r["loss"] is not None and r["loss"] > 0 for r in steps)


def test_config_resolution_order(tmp_path: Path) -> None:
    from trainer.config import get_args_parser, resolve_config

    yml = tmp_path / "c.yaml"
    yml.write_text("batch_size: 16\nlr: 0.5\nnum-prototypes: 4\n")
    args = get_args_parser().parse_args(["--preset", "coco-r50-800ep", "--config", str(yml), "--lr", "0.25"])
    cfg = resolve_config(args)
    assert (cfg.arch, cfg.batch_size, cfg.lr, cfg.num_prototypes, cfg.precision) == ("resnet50", 16, 0.25, 4, "auto")
    assert cfg.scaled_lr() == pytest.approx(0.25 * 16 / 256)
    imagenet = resolve_config(get_args_parser().parse_args(["--preset", "imagenet-r50-100ep"]))
    assert imagenet.num_prototypes == 2048 and imagenet.epochs == 100
    yml.write_text("not_a_field: 1\n")
    with pytest.raises(ValueError, match="not_a_field"):
        resolve_config(get_args_parser().parse_args(["--config", str(yml)]))
