"""Scores measured as the papers measure them: the shipped curated list counted against a COCO root with
images missing, every score tagged, the paper's row beside only an identically tagged score, the cluster
probe against k-means + Hungarian written out directly, and the seeds' mean and standard deviation."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import statistics
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.optimize import linear_sum_assignment

from core.infer_model import inference_model_for
from core.inference import teacher_outputs
from indexer.build import build_index
from indexer.eval_cli import main as eval_main
from indexer.eval_record import read_eval_result
from indexer.evaluate import EvalConfig, EvalSet, run_eval
from indexer.evaluate_images import CURATED_LIST, CURATED_MD5, CURATED_NAME, read_list
from indexer.evaluate_tag import PAPER, check_against, make_tag, mean_std
from indexer.labels import make_protocol
from indexer.store import ConceptIndex
from indexer.types import ImageList, ScoreTag

RES = 64
FIRST_IDS = [139, 724, 785, 872, 885, 1000, 1268, 1532]  # seven of the shipped list's first ids, and 1000 (not listed)
DROPPED = ["000000000785", "000000001268"]  # listed, left out of the fixture root
TAG_FIELDS = {f.name for f in dataclasses.fields(ScoreTag)}
LIST_FIELDS = {f.name for f in dataclasses.fields(ImageList)}


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A COCO root (val2017 JPEGs + stuffthingmaps) holding five images of the curated list (two of its first
    seven left out) and one image the list does not name."""
    root = tmp_path_factory.mktemp("coco")
    (root / "val2017").mkdir()
    (root / "stuffthingmaps_trainval2017" / "val2017").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in FIRST_IDS:
        if f"{i:012d}" in DROPPED:
            continue
        Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(root / "val2017" / f"{i:012d}.jpg")
        fine = np.full((48, 40), 156, np.uint8)  # sky-other → sky-stuff
        fine[20:30] = 0  # person
        fine[30:40] = 123  # grass → plant-stuff
        fine[40:] = 255
        Image.fromarray(fine).save(root / "stuffthingmaps_trainval2017" / "val2017" / f"{i:012d}.png")
    return root


def test_the_shipped_list_is_the_benchmarks() -> None:
    assert hashlib.md5(CURATED_LIST.read_bytes()).hexdigest() == CURATED_MD5
    names = read_list(CURATED_LIST)
    assert len(names) == 2175 and "1000" not in names and names["139"] == "000000000139"
    assert "MIT" in (CURATED_LIST.parent / "README.md").read_text()


def test_cocostuff27_scores_the_curated_list_by_default(coco_root: Path, tiny_checkpoint: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="indexer.evaluate_images"):
        r = run_eval(EvalConfig(tiny_checkpoint, coco_root, "cocostuff27", resolution=32, seeds=1)).to_dict()
    assert r["image_list"] == {"name": CURATED_NAME, "used": 5, "listed": 2175, "missing": 2170}
    assert r["counts"]["num_images"] == 5  # 000000001000 is not in the list
    assert set(DROPPED) <= set(r["missing_images"]) and len(r["missing_images"]) == 100
    assert "000000000139" not in r["missing_images"]
    assert f"{CURATED_NAME} 5/2,175" in r["tag"]["label"]
    assert "2170 of the 2175 images" in caplog.text and "000000000785" in caplog.text
    assert r["protocol"]["curated_list"] == str(CURATED_LIST)


