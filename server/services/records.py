"""Index records (``indexer.store`` dataclasses) → API models."""

from __future__ import annotations

from typing import Any

from server.runtime import LoadedIndex
from server.schemas import ImageInfo, Neighbor, Prototype, Rle, Segment
from server.services.render import color_of


def segment_out(rec: Any) -> Segment:
    """A ``SegmentRecord`` as :class:`Segment`."""
    return Segment(
        id=rec.id,
        image_id=rec.image_id,
        prototype=rec.prototype,
        score=rec.score,
        area=rec.area,
        bbox=[int(v) for v in rec.bbox],
        rle=Rle(**rec.rle),
        rank=rec.rank,
    )


def neighbors_out(pairs: list[tuple[Any, float]]) -> list[Neighbor]:
    """(SegmentRecord, similarity) pairs as :class:`Neighbor` items."""
    return [Neighbor(segment=segment_out(s), similarity=float(sim)) for s, sim in pairs]


def image_out(rec: Any) -> ImageInfo:
    """An ``ImageRecord`` as :class:`ImageInfo` (file name relative to the data root, no path)."""
    box = [int(v) for v in rec.crop_box] if rec.crop_box and rec.crop_box[2] > 0 else None
    return ImageInfo(id=rec.id, file_name=rec.file_name, width=rec.width, height=rec.height, box=box)


def prototype_out(rec: Any, best_image: dict[int, int]) -> Prototype:
    """A ``PrototypeRecord`` as :class:`Prototype`; ``best_image`` maps best segment id → image id."""
    best = rec.best_segment_id
    return Prototype(
        id=rec.id, num_images=rec.num_images, num_segments=rec.num_segments, pixel_share=rec.pixel_share,
        dead=rec.dead, label=rec.label, purity=rec.purity, majority_class_id=rec.majority_class_id,
        majority_class_name=rec.majority_class_name, best_segment_id=best,
        best_image_id=best_image.get(best) if best is not None else None, color=list(color_of(rec.id)),
    )  # fmt: skip


def best_images(loaded: LoadedIndex, records: list[Any]) -> dict[int, int]:
    """Image id of each record's best segment (one query for all)."""
    ids = [r.best_segment_id for r in records if r.best_segment_id is not None]
    return {s.id: s.image_id for s in loaded.index.segments(ids)}
