"""Slots as objects and prototypes as concepts: FG-ARI against scikit-learn on the foreground pixels, mBO and
the dissection IoUs against direct loops and counts, the known cases (a perfect segmentation, one slot over
several instances), instance annotations in COCO's three encodings, and the whole path through
``slotcon eval --metric`` on the synthetic scenes checked against a hand pipeline."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from sklearn.metrics import adjusted_rand_score

from core.infer_model import inference_model_for
from core.inference import assign, teacher_outputs
from indexer.eval_cli import main as eval_main
from indexer.evaluate import EvalSet
from indexer.evaluate_objects import (
    InstanceAnnotations,
    ObjectDiscoveryAccumulator,
    adjusted_rand_index,
    dissect,
    dissection_iou,
)
from indexer.export import export_index
from indexer.labels import make_protocol
from indexer.store import ConceptIndex
from indexer.unsupervised import ConfusionAccumulator


def _scene(rng: np.random.Generator, size: int = 40, k: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random slot map, 2-4 random rectangular instance masks (overlapping at times) and crowd flags."""
    slots = rng.integers(0, k, (size, size))
    slots[: size // 2] = rng.integers(0, k)  # large uniform parts, so the scores are not all near 0
    n = int(rng.integers(2, 5))
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        y, x = rng.integers(0, size - 8, 2)
        h, w = rng.integers(4, 20, 2)
        masks[i, y : y + h, x : x + w] = 1
    crowd = rng.random(n) < 0.2
    return slots, masks, crowd


def _direct_fg_ari(slots: np.ndarray, masks: np.ndarray, crowd: np.ndarray) -> float | None:
    """scikit-learn's ARI over the pixels of exactly one non-crowd instance and of no crowd region."""
    things = masks[~crowd].astype(bool)
    fg = (things.sum(0) == 1) & ~masks[crowd].astype(bool).any(0)
    if not fg.any():
        return None
    return adjusted_rand_score(things.argmax(0)[fg], slots[fg])


def _direct_best(slots: np.ndarray, masks: np.ndarray, crowd: np.ndarray) -> list[float]:
    """Each non-crowd, non-empty instance's best IoU with any slot mask, by a loop over slots."""
    best = []
    for m, c in zip(masks.astype(bool), crowd, strict=True):
        if c or not m.any():
            continue
        ious = [(m & (slots == s)).sum() / (m | (slots == s)).sum() for s in np.unique(slots)]
        best.append(max(ious))
    return best


def test_ari_equals_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 400))
        a = rng.integers(0, int(rng.integers(1, 6)), n)
        b = rng.integers(0, int(rng.integers(1, 6)), n)
        assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
    big = np.repeat(np.arange(7), 200_000)  # 1.4 M pixels: the pair counts pass int64
    assert adjusted_rand_index(big, big[::-1]) == pytest.approx(adjusted_rand_score(big, big[::-1]), abs=1e-12)


def test_fg_ari_and_mbo_against_direct_loops() -> None:
    rng = np.random.default_rng(1)
    acc = ObjectDiscoveryAccumulator(num_examples=2)
    aris, mbos, everyone = [], [], []
    for i in range(40):
        slots, masks, crowd = _scene(rng)
        ari, mbo = acc.update(slots, masks, crowd, image_id=i)
        want_ari, best = _direct_fg_ari(slots, masks, crowd), _direct_best(slots, masks, crowd)
        if want_ari is None:
            assert ari is None
        else:
            assert ari == pytest.approx(want_ari, abs=1e-12)
            aris.append(want_ari)
        if best:
            assert mbo == pytest.approx(np.mean(best), abs=1e-12)
            mbos.append(np.mean(best))
            everyone += best
    found = acc.result(None)
    assert found.fg_ari == pytest.approx(np.mean(aris)) and found.fg_ari_images == len(aris)
    assert found.mbo_image == pytest.approx(np.mean(mbos)) and found.images == len(mbos)
    assert found.mbo_instance == pytest.approx(np.mean(everyone)) and found.instances == len(everyone)
    assert found.mbo_image != pytest.approx(found.mbo_instance)  # two averages, not one number twice
    # only the examples are kept: two best, two worst, in order
    assert len(found.best) == len(found.worst) == 2
    assert found.best[0].fg_ari == pytest.approx(max(aris)) and found.worst[0].fg_ari == pytest.approx(min(aris))


