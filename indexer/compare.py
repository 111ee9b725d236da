"""Compare the concepts of two indexes of the same images, and follow them over a run.

Two indexes (two checkpoints: epochs of one run, or two recipes) segment the same images; their
prototypes are compared by **co-assignment**: ``overlap[a, b]`` is the number of pixels that prototype
``a`` of index A and prototype ``b`` of index B both claim, summed over the shared images (decoded from
the indexes' RLE masks into one label map per image and index, counted with one ``bincount`` per image,
so K = 256 costs no more than K = 8). From it:

- **matched pairs**: a one-to-one matching of the active prototypes by the Hungarian algorithm
  (``scipy.optimize.linear_sum_assignment``) maximising the summed mask IoU; a pair's *agreement* is
  its IoU ``overlap / (area_a + area_b - overlap)`` over the shared pixels. Pairs below ``min_iou`` are
  not kept as matches.
- **split**: a prototype ``a`` of A with two or more *parts* in B, a part being a prototype ``b`` that
  lies mostly inside ``a`` (``overlap / area_b >= coverage``) and covers at least ``min_part`` of ``a``, or
  one that is **absorbed**: it lies mostly inside ``a`` but has no match of its own, whatever its size
  (then ``a``'s own match, when it has one, is a part too). Absorbed parts are listed in ``absorbed``.
- **merged**: the converse (two or more prototypes of A lying mostly inside one of B): a prototype of A
  whose pixels all go to a prototype of B that continues (is matched to another of A) was merged into it,
  not died, however small its share of that prototype.
- **born**: active in B with no counterpart in A (not matched, not a part of a split or merge);
  **died**: active in A with no counterpart in B. *Active* means claiming at least one shared pixel
  (the index's own ``dead`` flag is "no segment on any indexed image").

Prototype ids are compared by content, never by number, so two unrelated runs (or a permuted copy)
compare as well as two epochs of one run; ``same_id_matches`` says how many pairs keep their id (for
epochs of one run, where prototype k stays parameter k, this is the stable share).

Images are paired by file name (both indexes must hold them at the same size). ``stride`` subsamples
pixels (every ``stride``-th row and column) for very large image sets.

CLI: ``python -m indexer.compare INDEX_A INDEX_B [--json OUT]`` and
``python -m indexer.compare --timeline I1 I2 I3 ... [--json OUT]``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from indexer.segments import label_map
from indexer.store import ConceptIndex, SegmentRecord

DEFAULT_COVERAGE = 0.5
DEFAULT_MIN_PART = 0.1
DEFAULT_MIN_IOU = 0.2


@dataclass(frozen=True)
class MatchedPair:
    """Prototype ``a`` of A matched to ``b`` of B; ``iou`` their mask agreement over the shared pixels,
    ``overlap`` the pixels both claim, ``area_a``/``area_b`` each one's pixels."""

    a: int
    b: int
    iou: float
    overlap: int
    area_a: int
    area_b: int


@dataclass(frozen=True)
class Relation:
    """A split (``source`` of A → ``parts`` of B) or a merge (``parts`` of A → ``source`` of B).

    ``part_coverage[i]``: the share of the source's pixels that part i claims; ``part_purity[i]``: the
    share of part i's pixels that lie in the source; ``coverage``: the parts' total share of the source;
    ``absorbed``: the parts that are parts because they have no match of their own and lie mostly inside
    the source, though they claim less than ``min_part`` of it.
    """

    kind: str  # "split" | "merge"
    source: int
    parts: list[int]
    part_coverage: list[float]
    part_purity: list[float]
    coverage: float
    absorbed: list[int] = field(default_factory=list)


