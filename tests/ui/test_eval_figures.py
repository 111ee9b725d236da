"""The evaluation's figures read without hovering: the confusion matrix writes its shares in its cells, and
the examples' class legend comes from the colours of the maps themselves."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ui.views.eval_view import class_legend, confusion_chart


def _palette_png(labels: np.ndarray, colours: dict[int, tuple[int, int, int]]) -> bytes:
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    pal = [0] * 768
    for c, rgb in colours.items():
        pal[3 * c : 3 * c + 3] = rgb
    img.putpalette(pal)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def test_the_legend_names_the_classes_the_maps_draw_in_their_colours() -> None:
    colours = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255)}
    pred = _palette_png(np.array([[0, 0], [2, 255]]), colours)
    gt = _palette_png(np.array([[0, 2], [2, 2]]), colours)
    assert class_legend([pred, gt], ["sky", "grass", "road"]) == [("#ff0000", "sky"), ("#0000ff", "road")]
    assert class_legend([b"not a png"], ["sky"]) == []


def test_the_confusion_matrix_writes_its_shares() -> None:
    result = {"matched_confusion": [[8, 2], [0, 10]], "class_names": ["sky", "grass"]}
    spec = confusion_chart(result).to_dict()
    marks = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]]
    assert marks == ["rect", "text"]
    text = spec["layer"][1]["encoding"]["text"]
    assert text["field"] == "share" and text["format"] == ".0%"