def test_known_cases() -> None:
    masks = np.zeros((3, 30, 30), np.uint8)
    masks[0, 2:12, 2:12] = masks[1, 15:28, 4:20] = masks[2, 3:10, 18:29] = 1
    perfect = (masks * np.arange(1, 4)[:, None, None]).sum(0)  # background its own slot
    acc = ObjectDiscoveryAccumulator()
    assert acc.update(perfect, masks, np.zeros(3, bool)) == (1.0, 1.0)
    one = np.zeros((30, 30), np.int64)  # one slot over everything: no grouping of the instances at all
    ari, mbo = acc.update(one, masks, np.zeros(3, bool))
    assert ari == 0.0
    assert mbo == pytest.approx(np.mean([m.sum() / m.size for m in masks]))
    # a crowd region is no instance: its pixels neither count for FG-ARI nor are scored for mBO
    ari, mbo = acc.update(perfect, masks, np.array([False, False, True]))
    assert (ari, mbo) == (1.0, 1.0)
    # no instance at all: no score, counted apart
    assert acc.update(perfect, masks[:0], np.zeros(0, bool)) == (None, None)
    found = acc.result(None)
    assert (found.images, found.instances, found.images_without_instances, found.crowd_instances) == (3, 8, 1, 1)


def test_dissection_equals_direct_count() -> None:
    rng = np.random.default_rng(2)
    k, c = 6, 4
    conf = ConfusionAccumulator(c, num_clusters=k)
    preds, gts = [], []
    for _ in range(5):
        p = rng.integers(0, k, (24, 24))
        g = rng.integers(0, c, (24, 24)).astype(np.uint8)
        g[rng.random((24, 24)) < 0.1] = 255  # unlabelled: counted for neither mask
        g[:8] = 1
        p[:8] = 2  # prototype 2 is class 1 at the top of each image
        conf.update(p, g)
        preds.append(p)
        gts.append(g)
    pred, gt = np.stack(preds), np.stack(gts)
    labelled = gt != 255
    direct = np.array(
        [
            [((pred == i) & (gt == j)).sum() / (((pred == i) | (gt == j)) & labelled).sum() for j in range(c)]
            for i in range(k)
        ]
    )
    np.testing.assert_allclose(dissection_iou(conf.confusion), direct, atol=1e-12)
    names = ["a", "b", "c", "d"]
    found = dissect(conf.confusion, names, threshold=0.2)
    for row in found.prototypes:
        assert row.best_class == int(direct[row.prototype].argmax())
        assert row.best_iou == pytest.approx(direct[row.prototype].max())
        np.testing.assert_allclose(row.iou, direct[row.prototype])
    assert found.classes_found == int((direct.max(0) > 0.2).sum()) and found.found_classes[0] == "b"
    assert dissect(conf.confusion, names, threshold=0.99).classes_found == 0
    empty = dissect(np.zeros((2, 4), np.int64), names)
    assert empty.prototypes[0].best_class is None and empty.classes_found == 0