@dataclass
class Comparison:
    """The result of :func:`compare` (``to_dict`` / ``to_json`` for the API; ``overlap`` stays out)."""

    index_a: str
    index_b: str
    checkpoint_a: str
    checkpoint_b: str
    num_images: int
    num_pixels: int
    num_prototypes_a: int
    num_prototypes_b: int
    active_a: list[int]
    active_b: list[int]
    pairs: list[MatchedPair]
    splits: list[Relation]
    merges: list[Relation]
    born: list[int]
    died: list[int]
    same_id_matches: int
    params: dict[str, float]
    seconds: float
    overlap: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), np.int64))

    @property
    def mean_iou(self) -> float | None:
        """Unweighted mean IoU of the matched pairs (None without pairs)."""
        return float(np.mean([p.iou for p in self.pairs])) if self.pairs else None

    @property
    def weighted_iou(self) -> float | None:
        """Mean IoU of the matched pairs weighted by their pixels (area_a + area_b)."""
        if not self.pairs:
            return None
        w = np.array([p.area_a + p.area_b for p in self.pairs], dtype=np.float64)
        return float(np.average([p.iou for p in self.pairs], weights=w))

    def mapping(self) -> dict[int, int]:
        """{prototype of A: matched prototype of B}."""
        return {p.a: p.b for p in self.pairs}

    def summary(self) -> dict[str, Any]:
        """Counts only (the timeline's per-interval row)."""
        return {
            "active_a": len(self.active_a), "active_b": len(self.active_b), "matched": len(self.pairs),
            "mean_iou": self.mean_iou, "weighted_iou": self.weighted_iou, "splits": len(self.splits),
            "merges": len(self.merges), "born": len(self.born), "died": len(self.died),
            "same_id_matches": self.same_id_matches,
        }  # fmt: skip

    def to_dict(self, with_overlap: bool = False) -> dict[str, Any]:
        """JSON-ready dict; ``with_overlap`` adds the (K_A, K_B) overlap matrix as nested lists."""
        d = {k: v for k, v in asdict(self).items() if k != "overlap"}
        d["summary"] = self.summary()
        if with_overlap:
            d["overlap"] = self.overlap.tolist()
        return d

    def to_json(self, **kw: Any) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(**kw), indent=2)


def _as_index(index: ConceptIndex | str | Path) -> tuple[ConceptIndex, bool]:
    if isinstance(index, ConceptIndex):
        return index, False
    return ConceptIndex.open(index), True


def _segments_by_image(index: ConceptIndex) -> dict[int, list[SegmentRecord]]:
    """All segments grouped by image: one range read per prototype (not one query per image)."""
    by_image: dict[int, list[SegmentRecord]] = {}
    for k in range(index.num_prototypes):
        lo, hi = index.prototype_range(k)
        if hi > lo:
            for s in index.top_segments(k, 0, hi - lo):
                by_image.setdefault(s.image_id, []).append(s)
    return by_image


def overlap_matrix(index_a: ConceptIndex, index_b: ConceptIndex, stride: int = 1) -> tuple[np.ndarray, int, int]:
    """(K_A, K_B) int64 co-assignment counts over the images both index (paired by file name), the
    number of shared images and of pixels counted. ValueError when no image is shared or a shared image
    has different sizes in the two indexes."""
    ka, kb = index_a.num_prototypes, index_b.num_prototypes
    imgs_a = {r.file_name: r for r in index_a.images(0, max(1, index_a.num_images))}
    imgs_b = {r.file_name: r for r in index_b.images(0, max(1, index_b.num_images))}
    shared = sorted(set(imgs_a) & set(imgs_b))
    if not shared:
        raise ValueError(f"{index_a.index_dir} and {index_b.index_dir} share no image (compared by file name)")
    seg_a, seg_b = _segments_by_image(index_a), _segments_by_image(index_b)
    counts = np.zeros(ka * kb, dtype=np.int64)
    pixels = 0
    for name in shared:
        ra, rb = imgs_a[name], imgs_b[name]
        if (ra.height, ra.width) != (rb.height, rb.width):
            raise ValueError(f"{name} is {ra.width}×{ra.height} in A but {rb.width}×{rb.height} in B")
        la = label_map(seg_a.get(ra.id, []), ra.height, ra.width)[::stride, ::stride]
        lb = label_map(seg_b.get(rb.id, []), rb.height, rb.width)[::stride, ::stride]
        valid = (la >= 0) & (lb >= 0)
        codes = la[valid].astype(np.int64) * kb + lb[valid]
        pixels += int(codes.size)
        counts += np.bincount(codes, minlength=ka * kb)
    return counts.reshape(ka, kb), len(shared), pixels


