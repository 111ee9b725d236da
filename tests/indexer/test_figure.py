"""indexer.figure on a real tiny index: the prototype parser, the grid, the red masks, determinism, formats."""

from __future__ import annotations

import base64
import io
import re
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.datasets import load_rgb
from indexer.figure import EMPTY, GAP, concept_figure, parse_prototypes
from indexer.figure_cli import main
from indexer.overlay import FIGURE3_COLOR
from indexer.segments import decode_rle
from indexer.store import ConceptIndex


@pytest.mark.parametrize(("spec", "ids"), [
    ("3,17,42", [3, 17, 42]), ("3-5,9", [3, 4, 5, 9]), (" 2 , 0-1 ", [2, 0, 1]), ("7", [7]),
    ("4-4", [4]), (["3", "5"], [3, 5]), ("12,45", [12, 45]),
])  # fmt: skip
def test_parse_prototypes(spec, ids) -> None:
    assert parse_prototypes(spec) == ids


@pytest.mark.parametrize(("spec", "message"), [
    ("", "empty entry"), ("3,,4", "empty entry"), ("a", "not a prototype id"), ("-1", "not a prototype id"),
    ("1.5", "not a prototype id"), ("2-", "not a prototype id"), ("5-3", "backwards"), ("3,3", "listed twice"),
    ("1-3,2", "listed twice"),
])  # fmt: skip
def test_parse_prototypes_rejects(spec, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_prototypes(spec)


@pytest.fixture(scope="module")
def layout_facts(tiny_index: Path) -> dict:
    """Active and dead prototypes of the tiny index and its (square) crop side."""
    with ConceptIndex.open(tiny_index) as idx:
        protos = idx.prototypes()
        boxes = {idx.image(i).crop_box for i in range(idx.num_images)}
    assert len(boxes) == 1, "synthetic images share one size, so one crop box"
    (box,) = boxes
    assert box[2] == box[3]
    return {"active": [p.id for p in protos if not p.dead], "dead": [p.id for p in protos if p.dead], "side": box[2]}


def _array(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_png_is_byte_identical_and_alpha_matters(tiny_index: Path, layout_facts: dict, tmp_path: Path) -> None:
    ids = layout_facts["active"][:3]
    concept_figure(tiny_index, ids, topk=4, out=tmp_path / "a.png", labels=True)
    concept_figure(tiny_index, ids, topk=4, out=tmp_path / "b.png", labels=True)
    concept_figure(tiny_index, ids, topk=4, alpha=0.8, out=tmp_path / "c.png", labels=True)
    a = (tmp_path / "a.png").read_bytes()
    assert a == (tmp_path / "b.png").read_bytes()
    assert a != (tmp_path / "c.png").read_bytes()


@pytest.mark.parametrize("suffix", [".pdf", ".svg"])
def test_pdf_and_svg_are_byte_identical(tiny_index: Path, layout_facts: dict, tmp_path: Path, suffix) -> None:
    ids = layout_facts["active"][:2]
    for name in ("a", "b"):
        concept_figure(tiny_index, ids, topk=3, cell_px=40, labels=True, out=tmp_path / f"{name}{suffix}")
    assert (tmp_path / f"a{suffix}").read_bytes() == (tmp_path / f"b{suffix}").read_bytes()


def test_grid_and_red_masks_where_the_masks_are(tiny_index: Path, layout_facts: dict, tmp_path: Path) -> None:
    """Cells at the crop's own size (no resizing): at alpha 1 exactly the mask's pixels are Figure-3 red,
    at alpha 0 a cell is the image's crop box itself; missing segments are grey cells."""
    side, topk = layout_facts["side"], 3
    ids = [layout_facts["active"][0], layout_facts["dead"][0], layout_facts["active"][1]]
    concept_figure(tiny_index, ids, topk=topk, alpha=1.0, cell_px=side, out=tmp_path / "red.png")
    concept_figure(tiny_index, ids, topk=topk, alpha=0.0, cell_px=side, out=tmp_path / "plain.png")
    red, plain = _array(tmp_path / "red.png"), _array(tmp_path / "plain.png")
    assert red.shape == (GAP + 3 * (side + GAP), GAP + topk * (side + GAP), 3)
    with ConceptIndex.open(tiny_index) as idx:
        for r, k in enumerate(ids):
            segs = idx.top_segments(k, 0, topk)
            assert (len(segs) == 0) == (k in layout_facts["dead"])
            for c in range(topk):
                x, y = GAP + c * (side + GAP), GAP + r * (side + GAP)
                cell_red, cell_plain = red[y : y + side, x : x + side], plain[y : y + side, x : x + side]
                if c >= len(segs):
                    assert (cell_red == EMPTY).all()
                    continue
                rec = idx.image(segs[c].image_id)
                bx, by, bw, bh = rec.crop_box
                mask = decode_rle(segs[c].rle)[by : by + bh, bx : bx + bw]
                assert mask.any() and not mask.all()
                crop = np.asarray(load_rgb(rec.path).crop((bx, by, bx + bw, by + bh)))
                assert (cell_plain == crop).all()
                assert (cell_red[mask] == FIGURE3_COLOR).all()
                assert (cell_red[~mask] == crop[~mask]).all()


def test_resized_cells_and_title_column(tiny_index: Path, layout_facts: dict, tmp_path: Path) -> None:
    cell, topk = 50, 2
    layout, rows = concept_figure(
        tiny_index, layout_facts["active"][:2], topk=topk, alpha=1.0, cell_px=cell, labels=True, out=tmp_path / "t.png"
    )
    img = _array(tmp_path / "t.png")
    label_px = max(cell, 72)
    assert img.shape[:2] == (GAP + 2 * (cell + GAP), GAP + label_px + GAP + topk * (cell + GAP))
    assert [r.title[0] for r in rows] == [f"#{k}" for k in layout_facts["active"][:2]]
    title = img[GAP : GAP + cell, GAP : GAP + label_px]
    assert (title.max(-1) < 100).sum() > 10, "the title column has dark text pixels"
    x0, y0 = layout.cell_origin(0, 0)
    assert (img[y0 : y0 + cell, x0 : x0 + cell] == FIGURE3_COLOR).all(-1).sum() > 0


def test_pdf_holds_the_raster_losslessly(tiny_index: Path, layout_facts: dict, tmp_path: Path) -> None:
    ids = layout_facts["active"][:2]
    concept_figure(tiny_index, ids, topk=3, cell_px=40, out=tmp_path / "f.png")
    concept_figure(tiny_index, ids, topk=3, cell_px=40, out=tmp_path / "f.pdf")
    data = (tmp_path / "f.pdf").read_bytes()
    assert data.startswith(b"%PDF-1.4") and data.rstrip().endswith(b"%%EOF")
    xref = int(re.search(rb"startxref\n(\d+)", data).group(1))
    assert data[xref:].startswith(b"xref")
    offsets = [int(m) for m in re.findall(rb"(\d{10}) 00000 n ", data)]
    for number, off in enumerate(offsets, start=1):
        assert data[off:].startswith(f"{number} 0 obj".encode())
    png = _array(tmp_path / "f.png")
    h, w = png.shape[:2]
    assert f"/MediaBox [0 0 {w} {h}]".encode() in data
    start = data.index(b"stream\n", data.index(b"/FlateDecode")) + len(b"stream\n")
    length = int(re.search(rb"/FlateDecode /Length (\d+)", data).group(1))
    pixels = np.frombuffer(zlib.decompress(data[start : start + length]), np.uint8).reshape(h, w, 3)
    assert (pixels == png).all()


def test_svg_cells_and_text(tiny_index: Path, layout_facts: dict, tmp_path: Path) -> None:
    ids = [layout_facts["active"][0], layout_facts["dead"][0]]
    layout, _ = concept_figure(tiny_index, ids, topk=3, cell_px=40, labels=True, out=tmp_path / "f.svg")
    concept_figure(tiny_index, ids, topk=3, cell_px=40, labels=True, out=tmp_path / "f.png")
    root = ET.parse(tmp_path / "f.svg").getroot()
    ns = {"s": "http://www.w3.org/2000/svg"}
    assert (int(root.get("width")), int(root.get("height"))) == layout.size
    images = root.findall("s:image", ns)
    empties = [r for r in root.findall("s:rect", ns) if r.get("fill") == "#e8e8e8"]
    assert len(images) == 3 and len(empties) == 3
    assert [t.text for t in root.findall("s:text", ns)][0] == f"#{ids[0]}"
    href = images[0].get("{http://www.w3.org/1999/xlink}href")
    cell = np.asarray(Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1]))).convert("RGB"))
    x, y = layout.cell_origin(0, 0)
    assert (cell == _array(tmp_path / "f.png")[y : y + 40, x : x + 40]).all()


