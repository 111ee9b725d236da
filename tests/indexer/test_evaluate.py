"""The unsupervised segmentation protocol end to end: synthetic and COCO-Stuff-27 layouts, baselines,
storage in an index, curated lists, bad input."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

from core.augment import IMAGENET_MEAN, IMAGENET_STD
from core.checkpoint import file_sha256, load_model, save_checkpoint
from core.synthetic import CLASSES
from indexer.build import build_index
from indexer.eval_cli import main as eval_main
from indexer.evaluate import EvalConfig, run_eval
from indexer.labels import FINE_TO_COARSE, make_protocol
from indexer.store import ConceptIndex, IndexMismatchError
from indexer.unsupervised import hungarian_scores

RES = 64


def _by_hand(checkpoint: Path, root: Path, n: int) -> dict:
    """The protocol written out directly for the first n synthetic val images."""
    model = load_model(checkpoint)
    preds, gts = [], []
    for p in sorted((root / "val2017").iterdir())[:n]:
        img = Image.open(p).convert("RGB")
        lab = Image.open(root / "labels" / "val2017" / f"{p.stem}.png")
        img = TF.center_crop(TF.resize(img, RES, TF.InterpolationMode.BILINEAR), [RES, RES])
        lab = TF.center_crop(TF.resize(lab, RES, TF.InterpolationMode.NEAREST), [RES, RES])
        x = TF.normalize(TF.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD)[None]
        with torch.no_grad():
            z = F.normalize(model.teacher_project(x), dim=1)
            s = torch.einsum("bdhw,kd->bkhw", z, F.normalize(model.grouping_k.slot_embed.weight, dim=1))
        preds.append(F.interpolate(s, size=(RES, RES), mode="bilinear", align_corners=False).argmax(1)[0].numpy())
        gts.append(np.asarray(lab))
    return hungarian_scores(preds, gts, num_classes=len(CLASSES), num_clusters=model.config.num_prototypes)


def test_synthetic_protocol_matches_hand_pipeline(tiny_checkpoint, synthetic_root):
    config = EvalConfig(tiny_checkpoint, synthetic_root, "synthetic", resolution=RES, limit=5, batch_size=2)
    r = run_eval(config).to_dict()
    ref = _by_hand(tiny_checkpoint, synthetic_root, 5)
    assert r["confusion"] == ref["confusion"]
    assert r["miou"] == pytest.approx(ref["miou"]) and r["pixel_accuracy"] == pytest.approx(ref["pixel_accuracy"])
    assert r["counts"]["num_images"] == 5 and r["counts"]["labelled_pixels"] == 5 * RES * RES
    assert r["protocol"]["resolution"] == RES and r["protocol"]["curated_list"] is None
    assert r["checkpoint"]["sha256"] == file_sha256(tiny_checkpoint)
    assert list(r["per_class_iou_named"]) == [
        c["name"] for c in json.loads((synthetic_root / "synthetic.json").read_text())["classes"]
    ]
    json.dumps(r, allow_nan=False)


def test_baselines_and_storage_in_index(tmp_path, synthetic_root, make_tiny_model, tiny_index):
    ckpt = tmp_path / "seed1.pth"
    save_checkpoint(ckpt, make_tiny_model(seed=1))
    index = build_index(ckpt, synthetic_root, tmp_path / "ix", batch_size=6)
    trained = run_eval(EvalConfig(ckpt, synthetic_root, "synthetic", resolution=RES, index_dir=index, limit=4))
    trained = trained.to_dict()
    rand = run_eval(EvalConfig(ckpt, synthetic_root, "synthetic", resolution=RES, baseline="random-init", limit=4))
    rand = rand.to_dict()
    km = run_eval(EvalConfig(None, synthetic_root, "synthetic", resolution=RES, baseline="kmeans-rgb", limit=4,
                             index_dir=index, out=tmp_path / "km.json")).to_dict()  # fmt: skip
    assert rand["confusion"] != trained["confusion"]  # seed-0 init, not the seed-1 weights
    assert km["baseline"] == "kmeans-rgb" and km["counts"]["num_clusters"] == len(CLASSES)  # no checkpoint: K = classes
    assert json.loads((tmp_path / "km.json").read_text())["miou"] == km["miou"]
    with ConceptIndex.open(index) as ix:
        stored = ix.eval_results()
        assert [e.result.baseline for e in stored] == ["kmeans-rgb", "none"]
        assert stored[1].result.to_dict() == trained  # stored as run, numbers identical
        examples = ix.eval_examples(trained["eval_id"])
        assert len(examples) == 4
        image_id, pred_png, gt_png = examples[0]
        pred, gt = np.asarray(Image.open(io.BytesIO(pred_png))), np.asarray(Image.open(io.BytesIO(gt_png)))
        assert pred.shape == gt.shape == (RES, RES)
        assert set(np.unique(pred)) <= set(range(8)) | {255}
        assert ix.image(image_id).file_name == "val2017/000000000001.jpg"
    with pytest.raises(IndexMismatchError) as e:  # tiny_index was built from another checkpoint
        run_eval(EvalConfig(ckpt, synthetic_root, "synthetic", resolution=RES, index_dir=tiny_index, limit=1))
    assert file_sha256(ckpt) in str(e.value)
    args = ["--checkpoint", str(ckpt), "--data", str(synthetic_root), "--protocol", "synthetic",
            "--index", str(tiny_index), "--limit", "1", "--workers", "0", "--no-progress"]  # fmt: skip
    assert eval_main(args) == 2


def test_curated_list_and_label_size_mismatch(tiny_checkpoint, synthetic_root, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synthetic_root, data)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(data / "labels" / "val2017" / "000000000002.png")
    (tmp_path / "list.txt").write_text("000000000001\n2\n000000000003.jpg\n")
    progress = tmp_path / "p.json"
    rc = eval_main(["--checkpoint", str(tiny_checkpoint), "--data", str(data), "--protocol", "synthetic",
                    "--curated-list", str(tmp_path / "list.txt"), "--resolution", str(RES), "--workers", "0",
                    "--progress-file", str(progress), "--no-progress"])  # fmt: skip
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["num_images"] == 2 and out["counts"]["skipped_images"] == 1
    assert out["protocol"]["curated_list"].endswith("list.txt")
    assert 0 <= out["miou_percent"] <= 100
    assert json.loads(progress.read_text())["done"] == 3


def test_cocostuff27_layout(tmp_path, tiny_checkpoint):
    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    (root / "stuffthingmaps_trainval2017" / "val2017").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in (139, 285):
        Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(root / "val2017" / f"{i:012d}.jpg")
        fine = np.zeros((48, 40), np.uint8)
        fine[:20] = 156  # sky-other → sky-stuff (23)
        fine[20:30] = 0  # person → person-things (9)
        fine[30:] = 255
        Image.fromarray(fine).save(root / "stuffthingmaps_trainval2017" / "val2017" / f"{i:012d}.png")
    proto = make_protocol("cocostuff27", root, "val2017")
    lab = proto.load(root / "val2017" / "000000000139.jpg", (40, 48))
    assert proto.num_classes == 27 and FINE_TO_COARSE[156] == 23
    assert set(np.unique(lab)) == {23, 9, 255} and (lab[:20] == 23).all()
    r = run_eval(EvalConfig(tiny_checkpoint, root, "cocostuff27", resolution=32, all_images=True)).to_dict()
    assert r["counts"]["num_images"] == 2 and r["counts"]["num_classes"] == 27
    assert r["counts"]["ignored_pixels"] > 0
    assert r["protocol"]["subset"].startswith("all-val2017") and r["image_list"]["name"] == "all-val2017"
    assert r["per_class_iou_named"]["sky-stuff"] is not None and r["per_class_iou_named"]["wall-stuff"] is None


def test_cli_output_has_no_faiss_loader_lines(tiny_checkpoint, synthetic_root, tmp_path):
    """``slotcon eval`` configures logging before faiss is imported; faiss's INFO lines (on an AVX2 CPU:
    "Could not load library with AVX2 support due to: ModuleNotFoundError ...") must not reach the user."""
    repo = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "indexer.eval_cli", "--checkpoint", str(tiny_checkpoint), "--data",
           str(synthetic_root), "--protocol", "synthetic", "--resolution", "64", "--out", str(tmp_path / "e.json"),
           "--no-progress"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "core.datasets" in proc.stderr  # the project's own INFO lines still show
    assert "faiss.loader" not in proc.stderr