def test_instance_annotations_three_encodings(tmp_path: Path) -> None:
    """Compressed RLE (the synthetic scenes), polygons (COCO's things) and uncompressed RLE (COCO's crowds)."""
    h, w = 20, 30
    box = np.zeros((h, w), np.uint8)
    box[2:8, 3:13] = 1
    rle = mask_utils.encode(np.asfortranarray(box))
    crowd = np.zeros((h, w), np.uint8)
    crowd[12:18, 0:30] = 1
    counts, last, run = [], 0, 0
    for v in crowd.ravel(order="F"):  # column-major runs, starting with zeros
        if v != last:
            counts.append(run)
            last, run = v, 0
        run += 1
    counts.append(run)
    data = {
        "images": [{"id": 7, "file_name": "a.jpg", "height": h, "width": w}],
        "annotations": [
            {"image_id": 7, "iscrowd": 0, "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}},
            {"image_id": 7, "iscrowd": 0, "segmentation": [[20, 2, 28, 2, 28, 10, 20, 10]]},
            {"image_id": 7, "iscrowd": 1, "segmentation": {"size": [h, w], "counts": counts}},
        ],
    }
    (tmp_path / "inst.json").write_text(json.dumps(data))
    masks, flags = InstanceAnnotations(tmp_path / "inst.json").masks("val2017/a.jpg")
    assert masks.shape == (3, h, w) and flags.tolist() == [False, False, True]
    np.testing.assert_array_equal(masks[0], box)
    np.testing.assert_array_equal(masks[2], crowd)
    assert masks[1, 4:9, 21:27].all() and not masks[1, :, :18].any()
    with pytest.raises(FileNotFoundError, match="instance annotations"):
        InstanceAnnotations(tmp_path / "none.json")


def _hand_pipeline(checkpoint: Path, root: Path, res: int) -> tuple[list[float], list[float], list[float]]:
    """Per image FG-ARI and mBO, and all best overlaps, computed without the evaluation's accumulators: the
    model on EvalSet's crops, the instance masks decoded from the JSON and cropped here."""
    import torchvision.transforms.functional as TF

    model = inference_model_for(checkpoint, torch.device("cpu"))
    data = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    files = {im["id"]: im["file_name"] for im in data["images"]}
    by_file: dict[str, list[np.ndarray]] = {}
    for ann in data["annotations"]:
        seg = ann["segmentation"]
        m = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()})
        m = TF.center_crop(TF.resize(Image.fromarray(m), res, TF.InterpolationMode.NEAREST), [res, res])
        by_file.setdefault(files[ann["image_id"]], []).append(np.asarray(m).astype(bool))
    paths = sorted((root / "val2017").glob("*.jpg"))
    ds = EvalSet(list(enumerate(paths)), root, make_protocol("synthetic", root, "val2017"), res)
    aris, mbos, everyone = [], [], []
    for item in ds:
        with torch.no_grad():
            _, scores = teacher_outputs(model, item["tensor"][None])
        slots = assign(scores, (res, res))[0].numpy()
        masks = [m for m in by_file[Path(item["file_name"]).name] if m.any()]
        fg = np.sum(masks, 0) == 1
        aris.append(adjusted_rand_score(np.argmax(masks, 0)[fg], slots[fg]))
        best = _direct_best(slots, np.stack(masks), np.zeros(len(masks), bool))
        mbos.append(np.mean(best))
        everyone += best
    return aris, mbos, everyone


