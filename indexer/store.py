"""Read (and annotate) a concept index: the query API the server calls (INTERFACES.md).

Segment ids are laid out by prototype and ranked by score inside each prototype (see
:mod:`indexer.schema`), so ``top_segments(k, offset, limit)`` is an exact primary-key range read and a
nearest-neighbour search restricted to a prototype is a FAISS id range. One SQLite connection
guarded by a lock serves every thread; FAISS searches are thread-safe.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from core.recipes import NEAR_DUPLICATE_THRESHOLD
from indexer import schema
from indexer.eval_record import read_eval_result
from indexer.shards import centre_vectors
from indexer.stats import compute_stats, load_stats, near_duplicates, store_stats
from indexer.types import SPACES, DuplicatePair, EvalResult, Manifest, Stats, StoredEval
from indexer.vectors import search


class IndexMismatchError(ValueError):
    """An index built from another checkpoint than the one expected; the message names both hashes."""


class IndexNotFoundError(FileNotFoundError):
    """A directory that is not a (complete) concept index."""


class IndexVersionError(ValueError):
    """An index in another format version than this code reads; the message says to rebuild it."""


class SpaceUnavailableError(ValueError):
    """A neighbour search in an embedding space the index does not store (e.g. ``encoder`` in an index
    built with ``--no-encoder-vectors``); the message says which spaces it has."""


@dataclass(frozen=True)
class ImageRecord:
    """An indexed image: ``file_name`` relative to the data root, ``path`` resolved under it.

    ``crop_box`` [x, y, w, h]: the centre-crop region (original pixels) that the segments partition.
    """

    id: int
    file_name: str
    path: Path
    width: int
    height: int
    crop_box: tuple[int, int, int, int] = (0, 0, 0, 0)
    num_segments: int = 0


@dataclass(frozen=True)
class SegmentRecord:
    """One segment: its image, prototype, score (cosine of its pooled vector to the prototype), mask
    area in pixels, bbox [x, y, w, h], COCO RLE ``{"size": [h, w], "counts": str}`` at image
    resolution, ``rank`` within its prototype (0 = best) and ``feature_area`` (feature pixels).
    """

    id: int
    image_id: int
    prototype: int
    score: float
    area: int
    bbox: tuple[int, int, int, int]
    rle: dict[str, Any] = field(repr=False)
    rank: int = 0
    feature_area: int = 0


@dataclass(frozen=True)
class PrototypeRecord:
    """A prototype's activity: images it is active on, segments, share of all pixels, ``dead`` flag,
    user ``label``, ``majority_class_name`` / ``majority_class_id`` and ``purity`` when the data had
    labels, and its best (highest-scoring) segment id (None when dead)."""

    id: int
    num_images: int
    num_segments: int
    pixel_share: float
    dead: bool
    label: str | None
    purity: float | None
    majority_class_name: str | None
    best_segment_id: int | None
    majority_class_id: int | None = None
    mean_score: float | None = None


_SEG_COLS = (
    "s.id, s.image_id, s.prototype, s.score, s.area, s.bbox_x, s.bbox_y, s.bbox_w, s.bbox_h, "
    "s.rle, s.rank, s.feature_area, i.height, i.width"
)


def _segment(row: sqlite3.Row) -> SegmentRecord:
    return SegmentRecord(
        id=row[0], image_id=row[1], prototype=row[2], score=float(row[3]), area=row[4],
        bbox=(row[5], row[6], row[7], row[8]), rle={"size": [row[12], row[13]], "counts": row[9]},
        rank=row[10], feature_area=row[11],
    )  # fmt: skip


def _prototype(row: sqlite3.Row) -> PrototypeRecord:
    return PrototypeRecord(
        id=row["id"], num_images=row["num_images"], num_segments=row["num_segments"],
        pixel_share=float(row["pixel_share"]), dead=bool(row["dead"]), label=row["label"],
        purity=row["purity"], majority_class_name=row["majority_class_name"],
        best_segment_id=row["best_segment_id"], majority_class_id=row["majority_class"],
        mean_score=row["mean_score"],
    )  # fmt: skip


class ConceptIndex:
    """An open concept index directory (``manifest.json``, ``index.db``, ``segments.faiss``,
    ``prototypes.npy``). Unknown ids raise ``KeyError``."""

    def __init__(self, index_dir: Path, manifest: Manifest, search_threads: int | None = 1) -> None:
        if search_threads is not None:
            # process-wide: single queries are fastest on one thread (no OpenMP hand-off under load)
            faiss.omp_set_num_threads(search_threads)
        self.index_dir = index_dir
        self.manifest = manifest
        self._conn = schema.connect(index_dir / schema.DB_NAME)
        self._lock = threading.RLock()
        self._faiss = faiss.read_index(str(index_dir / schema.FAISS_NAME))
        self._encoder_faiss: faiss.Index | None = None  # read on first use (servers that never ask pay nothing)
        self._encoder_mean: np.ndarray | None = None
        self._prototypes = np.load(index_dir / schema.PROTOTYPES_NAME).astype(np.float32)
        self._ranges = self._load_ranges()

    @classmethod
    def open(
        cls, index_dir: str | os.PathLike, expected_checkpoint_sha: str | None = None, search_threads: int | None = 1
    ) -> ConceptIndex:
        """Open an index; with ``expected_checkpoint_sha``, refuse one built from another checkpoint.

        ``search_threads`` sets FAISS's OpenMP threads for the whole process (None leaves them).
        Raises :class:`IndexNotFoundError` (not an index), :class:`IndexVersionError` (an older format:
        rebuild it) or :class:`IndexMismatchError` (naming both hashes). Returns the open index.
        """
        index_dir = Path(index_dir).expanduser().resolve()
        manifest_path = index_dir / schema.MANIFEST_NAME
        missing = [
            n
            for n in (schema.MANIFEST_NAME, schema.DB_NAME, schema.FAISS_NAME, schema.PROTOTYPES_NAME)
            if not (index_dir / n).is_file()
        ]
        if missing:
            raise IndexNotFoundError(f"{index_dir} is not a concept index (missing {', '.join(missing)})")
        raw = json.loads(manifest_path.read_text())
        check_version(raw, index_dir)
        check_checkpoint(raw, expected_checkpoint_sha, index_dir)
        return cls(index_dir, Manifest.from_dict(raw), search_threads)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ConceptIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _load_ranges(self) -> np.ndarray:
        """(K, 2) [first id, count] of each prototype's segment range."""
        ranges = np.zeros((self.num_prototypes, 2), dtype=np.int64)
        for r in self._query("SELECT id, COALESCE(first_segment, 0), num_segments FROM prototypes"):
            ranges[r[0]] = (r[1], r[2])
        return ranges

    # ------------------------------------------------------------------ manifest
    @property
    def num_prototypes(self) -> int:
        """K."""
        return self.manifest.num_prototypes

    @property
    def dim(self) -> int:
        """D, the segment vector dimension."""
        return self.manifest.dim

    @property
    def data_root(self) -> Path:
        """The dataset root the image file names are relative to."""
        return Path(self.manifest.data.root)

    @property
    def split(self) -> str | None:
        """The split indexed (None for a plain folder)."""
        return self.manifest.data.split

    @property
    def checkpoint_sha256(self) -> str:
        """SHA-256 of the checkpoint the index was built from."""
        return self.manifest.checkpoint.sha256

    @property
    def class_names(self) -> list[str] | None:
        """Semantic classes of the data's label maps (purity), or None."""
        labels = self.manifest.labels
        return labels.class_names if labels else None

    @property
    def num_segments(self) -> int:
        """Total segments."""
        return int(self._faiss.ntotal)

    # ------------------------------------------------------------------ images
    @property
    def num_images(self) -> int:
        """Images indexed (skipped ones excluded)."""
        return int(self._query("SELECT COUNT(*) FROM images")[0][0])

    def _image(self, r: sqlite3.Row) -> ImageRecord:
        return ImageRecord(
            id=r["id"],
            file_name=r["file_name"],
            path=self.data_root / r["file_name"],
            width=r["width"],
            height=r["height"],
            crop_box=(r["crop_x"], r["crop_y"], r["crop_w"], r["crop_h"]),
            num_segments=r["num_segments"],
        )

    def image(self, image_id: int) -> ImageRecord:
        """The image with id ``image_id`` (KeyError if unknown)."""
        rows = self._query("SELECT * FROM images WHERE id = ?", (int(image_id),))
        if not rows:
            raise KeyError(f"no image {image_id}")
        return self._image(rows[0])

    def images(self, offset: int = 0, limit: int = 50) -> list[ImageRecord]:
        """Images in id order, paginated."""
        rows = self._query("SELECT * FROM images ORDER BY id LIMIT ? OFFSET ?", (int(limit), int(offset)))
        return [self._image(r) for r in rows]

    def skipped_images(self) -> list[tuple[str, str]]:
        """(file name, reason) of images that could not be indexed."""
        return [(r[0], r[1]) for r in self._query("SELECT file_name, reason FROM skipped")]

    # ------------------------------------------------------------------ prototypes
    def prototypes(self) -> list[PrototypeRecord]:
        """All K prototypes in id order (dead ones flagged)."""
        return [_prototype(r) for r in self._query("SELECT * FROM prototypes ORDER BY id")]

    def prototype(self, k: int) -> PrototypeRecord:
        """Prototype ``k`` (KeyError if out of range)."""
        rows = self._query("SELECT * FROM prototypes WHERE id = ?", (int(k),))
        if not rows:
            raise KeyError(f"no prototype {k}")
        return _prototype(rows[0])

    def set_label(self, k: int, label: str | None) -> PrototypeRecord:
        """Name prototype ``k`` (None clears the name); returns the updated record."""
        self.prototype(k)
        with self._lock:
            self._conn.execute("UPDATE prototypes SET label = ? WHERE id = ?", (label, int(k)))
            self._conn.commit()
        return self.prototype(k)

    def prototype_vectors(self) -> np.ndarray:
        """(K, D) L2-normalised teacher prototypes."""
        return self._prototypes.copy()

    def label_counts(self, k: int) -> dict[str, int]:
        """Labelled pixels of each class inside prototype ``k``'s masks ({class name: pixels})."""
        self.prototype(k)
        names = self.class_names or []
        rows = self._query("SELECT class, pixels FROM label_counts WHERE prototype = ? ORDER BY pixels DESC", (int(k),))
        return {names[r[0]] if r[0] < len(names) else str(r[0]): int(r[1]) for r in rows}

    # ------------------------------------------------------------------ segments
    def _segments_where(self, where: str, params: tuple) -> list[SegmentRecord]:
        sql = f"SELECT {_SEG_COLS} FROM segments s JOIN images i ON i.id = s.image_id WHERE {where}"
        return [_segment(r) for r in self._query(sql, params)]

    def segment(self, segment_id: int) -> SegmentRecord:
        """The segment with id ``segment_id`` (KeyError if unknown)."""
        rows = self._segments_where("s.id = ?", (int(segment_id),))
        if not rows:
            raise KeyError(f"no segment {segment_id}")
        return rows[0]

    def segments(self, segment_ids: list[int]) -> list[SegmentRecord]:
        """Segments by id, in the order given (unknown ids are dropped)."""
        if not segment_ids:
            return []
        marks = ",".join("?" * len(segment_ids))
        found = {s.id: s for s in self._segments_where(f"s.id IN ({marks})", tuple(map(int, segment_ids)))}
        return [found[i] for i in segment_ids if i in found]

    def image_segments(self, image_id: int) -> list[SegmentRecord]:
        """The segments of one image (they partition its crop box), by prototype (KeyError if unknown)."""
        self.image(image_id)
        return sorted(self._segments_where("s.image_id = ?", (int(image_id),)), key=lambda s: s.prototype)

    def prototype_range(self, k: int) -> tuple[int, int]:
        """[first, end) segment ids of prototype ``k`` (best first). KeyError if out of range."""
        if not 0 <= int(k) < self.num_prototypes:
            raise KeyError(f"no prototype {k}")
        first, count = self._ranges[int(k)]
        return int(first), int(first + count)

    def top_segments(self, k: int, offset: int = 0, limit: int = 20) -> list[SegmentRecord]:
        """Segments assigned to prototype ``k`` ranked by cosine to it (best first), paginated; exact."""
        lo, hi = self.prototype_range(k)
        start, stop = lo + max(0, int(offset)), min(hi, lo + max(0, int(offset)) + max(0, int(limit)))
        if start >= stop:
            return []
        return self._segments_where("s.id >= ? AND s.id < ? ORDER BY s.id", (start, stop))

    @property
    def spaces(self) -> tuple[str, ...]:
        """The embeddings this index can search: ``("projector",)``, plus ``"encoder"`` when it stores the
        segments' pooled encoder features (:class:`indexer.types.EncoderVectors`)."""
        has_encoder = self.manifest.encoder is not None and (self.index_dir / schema.ENCODER_FAISS_NAME).is_file()
        return SPACES if has_encoder else SPACES[:1]

    def space_dim(self, space: str = "projector") -> int:
        """The vector dimension of ``space`` (D for the projector, C for the encoder)."""
        return int(self._space_index(space).d)

    def _space_index(self, space: str) -> faiss.Index:
        if space == "projector":
            return self._faiss
        if space not in SPACES:
            raise SpaceUnavailableError(f"unknown embedding space {space!r}; choose one of: {', '.join(SPACES)}")
        if space not in self.spaces:
            raise SpaceUnavailableError(
                f"index {self.index_dir.name} stores no {space} vectors (built with --no-encoder-vectors or "
                f"before they existed); it has: {', '.join(self.spaces)}. Rebuild it with `slotcon index` to add them"
            )
        with self._lock:
            if self._encoder_faiss is None:
                self._encoder_faiss = faiss.read_index(str(self.index_dir / schema.ENCODER_FAISS_NAME))
            return self._encoder_faiss

    def segment_vector(self, segment_id: int, space: str = "projector") -> np.ndarray:
        """Pooled vector of a segment in ``space``: (D,) projector or (C,) encoder, as stored (the encoder's
        centred on the index's mean and re-normalised). KeyError if unknown, :class:`SpaceUnavailableError`
        for a space the index does not store."""
        index = self._space_index(space)
        if not 0 <= int(segment_id) < index.ntotal:
            raise KeyError(f"no segment {segment_id}")
        return index.reconstruct(int(segment_id))

    def search(
        self,
        vector: np.ndarray,
        limit: int = 10,
        prototype: int | None = None,
        exclude: int | None = None,
        space: str = "projector",
        stored: bool = False,
    ) -> list[tuple[SegmentRecord, float]]:
        """Segments nearest to ``vector`` by cosine (it is normalised here) in the embedding ``space``
        (``projector``: (D,), ``encoder``: (C,), a pooled feature as :func:`core.inference.segment_features`
        gives, centred here as the index's vectors are; ``stored=True``: already in the stored form, as
        :meth:`segment_vector` returns it), optionally only those of ``prototype``; returns (segment,
        similarity) pairs, most similar first."""
        index = self._space_index(space)
        v = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if v.shape[1] != index.d:
            raise ValueError(f"vector has dimension {v.shape[1]}, the index's {space} space has {index.d}")
        v = v / max(float(np.linalg.norm(v)), 1e-12)
        if space == "encoder" and not stored:  # a pooled feature from outside: into the stored (centred) form
            v = self._encoder_transform(v)
        id_range = self.prototype_range(prototype) if prototype is not None else None
        want = int(limit) + (1 if exclude is not None else 0)
        sims, ids = search(index, v, max(1, want), id_range)
        pairs = [(int(i), float(s)) for i, s in zip(ids[0], sims[0], strict=True) if i >= 0 and int(i) != exclude][
            : int(limit)
        ]
        records = {s.id: s for s in self.segments([i for i, _ in pairs])}
        return [(records[i], s) for i, s in pairs if i in records]

    def neighbors(
        self, segment_id: int, limit: int = 10, prototype: int | None = None, space: str = "projector"
    ) -> list[tuple[SegmentRecord, float]]:
        """Segments nearest to segment ``segment_id`` (itself excluded) in ``space``; see :meth:`search`.

        ``projector``: the teacher's projections, the space the prototypes score (after training, one
        prototype's segments are nearly identical there); ``encoder``: the backbone's pooled features,
        where segments of one concept still differ (:attr:`spaces` says which the index has)."""
        vector = self.segment_vector(segment_id, space)
        return self.search(vector, limit, prototype, exclude=int(segment_id), space=space, stored=True)

    def _encoder_transform(self, v: np.ndarray) -> np.ndarray:
        enc = self.manifest.encoder
        if enc is None or not enc.centred:
            return v
        if self._encoder_mean is None:
            self._encoder_mean = np.load(self.index_dir / schema.ENCODER_MEAN_NAME).astype(np.float32)
        return centre_vectors(v, self._encoder_mean)

    # ------------------------------------------------------------------ statistics, evaluations
    def stats(self, duplicate_threshold: float | None = None) -> Stats:
        """The slot statistics (:func:`indexer.stats.compute_stats`), computed and stored if missing (or
        stored in an older shape). With ``duplicate_threshold``, ``near_duplicates`` are the pairs above
        that cosine (computed from the prototype vectors; the stored statistics are unchanged)."""
        with self._lock:
            stats = load_stats(self._conn)
            if stats is None:
                stats = compute_stats(self._conn, self._prototypes)
                store_stats(self._conn, stats)
        if duplicate_threshold is not None and duplicate_threshold != stats.duplicate_threshold:
            pairs = [DuplicatePair(**d) for d in near_duplicates(self._prototypes, duplicate_threshold)]
            stats = dataclasses.replace(stats, near_duplicates=pairs, duplicate_threshold=duplicate_threshold)
        return stats

    def refresh_stats(self, duplicate_threshold: float = NEAR_DUPLICATE_THRESHOLD) -> Stats:
        """Recompute and store the slot statistics; returns them."""
        with self._lock:
            stats = compute_stats(self._conn, self._prototypes, duplicate_threshold)
            store_stats(self._conn, stats)
        return stats

    def store_eval(self, result: EvalResult, examples: list[tuple[int, str, bytes, bytes]] | None = None) -> int:
        """Store an evaluation result (and (image_id, file_name, pred PNG, gt PNG) examples); returns its id."""
        body = result.to_dict()
        body.pop("eval_id", None)
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO evaluations (created_at, protocol, baseline, checkpoint_sha256, miou, "
                "pixel_accuracy, result) VALUES (?,?,?,?,?,?,?)",
                (datetime.now(UTC).isoformat(timespec="seconds"), result.protocol.name, result.baseline,
                 result.checkpoint.sha256 if result.checkpoint else None, result.miou, result.pixel_accuracy,
                 json.dumps(body)),
            )  # fmt: skip
            eval_id = int(cur.lastrowid)
            for image_id, file_name, pred, gt in examples or []:
                self._conn.execute(
                    "INSERT INTO eval_examples VALUES (?,?,?,?,?)", (eval_id, int(image_id), file_name, pred, gt)
                )
            self._conn.commit()
        return eval_id

    def eval_results(self) -> list[StoredEval]:
        """Stored evaluation results, newest first, with their ids and times."""
        rows = self._query("SELECT id, created_at, result FROM evaluations ORDER BY id DESC")
        return [
            StoredEval(
                id=r[0],
                created_at=r[1],
                result=dataclasses.replace(read_eval_result(json.loads(r[2])), eval_id=r[0]),
            )
            for r in rows
        ]

    def eval_examples(self, eval_id: int) -> list[tuple[int, bytes, bytes]]:
        """(image_id, predicted-map PNG, ground-truth PNG) of an evaluation's example images.

        PNGs are 8-bit palette images (class ids; 255 = ignore in the ground truth, pixels of
        unmatched clusters 255 in the prediction). KeyError for an unknown evaluation.
        """
        if not self._query("SELECT 1 FROM evaluations WHERE id = ?", (int(eval_id),)):
            raise KeyError(f"no evaluation {eval_id}")
        rows = self._query(
            "SELECT image_id, pred_png, gt_png FROM eval_examples WHERE eval_id = ? ORDER BY image_id", (int(eval_id),)
        )
        return [(int(r[0]), bytes(r[1]), bytes(r[2])) for r in rows]