def analyse(
    overlap: np.ndarray,
    coverage: float = DEFAULT_COVERAGE,
    min_part: float = DEFAULT_MIN_PART,
    min_iou: float = DEFAULT_MIN_IOU,
) -> tuple[list[MatchedPair], list[Relation], list[Relation], list[int], list[int], list[int], list[int]]:
    """Pairs, splits, merges, born, died, active_a, active_b from a (K_A, K_B) overlap matrix (see the
    module doc for the definitions)."""
    overlap = np.asarray(overlap, dtype=np.int64)
    area_a, area_b = overlap.sum(1), overlap.sum(0)
    act_a, act_b = np.flatnonzero(area_a > 0), np.flatnonzero(area_b > 0)
    union = area_a[:, None] + area_b[None, :] - overlap
    iou = np.divide(overlap, union, out=np.zeros(overlap.shape, np.float64), where=union > 0)

    pairs: list[MatchedPair] = []
    if act_a.size and act_b.size:
        rows, cols = linear_sum_assignment(iou[np.ix_(act_a, act_b)], maximize=True)
        for r, c in zip(rows, cols, strict=True):
            a, b = int(act_a[r]), int(act_b[c])
            if iou[a, b] >= min_iou and overlap[a, b] > 0:
                pairs.append(MatchedPair(a, b, float(iou[a, b]), int(overlap[a, b]), int(area_a[a]), int(area_b[b])))
    pairs.sort(key=lambda p: p.a)

    # share of a's pixels claimed by b (cov_a) and of b's pixels lying in a (cov_b)
    cov_a = np.divide(overlap, area_a[:, None], out=np.zeros(overlap.shape), where=area_a[:, None] > 0)
    cov_b = np.divide(overlap, area_b[None, :], out=np.zeros(overlap.shape), where=area_b[None, :] > 0)

    def relations(kind: str, cover: np.ndarray, purity: np.ndarray, match: dict[int, int]) -> list[Relation]:
        # cover[s, p]: share of source s claimed by part p; purity[s, p]: share of part p inside s;
        # match: source → its matched prototype on the parts' side
        matched_parts = set(match.values())
        active = cover.sum(0) > 0
        unmatched = np.array([active[p] and p not in matched_parts for p in range(cover.shape[1])], dtype=bool)
        out = []
        for s in range(cover.shape[0]):
            inside = (purity[s] >= coverage) & (cover[s] > 0)
            absorbed = np.flatnonzero(inside & unmatched & (cover[s] < min_part))
            parts = set(np.flatnonzero(inside & ((cover[s] >= min_part) | unmatched)).tolist())
            if absorbed.size and s in match:
                parts.add(match[s])  # the prototype that continues s took the absorbed one in
            if len(parts) >= 2:
                order = sorted(parts, key=lambda p: (-cover[s, p], p))
                out.append(
                    Relation(
                        kind,
                        s,
                        [int(p) for p in order],
                        [float(cover[s, p]) for p in order],
                        [float(purity[s, p]) for p in order],
                        float(cover[s, order].sum()),
                        [int(p) for p in absorbed],
                    )
                )
        return out

    splits = relations("split", cov_a, cov_b, {p.a: p.b for p in pairs})
    merges = relations("merge", cov_b.T, cov_a.T, {p.b: p.a for p in pairs})
    linked_a = {p.a for p in pairs} | {r.source for r in splits} | {q for r in merges for q in r.parts}
    linked_b = {p.b for p in pairs} | {r.source for r in merges} | {q for r in splits for q in r.parts}
    born = [int(b) for b in act_b if int(b) not in linked_b]
    died = [int(a) for a in act_a if int(a) not in linked_a]
    return pairs, splits, merges, born, died, [int(a) for a in act_a], [int(b) for b in act_b]