@pytest.fixture(scope="module")
def measured_index(tiny_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny index (the session's stays without evaluations) that the CLI test stores into."""
    out = tmp_path_factory.mktemp("measured") / "index"
    shutil.copytree(tiny_index, out)
    return out


def test_cli_metrics_with_the_index_model(measured_index, tiny_checkpoint, synthetic_root, capsys) -> None:
    """``slotcon eval --index DIR --metric ...``: the index's model on its images, FG-ARI and mBO equal to the
    hand pipeline, the dissection equal to the stored confusion's counts, stored with their tags."""
    res = 64
    tiny_index = measured_index
    code = eval_main(
        ["--index", str(tiny_index), "--metric", "object-discovery", "--metric", "dissection", "--resolution",
         str(res), "--no-progress", "--dissection-threshold", "0.1"]
    )  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"] == ["object-discovery", "dissection"]
    found = out["object_discovery"]
    aris, mbos, everyone = _hand_pipeline(tiny_checkpoint, synthetic_root, res)
    assert found["fg_ari"] == pytest.approx(np.mean(aris), abs=1e-9)
    assert found["mbo_image"] == pytest.approx(np.mean(mbos), abs=1e-9)
    assert found["mbo_instance"] == pytest.approx(np.mean(everyone), abs=1e-9)
    assert (found["images"], found["instances"]) == (12, len(everyone))
    assert found["tag"]["benchmark"] == "synthetic-instances" and found["tag"]["matching"] == "slots-to-instances"
    assert found["tag"]["resolution"] == res and found["tag"]["image_list"]["used"] == 12
    assert found["best"][0]["fg_ari"] == pytest.approx(max(aris)) and "slots_png" not in found["best"][0]

    with ConceptIndex.open(tiny_index) as index:
        stored = index.eval_results()[0].result
    assert stored.object_discovery is not None and stored.object_discovery.best[0].slots_png
    dis = out["dissection"]
    direct = dissection_iou(stored.confusion)
    assert dis["threshold"] == 0.1 and dis["tag"]["matching"] == "prototype-to-class"
    assert dis["classes_found"] == int((direct.max(0) > 0.1).sum())
    for row in dis["prototypes"]:
        np.testing.assert_allclose(row["iou"], direct[row["prototype"]], atol=1e-12)
    assert stored.dissection is not None and stored.dissection.classes_found == dis["classes_found"]


def test_cli_refuses_a_root_without_instances(tiny_checkpoint, tmp_path, synthetic_root, capsys) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for name in ("val2017", "labels", "synthetic.json"):
        (root / name).symlink_to(synthetic_root / name)
    code = eval_main(
        ["--checkpoint", str(tiny_checkpoint), "--data", str(root), "--protocol", "synthetic", "--metric",
         "object-discovery", "--no-progress", "--limit", "2"]
    )  # fmt: skip
    assert code == 2
    assert "instances_val2017.json not found" in capsys.readouterr().err


def test_export_carries_the_dissection(measured_index, tmp_path) -> None:
    """After the CLI test stored a dissection: the prototypes table has each one's best class and IoU, the
    dissection table every (prototype, class) IoU, in CSV and in Parquet."""
    with ConceptIndex.open(measured_index) as index:
        found = index.eval_results()[0].result.dissection
    if found is None:
        pytest.skip("needs test_cli_metrics_with_the_index_model's stored dissection")
    counts = export_index(measured_index, "csv", tmp_path / "csv")
    protos = list(csv.DictReader((tmp_path / "csv" / "prototypes.csv").open()))
    rows = list(csv.DictReader((tmp_path / "csv" / "dissection.csv").open()))
    assert counts["dissection"] == len(rows) == len(found.prototypes) * found.num_classes
    for p, want in zip(protos, found.prototypes, strict=True):
        assert float(p["dissection_best_iou"]) == want.best_iou
        assert p["dissection_best_class"] == (want.best_class_name or "")
    for r in rows:
        assert float(r["iou"]) == found.prototypes[int(r["prototype"])].iou[int(r["class_id"])]
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    export_index(measured_index, "parquet", tmp_path / "pq")
    table = pd.read_parquet(tmp_path / "pq" / "dissection.parquet")
    assert table["iou"].tolist() == [float(r["iou"]) for r in rows]
    best = pd.read_parquet(tmp_path / "pq" / "prototypes.parquet")["dissection_best_iou"]
    assert best.tolist() == [r.best_iou for r in found.prototypes]


def test_coco_root_with_instances_only(tiny_checkpoint, tmp_path, capsys) -> None:
    """A COCO root with val2017 images and instance annotations but no class maps: object discovery alone
    runs (polygons, a crowd region in uncompressed RLE, an image without instances), counted as annotated."""
    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    rng = np.random.default_rng(0)
    h, w = 40, 48
    images = []
    for i in (139, 285, 632):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "val2017" / f"{i:012d}.jpg")
        images.append({"id": i, "file_name": f"{i:012d}.jpg", "height": h, "width": w})
    crowd = np.zeros((h, w), np.uint8)
    crowd[30:38, 10:40] = 1
    rle = mask_utils.encode(np.asfortranarray(crowd))
    anns = [
        {"image_id": 139, "iscrowd": 0, "segmentation": [[8, 6, 24, 6, 24, 28, 8, 28]]},
        {"image_id": 139, "iscrowd": 0, "segmentation": [[26, 6, 40, 6, 40, 28, 26, 28]]},
        {"image_id": 139, "iscrowd": 1, "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}},
        {"image_id": 632, "iscrowd": 0, "segmentation": [[12, 10, 36, 10, 36, 30, 12, 30]]},
    ]
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps({"images": images, "annotations": anns}))
    code = eval_main(
        ["--checkpoint", str(tiny_checkpoint), "--data", str(root), "--protocol", "cocostuff27", "--all-images",
         "--metric", "object-discovery", "--resolution", "32", "--no-progress", "--full"]
    )  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    found = out["object_discovery"]
    assert (found["images"], found["instances"], found["crowd_instances"]) == (2, 3, 1)
    assert found["images_without_instances"] == 1 and found["fg_ari_images"] == 2
    assert -1 <= found["fg_ari"] <= 1 and 0 < found["mbo_instance"] <= 1
    assert out["miou"] is None and out["counts"]["labelled_pixels"] == 0  # no class map: no semantic score
    assert found["tag"]["benchmark"] == "cocostuff27-instances" and found["tag"]["image_list"]["name"] == "all-val2017"