def check_version(manifest: dict[str, Any], where: Path | str = "index") -> None:
    """Raise :class:`IndexVersionError` unless the index is in :data:`indexer.schema.INDEX_VERSION` format;
    the message says what changed and to rebuild the index."""
    version = manifest.get("version")
    if version == schema.INDEX_VERSION:
        return
    changes = "; ".join(
        f"version {v}: {why}"
        for v, why in sorted(schema.VERSION_CHANGES.items())
        if not isinstance(version, int) or v > version
    )
    checkpoint = manifest.get("checkpoint", {}).get("path") or "CHECKPOINT"
    raise IndexVersionError(
        f"index {where} has format version {version}, this program reads version {schema.INDEX_VERSION} "
        f"({changes}); rebuild it: slotcon index --checkpoint {checkpoint} --data DATA --out {where}"
    )


def check_checkpoint(manifest: dict[str, Any], expected_sha: str | None, where: Path | str = "index") -> None:
    """Raise :class:`IndexMismatchError` naming both hashes when the index's checkpoint differs."""
    built = manifest.get("checkpoint", {}).get("sha256")
    if expected_sha is not None and built != expected_sha:
        raise IndexMismatchError(
            f"index {where} was built from checkpoint sha256 {built}, not from the given checkpoint "
            f"(sha256 {expected_sha}); rebuild the index with `slotcon index` for this checkpoint"
        )