def compare(
    index_a: ConceptIndex | str | Path,
    index_b: ConceptIndex | str | Path,
    *,
    coverage: float = DEFAULT_COVERAGE,
    min_part: float = DEFAULT_MIN_PART,
    min_iou: float = DEFAULT_MIN_IOU,
    stride: int = 1,
) -> Comparison:
    """Compare two indexes of the same images (open :class:`ConceptIndex` objects or directories).

    ``coverage``: a part of a split/merge lies at least this share inside its source; ``min_part``: and
    claims at least this share of it; ``min_iou``: the least IoU a Hungarian pair needs to count as a
    match; ``stride``: pixel subsampling. Raises ValueError when the indexes share no image.
    """
    t0 = time.perf_counter()
    ia, close_a = _as_index(index_a)
    ib, close_b = _as_index(index_b)
    try:
        overlap, n_images, n_pixels = overlap_matrix(ia, ib, stride)
        pairs, splits, merges, born, died, act_a, act_b = analyse(overlap, coverage, min_part, min_iou)
        return Comparison(
            index_a=str(ia.index_dir), index_b=str(ib.index_dir), checkpoint_a=ia.checkpoint_sha256,
            checkpoint_b=ib.checkpoint_sha256, num_images=n_images, num_pixels=n_pixels,
            num_prototypes_a=ia.num_prototypes, num_prototypes_b=ib.num_prototypes, active_a=act_a,
            active_b=act_b, pairs=pairs, splits=splits, merges=merges, born=born, died=died,
            same_id_matches=sum(p.a == p.b for p in pairs),
            params={"coverage": coverage, "min_part": min_part, "min_iou": min_iou, "stride": stride},
            seconds=round(time.perf_counter() - t0, 4), overlap=overlap,
        )  # fmt: skip
    finally:
        if close_a:
            ia.close()
        if close_b:
            ib.close()


def reanalyse(c: Comparison, **params: float) -> Comparison:
    """``c`` with its pairs, splits, merges, born and died recomputed from its overlap matrix under other
    ``coverage`` / ``min_part`` / ``min_iou`` values (the pixels are not counted again)."""
    merged = {**c.params, **params}
    kw = {k: float(merged[k]) for k in ("coverage", "min_part", "min_iou")}
    pairs, splits, merges, born, died, act_a, act_b = analyse(c.overlap, **kw)
    return dataclasses.replace(
        c, pairs=pairs, splits=splits, merges=merges, born=born, died=died, active_a=act_a, active_b=act_b,
        same_id_matches=sum(p.a == p.b for p in pairs), params={**c.params, **kw},
    )  # fmt: skip


@dataclass
class Timeline:
    """A run's concepts over its checkpoints: ``points`` (one per index: active / dead prototypes) and
    ``intervals`` (one per consecutive pair: :meth:`Comparison.summary` plus the lists)."""

    points: list[dict[str, Any]]
    intervals: list[dict[str, Any]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=2)


def _point(index: ConceptIndex, label: str) -> dict[str, Any]:
    protos = index.prototypes()
    ckpt = index.manifest.checkpoint  # a typed Manifest (indexer.types)
    return {
        "index": str(index.index_dir), "label": label, "checkpoint": ckpt.path,
        "checkpoint_sha256": ckpt.sha256, "num_prototypes": index.num_prototypes,
        "active": sum(not p.dead for p in protos), "dead": sum(p.dead for p in protos),
    }  # fmt: skip


def timeline(index_dirs: Sequence[str | Path], **compare_kw: Any) -> Timeline:
    """Compare each index with the next (e.g. the indexes of a run's ``ckpt_epoch_N.pth`` in order);
    ``compare_kw`` go to :func:`compare`. Needs two or more indexes (ValueError)."""
    if len(index_dirs) < 2:
        raise ValueError("a timeline needs two or more indexes")
    t0 = time.perf_counter()
    opened = [ConceptIndex.open(d) for d in index_dirs]
    try:
        labels = [Path(d).name for d in index_dirs]
        points = [_point(ix, lab) for ix, lab in zip(opened, labels, strict=True)]
        intervals = []
        for i in range(len(opened) - 1):
            c = compare(opened[i], opened[i + 1], **compare_kw)
            intervals.append({
                "from": labels[i], "to": labels[i + 1], **c.summary(),
                "pairs": [asdict(p) for p in c.pairs], "split_list": [asdict(r) for r in c.splits],
                "merge_list": [asdict(r) for r in c.merges], "born_list": c.born, "died_list": c.died,
            })  # fmt: skip
        return Timeline(points, intervals, round(time.perf_counter() - t0, 4))
    finally:
        for ix in opened:
            ix.close()
