"""The slots of an uploaded image (SPEC §7): teacher assignment, one slot per active prototype with its
pooled vector, mask, score and nearest dataset segments. Mirrors the indexer (``indexer.segments``),
so an uploaded copy of a dataset image gets the same slots as the index holds.
"""

from __future__ import annotations

import base64
import time

import numpy as np
import torch
from PIL import Image

from core.augment import eval_transform
from core.inference import teacher_outputs
from indexer.segments import box_assignment, crop_box, segment_image
from server.runtime import LoadedIndex, LoadedModel, Runtime
from server.schemas import Rle, Slot, SlotsResult
from server.services import render
from server.services.records import neighbors_out
from server.services.uploads import bounded

DEFAULT_RESIZE, DEFAULT_CROP = 256, 224


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def analysis_size(runtime: Runtime) -> tuple[int, int]:
    """(resize, crop) of the active index (what its segments were made with), else 256/224."""
    loaded = runtime.index
    if loaded is not None:
        m = loaded.index.manifest
        return int(m.get("resize", DEFAULT_RESIZE)), int(m.get("crop", DEFAULT_CROP))
    return DEFAULT_RESIZE, DEFAULT_CROP


def analyze(
    runtime: Runtime, model: LoadedModel, loaded: LoadedIndex | None, img: Image.Image, neighbors: int = 5
) -> SlotsResult:
    """Run the teacher on ``img`` and describe its slots (see :class:`server.schemas.SlotsResult`)."""
    started = time.perf_counter()
    resize, crop = analysis_size(runtime)
    img = bounded(img, resize)
    x = eval_transform(resize, crop)(img).unsqueeze(0).to(runtime.device)  # (1, 3, crop, crop)
    with runtime.model_lock:
        z, scores = teacher_outputs(model.model, x)  # (1, D, h, w), (1, K, h, w)
    z, scores = z[0].cpu(), scores[0].cpu()
    protos = torch.nn.functional.normalize(model.model.grouping_k.slot_embed.weight.detach().float().cpu(), dim=1)
    box = crop_box(img.width, img.height, resize, crop)
    seg = segment_image(z, scores, protos, (img.width, img.height), box)
    x0, y0, bw, bh = box
    present = torch.from_numpy(seg.prototypes)
    local = box_assignment(scores, present, (bh, bw))  # (bh, bw) indices into present
    assignment = seg.prototypes[local]  # (bh, bw) prototype ids
    labels = np.full((img.height, img.width), -1, dtype=np.int64)
    labels[y0 : y0 + bh, x0 : x0 + bw] = assignment
    names = {}
    if loaded is not None:
        names = {r.id: r.label for r in loaded.index.prototypes() if r.label}
    slots = []
    for i, k in enumerate(seg.prototypes.tolist()):
        near = []
        if loaded is not None and neighbors > 0 and loaded.index.dim == seg.vectors.shape[1]:
            near = neighbors_out(loaded.index.search(seg.vectors[i], neighbors))
        slots.append(Slot(
            prototype=k, label=names.get(k), area_share=float(seg.areas[i]) / float(bw * bh),
            area=int(seg.areas[i]), score=float(seg.scores[i]), bbox=[int(v) for v in seg.bboxes[i]],
            bbox_size=[img.width, img.height], rle=Rle(size=[img.height, img.width], counts=seg.rles[i]),
            color=list(render.color_of(k)), neighbors=near,
        ))  # fmt: skip
    slots.sort(key=lambda s: -s.area_share)
    return SlotsResult(
        width=img.width, height=img.height, box=[x0, y0, bw, bh],
        assignment_png=_b64(render.to_png(render.labels_image(assignment))),
        overlay_png=_b64(render.to_png(render.overlay_labels(img, labels))),
        slots=slots, elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
    )  # fmt: skip