def test_unknown_prototypes_and_bad_suffix_write_nothing(tiny_index: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not in this index"):
        concept_figure(tiny_index, [0, 99], out=tmp_path / "x.png")
    with pytest.raises(ValueError, match="must end in"):
        concept_figure(tiny_index, [0], out=tmp_path / "x.jpg")
    assert not list(tmp_path.iterdir())


def test_cli(tiny_index: Path, layout_facts: dict, tmp_path: Path, capsys) -> None:
    a, b = layout_facts["active"][:2]
    out = tmp_path / "cli.png"
    assert (
        main(
            [
                "--index",
                str(tiny_index),
                "--prototypes",
                f"{a},{b}",
                "--topk",
                "2",
                "--cell-px",
                "30",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "2 rows x 2 cells" in capsys.readouterr().out
    assert Image.open(out).size == (GAP + 2 * 34, GAP + 2 * 34)
    assert main(["--index", str(tiny_index), "--prototypes", "0,99", "--out", str(tmp_path / "y.png")]) == 2
    assert "not in this index" in capsys.readouterr().err
    assert main(["--index", str(tmp_path / "nope"), "--prototypes", "0", "--out", str(tmp_path / "z.png")]) == 2
    with pytest.raises(SystemExit):
        main(["--index", str(tiny_index), "--prototypes", "3,3", "--out", str(out)])
    assert "listed twice" in capsys.readouterr().err


def test_bytes_identical_across_processes(tiny_index: Path, layout_facts: dict, tmp_path: Path) -> None:
    """Two fresh interpreters (different hash seeds) write the same PNG, PDF and SVG bytes."""
    import os
    import subprocess
    import sys

    ids = ",".join(map(str, layout_facts["active"][:2]))
    root = Path(__file__).resolve().parents[2]
    outs = {}
    for seed in ("1", "2"):
        outs[seed] = [tmp_path / f"p{seed}{s}" for s in (".png", ".pdf", ".svg")]
        script = (
            "import sys; from indexer.figure_cli import main; "
            "sys.exit(max(main(['--index', sys.argv[1], '--prototypes', sys.argv[2], '--topk', '2', "
            "'--cell-px', '32', '--labels', '--out', o]) for o in sys.argv[3:]))"
        )
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}
        proc = subprocess.run(
            [sys.executable, "-c", script, str(tiny_index), ids, *map(str, outs[seed])],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
    for a, b in zip(outs["1"], outs["2"], strict=True):
        assert a.read_bytes() == b.read_bytes(), a.suffix