def test_a_users_list_is_counted_and_named(coco_root: Path, tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    mine = tmp_path / "mine.txt"
    mine.write_text("000000000139.jpg\n724\n000000000785\n")
    r = run_eval(EvalConfig(tiny_checkpoint, coco_root, "cocostuff27", resolution=32, curated_list=mine, seeds=1))
    assert r.image_list == ImageList("mine.txt", 2, 3, 1) and r.missing_images == ["000000000785"]
    copy = tmp_path / "Coco164kFull_Stuff_Coarse_7.txt"  # the benchmark's list under its original name
    shutil.copy(CURATED_LIST, copy)
    r = run_eval(EvalConfig(tiny_checkpoint, coco_root, "cocostuff27", resolution=32, curated_list=copy, seeds=1))
    assert r.image_list.name == CURATED_NAME
    r = run_eval(EvalConfig(tiny_checkpoint, coco_root, "cocostuff27", resolution=32, all_images=True, seeds=1))
    assert r.image_list == ImageList("all-val2017", 6, 6, 0) and r.missing_images == []
    none = tmp_path / "none.txt"
    none.write_text("000000000001\n")
    with pytest.raises(ValueError, match="none of the 1 images"):
        run_eval(EvalConfig(tiny_checkpoint, coco_root, "cocostuff27", resolution=32, curated_list=none))
    args = ["--checkpoint", str(tiny_checkpoint), "--data", str(coco_root), "--protocol", "cocostuff27",
            "--resolution", "32", "--workers", "0", "--no-progress", "--seeds", "1"]  # fmt: skip
    assert eval_main([*args, "--curated-list", str(none)]) == 2
    assert "none of the 1 images" in capsys.readouterr().err
    assert eval_main([*args, "--curated-list", str(mine)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["image_list"]["used"] == 2 and out["tag"].endswith("1 seed") and "2/3" in out["tag"]
    assert [s["matching"] for s in out["scores"]] == ["one-to-one", "many-to-one", "cluster-probe"]


def _assert_tagged(result: dict) -> None:
    scores = [result, result["many_to_one"], *result["scores"]]
    for score in scores:
        tag = score["tag"]
        assert set(tag) == TAG_FIELDS and set(tag["image_list"]) == LIST_FIELDS, tag
        assert tag["label"] and tag["crop"] == "centre" and tag["crf"] is False
    for score in result["scores"]:
        assert set(score["paper"]) == {"reference", "comparable", "differences"}


def test_every_stored_score_carries_its_tag(synthetic_root: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    index = build_index(tiny_checkpoint, synthetic_root, tmp_path / "ix", split="val2017", batch_size=12)
    cfg = EvalConfig(tiny_checkpoint, synthetic_root, "synthetic", resolution=RES, index_dir=index, limit=4, seeds=2)
    ran = run_eval(cfg).to_dict()
    with ConceptIndex.open(index) as ix:
        stored = ix.eval_results()[0].result.to_dict()
    assert stored == ran
    _assert_tagged(stored)
    one, many, probe = stored["scores"]
    assert (one["matching"], many["matching"], probe["matching"]) == ("one-to-one", "many-to-one", "cluster-probe")
    assert one["tag"]["k"] == probe["tag"]["k"] == 8 and probe["tag"]["seeds"] == 2 and one["tag"]["seeds"] == 1
    assert one["tag"]["image_list"] == {"name": "all-val2017", "used": 4, "listed": 12, "missing": 0}
    assert stored["protocol"]["seeds"] == [0, 1]


def test_a_result_stored_before_tags_gets_them(synthetic_root: Path, tiny_checkpoint: Path) -> None:
    r = run_eval(EvalConfig(tiny_checkpoint, synthetic_root, "synthetic", resolution=RES, limit=2, probe=False))
    old = r.to_dict()
    for key in ("tag", "scores", "image_list", "missing_images"):
        old.pop(key)
    old["many_to_one"].pop("tag")
    old["protocol"] = {k: v for k, v in old["protocol"].items() if k not in ("crop", "crf", "seeds")}
    again = read_eval_result(old).to_dict()
    _assert_tagged(again)
    assert [s["matching"] for s in again["scores"]] == ["one-to-one", "many-to-one"]
    assert again["tag"]["image_list"]["name"] == "all-val2017" and again["tag"]["seeds"] == 1


CHANGES = {
    "benchmark": "synthetic",
    "image_list": ImageList("all-val2017", 5000, 5000),
    "k": 256,
    "matching": "many-to-one",
    "resolution": 448,
    "crop": "none",
    "crf": True,
    "seeds": 5,
}


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_any_other_field_makes_the_paper_a_reference_line(field: str) -> None:
    assert set(CHANGES) == TAG_FIELDS - {"label"}
    assert check_against(PAPER.tag).comparable and check_against(PAPER.tag).differences == []
    changed = dataclasses.replace(PAPER.tag, **{field: CHANGES[field]})
    check = check_against(changed)
    assert not check.comparable and check.reference == PAPER.name
    want = {"benchmark": ["benchmark"], "image_list": ["image list", "images used"], "k": ["K"],
            "matching": ["matching"], "resolution": ["resolution"], "crop": ["crop"], "crf": ["CRF"],
            "seeds": ["seeds"]}[field]  # fmt: skip
    assert [d.field for d in check.differences] == want


@pytest.mark.parametrize("images", [ImageList(CURATED_NAME, 2170, 2175, 5), ImageList(CURATED_NAME, 2175, 2176)])
def test_a_partial_list_is_a_reference_line(images: ImageList) -> None:
    tag = make_tag("cocostuff27", images, k=27, matching="one-to-one", resolution=320)
    check = check_against(tag)
    assert not check.comparable and [d.field for d in check.differences] == ["images used"]
    assert check.differences[0].reference == "2,175/2,175"
    assert make_tag("cocostuff27", PAPER.tag.image_list, k=27, matching="one-to-one", resolution=320) == PAPER.tag


def test_the_paper_row_is_table_5() -> None:
    assert PAPER.source.endswith("Table 5") and (PAPER.miou, PAPER.pixel_accuracy) == (0.1826, 0.4236)
    assert PAPER.tag.label == (
        "cocostuff27 · cocostuff27-curated-val2017 2,175/2,175 · K=27 · one-to-one · 320 centre crop · no CRF · 1 seed"
    )


def test_an_evaluation_names_what_differs_from_the_paper(coco_root: Path, tiny_checkpoint: Path) -> None:
    r = run_eval(EvalConfig(tiny_checkpoint, coco_root, "cocostuff27", resolution=32, seeds=2))
    one, many, probe = r.scores
    assert [d.field for d in one.paper.differences] == ["images used", "K", "resolution"]
    assert [d.field for d in many.paper.differences] == ["images used", "K", "matching", "resolution"]
    assert [d.field for d in probe.paper.differences] == ["images used", "K", "matching", "resolution", "seeds"]
    assert one.paper.differences[1].ours == "8" and one.paper.differences[1].reference == "27"


def _direct_probe(checkpoint: Path, root: Path, n: int, seed: int) -> tuple[float, float]:
    """K-means (FAISS, spherical, C centres, every pixel) on the normalised, resized teacher projections of
    the first n synthetic val images, nearest centre, then Hungarian: (mIoU, pixel accuracy)."""
    labels = make_protocol("synthetic", root, "val2017")
    paths = sorted((root / "val2017").iterdir())[:n]
    items = [EvalSet(list(enumerate(paths)), root, labels, RES)[i] for i in range(n)]
    model = inference_model_for(checkpoint, torch.device("cpu"))
    z, _ = teacher_outputs(model, torch.stack([it["tensor"] for it in items]))
    up = F.interpolate(z, size=(RES, RES), mode="bilinear", align_corners=False)  # (n, D, RES, RES)
    x = F.normalize(up.permute(0, 2, 3, 1).reshape(-1, z.shape[1]), dim=1).numpy()
    c = labels.num_classes
    km = faiss.Kmeans(x.shape[1], c, niter=25, seed=seed, spherical=True, min_points_per_centroid=1,
                      max_points_per_centroid=len(x))  # fmt: skip
    km.train(x)
    cluster = km.index.search(x, 1)[1].ravel()
    gt = np.concatenate([it["label"].ravel() for it in items]).astype(np.int64)
    keep = gt < c
    conf = np.zeros((c, c), np.int64)
    np.add.at(conf, (cluster[keep], gt[keep]), 1)
    rows, cols = linear_sum_assignment(conf, maximize=True)
    tp = conf[rows, cols]
    iou = tp / (conf[rows].sum(1) + conf[:, cols].sum(0) - tp)
    return float(iou.mean()), float(tp.sum() / conf.sum())


def test_the_cluster_probe_is_kmeans_then_hungarian(synthetic_root: Path, tiny_checkpoint: Path) -> None:
    cfg = EvalConfig(tiny_checkpoint, synthetic_root, "synthetic", resolution=RES, limit=4, seeds=2, seed=3)
    probe = run_eval(cfg).scores[2]
    assert probe.matching == "cluster-probe" and [run.seed for run in probe.runs] == [3, 4]
    for run in probe.runs:
        miou, acc = _direct_probe(tiny_checkpoint, synthetic_root, 4, run.seed)
        assert run.miou == pytest.approx(miou, abs=1e-12) and run.pixel_accuracy == pytest.approx(acc, abs=1e-12)
    assert probe.miou == pytest.approx(statistics.mean(run.miou for run in probe.runs))
    assert probe.miou_std == pytest.approx(statistics.stdev(run.miou for run in probe.runs))
    # K equal to the class count: no probe
    k6 = run_eval(dataclasses.replace(cfg, clusters=None, checkpoint=None, baseline="kmeans-rgb", seeds=1))
    assert [s.matching for s in k6.scores] == ["one-to-one", "many-to-one"]


def test_kmeans_seeds_report_mean_and_std(synthetic_root: Path) -> None:
    cfg = EvalConfig(None, synthetic_root, "synthetic", resolution=RES, baseline="kmeans-rgb", limit=4, seeds=3)
    r = run_eval(cfg)
    one, many = r.scores
    assert [run.seed for run in one.runs] == [0, 1, 2] and one.tag.seeds == 3 and "3 seeds" in one.tag.label
    mious = [run.miou for run in one.runs]
    assert len(set(mious)) > 1  # the seeds differ
    assert one.miou == pytest.approx(statistics.mean(mious)) == r.miou
    assert one.miou_std == pytest.approx(statistics.stdev(mious))
    assert one.pixel_accuracy_std == pytest.approx(statistics.stdev(run.pixel_accuracy for run in one.runs))
    assert many.miou == pytest.approx(statistics.mean(run.miou for run in many.runs))
    # a seed's run is the same alone: seed 1 on its own
    alone = run_eval(dataclasses.replace(cfg, seed=1, seeds=1))
    assert alone.scores[0].runs[0].miou == one.runs[1].miou and alone.scores[0].miou_std is None
    assert r.protocol.seeds == [0, 1, 2] and r.counts.num_images == 4


def test_mean_std_known_answers() -> None:
    mean, std = mean_std([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2) and std == pytest.approx(0.1)
    assert mean_std([0.5]) == (0.5, None) and mean_std([]) == (None, None)
    assert mean_std([0.2, None, 0.4])[0] == pytest.approx(0.3)


def test_the_k27_preset_is_the_coco_recipe_with_the_papers_k() -> None:
    import argparse

    from core.recipes import PRESETS
    from trainer.config import resolve_config

    k27 = resolve_config(argparse.Namespace(preset="coco-r50-800ep-k27", config=None))
    coco = resolve_config(argparse.Namespace(preset="coco-r50-800ep", config=None))
    assert k27.num_prototypes == PAPER.tag.k == 27 and k27.split == ["train2017"]
    differ = {k for k in vars(coco) if getattr(coco, k) != getattr(k27, k)}
    assert differ == {"num_prototypes", "output_dir"}, differ
    assert PRESETS["coco-r50-800ep-k27"]["output_dir"] == "runs/coco-r50-800ep-k27"
