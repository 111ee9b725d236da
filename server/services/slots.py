"""The slots of an uploaded image (docs/method.md §7): teacher assignment, one slot per active prototype with its
pooled vector, mask, score and nearest dataset segments. Segmented by the indexer's own function
(``indexer.segments.segment_images``): by default the whole image (shorter side resized, no crop, every
pixel assigned); with ``crop=True`` the index's centre crop, so an uploaded copy of a dataset image gets
exactly the segments the index holds.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from core.recipes import INDEX_CROP, INDEX_RESIZE
from indexer.segments import segment_images
from indexer.store import SpaceUnavailableError
from server.runtime import LoadedIndex, LoadedModel, Runtime
from server.schemas import Rle, Slot, SlotsResult
from server.services import render
from server.services.records import neighbors_out
from server.services.uploads import bounded

DEFAULT_RESIZE, DEFAULT_CROP = INDEX_RESIZE, INDEX_CROP


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _go_on() -> None:
    """The default check: the work always goes on."""


def analysis_size(loaded: LoadedIndex | None) -> tuple[int, int]:
    """(resize, crop) of ``loaded`` (what its segments were made with), else the recipes' defaults."""
    if loaded is not None:
        return loaded.index.manifest.resize, loaded.index.manifest.crop
    return DEFAULT_RESIZE, DEFAULT_CROP


def analyze(
    runtime: Runtime,
    model: LoadedModel,
    loaded: LoadedIndex | None,
    img: Image.Image,
    neighbors: int = 5,
    crop: bool = False,
    space: str = "projector",
    check: Callable[[], None] | None = None,
) -> SlotsResult:
    """Run the teacher on ``img`` and describe its slots (see :class:`server.schemas.SlotsResult`).

    ``crop=False``: the whole image, every pixel assigned; ``crop=True``: the index's centre crop (the
    release's protocol; the overlay outlines the crop). ``space``: the embedding the nearest dataset segments
    are searched in (``encoder``: the slots' pooled encoder features, as the index stores its segments');
    raises :class:`indexer.store.SpaceUnavailableError` when the active index does not store it.
    ``check`` is called between the steps (before the forward pass, after it, before each slot's search)
    and may raise to stop the work (the client left, the server stops).
    """
    check = check or _go_on
    started = time.perf_counter()
    search_near = loaded is not None and neighbors > 0
    if search_near and space not in loaded.index.spaces:
        raise SpaceUnavailableError(
            f"the index stores no {space} vectors (its spaces: {', '.join(loaded.index.spaces)})"
        )
    encoder = search_near and space == "encoder"
    resize, crop_size = analysis_size(loaded)
    img = bounded(img, resize)
    check()
    with runtime.model_lock:
        check()  # the lock may have been waited for
        seg = segment_images(
            model.model, [img], resize, crop_size if crop else None, device=runtime.device, encoder_vectors=encoder
        )[0]
    check()
    vectors = seg.encoder_vectors if encoder else seg.vectors
    x0, y0, bw, bh = seg.view.box
    assignment = seg.box_labels  # (bh, bw) prototype ids
    labels = np.full((img.height, img.width), -1, dtype=np.int64)
    labels[y0 : y0 + bh, x0 : x0 + bw] = assignment
    names = {}
    if loaded is not None:
        names = {r.id: r.label for r in loaded.index.prototypes() if r.label}
    slots = []
    for i, k in enumerate(seg.prototypes.tolist()):
        check()
        near = []
        if search_near and vectors is not None and loaded.index.space_dim(space) == vectors.shape[1]:
            near = neighbors_out(loaded.index.search(vectors[i], neighbors, space=space))
        slots.append(Slot(
            prototype=k, label=names.get(k), area_share=float(seg.areas[i]) / float(bw * bh),
            area=int(seg.areas[i]), score=float(seg.scores[i]), bbox=[int(v) for v in seg.bboxes[i]],
            bbox_size=[img.width, img.height], rle=Rle(size=[img.height, img.width], counts=seg.rles[i]),
            color=list(render.color_of(k)), neighbors=near,
        ))  # fmt: skip
    slots.sort(key=lambda s: -s.area_share)
    return SlotsResult(
        width=img.width, height=img.height, box=[x0, y0, bw, bh], cropped=crop,
        assignment_png=_b64(render.to_png(render.labels_image(assignment))),
        overlay_png=_b64(render.to_png(render.outline_box(render.overlay_labels(img, labels), seg.view.box))),
        slots=slots, space=space, elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
    )  # fmt: skip
