"""A picture of a model's unsupervised segmentation on the synthetic val split: image | truth | prediction.

The prediction is the teacher's prototype argmax (docs/method.md §7) at the evaluation's resolution, with each
cluster shown in the colour of the class the evaluation's Hungarian matching gave it (from the JSON that
``slotcon eval --out`` wrote, so the picture shows exactly what was scored)::

    python bench/demo_quality_figure.py --checkpoint runs/cpu-demo/final.pth --data data/synthetic \
        --eval-json eval.json --out docs/demo_quality.png --images 6

Prints JSON: the output path, the images shown and each one's pixel accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.checkpoint import load_model  # noqa: E402
from core.inference import assign, prototype_scores  # noqa: E402
from core.synthetic import CLASSES  # noqa: E402
from indexer.build import resolve_images  # noqa: E402
from indexer.evaluate import EvalSet  # noqa: E402
from indexer.labels import make_protocol  # noqa: E402

#: One colour per class (things warm, stuff cool); 255 (ignore) is black.
CLASS_COLOURS = np.array(
    [
        [230, 80, 60],
        [245, 170, 40],
        [200, 60, 170],
        [250, 230, 90],
        [60, 120, 230],
        [70, 200, 200],
        [90, 190, 90],
        [150, 110, 230],
    ],
    np.uint8,
)


def colourise(labels: np.ndarray) -> Image.Image:
    """(H, W) class ids (255 = ignore / unmatched) → RGB image."""
    out = np.zeros((*labels.shape, 3), np.uint8)
    valid = labels < len(CLASS_COLOURS)
    out[valid] = CLASS_COLOURS[labels[valid]]
    return Image.fromarray(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="synthetic scenes root")
    p.add_argument("--eval-json", type=Path, required=True, help="slotcon eval --out JSON of this checkpoint")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--tile", type=int, default=160, help="side of each tile in the picture")
    args = p.parse_args(argv)

    result = json.loads(args.eval_json.read_text())
    res = int(result["protocol"]["resolution"])
    cluster_to_class = np.full(256, 255, np.uint8)
    for cluster, cls in result["matched_pairs"]:
        cluster_to_class[cluster] = cls
    model = load_model(args.checkpoint).eval()
    root, split, paths = resolve_images(args.data, "val2017")
    images = EvalSet(list(enumerate(paths[: args.images])), root, make_protocol("synthetic", root, split), res)
    t = args.tile
    sheet = Image.new("RGB", (3 * t, len(images) * t + 24 + 16), "white")
    draw = ImageDraw.Draw(sheet)
    for i, title in enumerate(("image", "ground truth", "SlotCon (Hungarian)")):
        draw.text((i * t + 4, 4), title, fill="black")
    accs = []
    for row in range(len(images)):
        item = images[row]  # the evaluation's own preprocessing: resize, centre crop, normalise
        with torch.no_grad():
            pred = cluster_to_class[assign(prototype_scores(model, item["tensor"][None]), (res, res))[0].numpy()]
        lab = item["label"]
        valid = lab != 255
        accs.append(round(float((pred[valid] == lab[valid]).mean()), 3))
        rgb = Image.fromarray((item["rgb"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        y = 24 + row * t
        for col, tile in enumerate((rgb, colourise(lab), colourise(pred))):
            sheet.paste(tile.resize((t, t), Image.NEAREST), (col * t, y))
    x0 = 4
    for c in CLASSES:  # legend
        draw.rectangle([x0, sheet.height - 13, x0 + 9, sheet.height - 4], fill=tuple(CLASS_COLOURS[c.id].tolist()))
        draw.text((x0 + 12, sheet.height - 15), c.name, fill="black")
        x0 += 12 + 7 * len(c.name) + 6
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(json.dumps({"out": str(args.out), "images": [p.name for p in paths[: args.images]], "pixel_accuracy": accs}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
