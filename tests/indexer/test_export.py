"""indexer.export on a real tiny index: COCO JSON through pycocotools, CSV and Parquet tables."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from indexer.export import MissingPackageError, export_index
from indexer.export_cli import main
from indexer.segments import decode_rle
from indexer.store import ConceptIndex


@pytest.fixture(scope="module")
def labelled_index(tmp_path_factory, tiny_index: Path) -> Path:
    """A copy of the tiny index whose active prototypes carry labels, two of them the same."""
    out = tmp_path_factory.mktemp("labelled") / "index"
    shutil.copytree(tiny_index, out)
    with ConceptIndex.open(out) as idx:
        active = [p.id for p in idx.prototypes() if not p.dead]
        idx.set_label(active[1], "stripes")
        idx.set_label(active[2], "stripes")
        idx.set_label(active[3], "box")
    return out


def test_coco_loads_and_round_trips_masks(tiny_index: Path, tmp_path: Path) -> None:
    out = tmp_path / "coco.json"
    counts = export_index(tiny_index, "coco", out)
    coco = COCO(str(out))
    with ConceptIndex.open(tiny_index) as idx:
        assert counts == {"images": idx.num_images, "categories": idx.num_prototypes, "annotations": idx.num_segments}
        assert sorted(coco.getImgIds()) == list(range(idx.num_images))
        assert sorted(coco.getCatIds()) == list(range(idx.num_prototypes))
        assert len(coco.getAnnIds()) == idx.num_segments
        for ann in coco.loadAnns(coco.getAnnIds()):
            seg = idx.segment(ann["id"])
            img = idx.image(seg.image_id)
            mask = coco.annToMask(ann)
            assert mask.shape == (img.height, img.width)
            assert (mask.astype(bool) == decode_rle(seg.rle)).all()
            assert ann["image_id"] == seg.image_id and ann["category_id"] == seg.prototype
            assert ann["area"] == seg.area == int(mask.sum()) and tuple(ann["bbox"]) == seg.bbox
            assert coco.imgs[ann["image_id"]]["file_name"] == img.file_name
        dead = [p.id for p in idx.prototypes() if p.dead]
        assert all(coco.cats[k]["dead"] and not coco.getAnnIds(catIds=[k]) for k in dead)
    assert json.loads(out.read_text())["info"]["data_root"] == str(idx.data_root)


def test_category_names_are_labels_made_unique(labelled_index: Path, tmp_path: Path) -> None:
    export_index(labelled_index, "coco", tmp_path / "c.json")
    cats = json.loads((tmp_path / "c.json").read_text())["categories"]
    names = [c["name"] for c in cats]
    assert len(set(names)) == len(names)
    with ConceptIndex.open(labelled_index) as idx:
        active = [p.id for p in idx.prototypes() if not p.dead]
    assert names[active[1]] == f"stripes #{active[1]}" and names[active[3]] == "box"
    assert names[active[0]] == f"prototype_{active[0]}" and cats[active[2]]["label"] == "stripes"


def test_csv_tables(tiny_index: Path, tmp_path: Path) -> None:
    counts = export_index(tiny_index, "csv", tmp_path / "t")
    rows = list(csv.DictReader((tmp_path / "t" / "segments.csv").open()))
    protos = list(csv.DictReader((tmp_path / "t" / "prototypes.csv").open()))
    images = list(csv.DictReader((tmp_path / "t" / "images.csv").open()))
    with ConceptIndex.open(tiny_index) as idx:
        assert len(rows) == counts["segments"] == idx.num_segments
        assert len(protos) == idx.num_prototypes and len(images) == idx.num_images
        assert sorted(int(r["id"]) for r in rows) == list(range(idx.num_segments))
        for r in rows[:: max(1, len(rows) // 10)]:
            seg = idx.segment(int(r["id"]))
            rle = {"size": [int(r["height"]), int(r["width"])], "counts": r["rle_counts"]}
            assert (decode_rle(rle) == decode_rle(seg.rle)).all()
            assert float(r["score"]) == seg.score and int(r["prototype"]) == seg.prototype
        assert json.loads((tmp_path / "t" / "stats.json").read_text()) == idx.stats().to_dict()
        assert [int(p["num_segments"]) for p in protos] == [p.num_segments for p in idx.prototypes()]


def test_parquet_tables(labelled_index: Path, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    export_index(labelled_index, "parquet", tmp_path / "p")
    seg = pd.read_parquet(tmp_path / "p" / "segments.parquet")
    protos = pd.read_parquet(tmp_path / "p" / "prototypes.parquet")
    with ConceptIndex.open(labelled_index) as idx:
        assert len(seg) == idx.num_segments and len(protos) == idx.num_prototypes
        labels = {p.id: p.label for p in idx.prototypes()}
    assert [labels[k] for k in seg["prototype"]] == [None if pd.isna(v) else v for v in seg["label"]]
    assert np.issubdtype(seg["score"].dtype, np.floating) and protos["dead"].dtype == bool


def test_parquet_without_pyarrow_or_pandas_names_the_package(
    tiny_index: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    for name in ("pyarrow", "pyarrow.parquet", "pandas"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: import raises ImportError
    with pytest.raises(MissingPackageError, match="pyarrow"):
        export_index(tiny_index, "parquet", tmp_path / "p")
    assert main(["--index", str(tiny_index), "--format", "parquet", "--out", str(tmp_path / "q")]) == 2
    assert "pyarrow" in capsys.readouterr().err


def test_bad_outputs_and_cli(tiny_index: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="is a directory"):
        export_index(tiny_index, "coco", tmp_path)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        export_index(tiny_index, "csv", tmp_path / "f.txt")
    out = tmp_path / "sub" / "c.json"
    assert main(["--index", str(tiny_index), "--format", "coco", "--out", str(out)]) == 0
    assert "annotations" in capsys.readouterr().out and out.is_file() and not out.with_suffix(".json.tmp").exists()
    assert main(["--index", str(tmp_path / "none"), "--format", "csv", "--out", str(tmp_path / "t")]) == 2
    assert "not a concept index" in capsys.readouterr().err
