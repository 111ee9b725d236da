"""Querying an image index: :class:`ImageIndex` (top images of a prototype, nearest vectors and images)."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np

from indexer.image_schema import (
    DB_NAME,
    EXACT_SUBSET_MAX,
    GLOBAL_FAISS,
    GLOBAL_RAW,
    MANIFEST_NAME,
    PROTOTYPES_NAME,
    RERANK_FACTOR,
    SUBSET_CACHE_ENTRIES,
    SUBSET_CACHE_IDS,
    VECTORS_FAISS,
    VECTORS_RAW,
    GlobalVectorsUnavailableError,
    ImageEntry,
    ImageIndexError,
    ImageIndexManifest,
    Neighbor,
    VectorRecord,
)
from indexer.image_vectors import raw_vectors
from indexer.store import IndexMismatchError

logger = logging.getLogger(__name__)


def _bitmap(ids: np.ndarray, n: int) -> np.ndarray:
    """A FAISS ``IDSelectorBitmap`` bitmap of ``ids`` among n (bit i of byte i >> 3, low bit first)."""
    bits = np.zeros(n, dtype=bool)
    bits[ids] = True
    return np.packbits(bits, bitorder="little")


class ImageIndex:
    """An open image-index directory (see the module doc). Unknown ids raise ``KeyError``; thread-safe."""

    def __init__(self, index_dir: Path, manifest: ImageIndexManifest) -> None:
        self.index_dir, self.manifest = index_dir, manifest
        self._conn = sqlite3.connect(f"file:{index_dir / DB_NAME}?mode=ro", uri=True, check_same_thread=False)
        self._lock = threading.RLock()
        self._faiss = faiss.read_index(str(index_dir / VECTORS_FAISS))
        self._raw = raw_vectors(index_dir / VECTORS_RAW, manifest.dim)
        self._global_faiss = self._global_raw = None
        if manifest.global_vectors:
            self._global_faiss = faiss.read_index(str(index_dir / GLOBAL_FAISS))
            self._global_raw = raw_vectors(index_dir / GLOBAL_RAW, manifest.dim)
        self._prototypes = np.load(index_dir / PROTOTYPES_NAME).astype(np.float32)
        # prototype → (its sorted vector ids, their FAISS selector bitmap or None), least recently used first
        self._subsets: OrderedDict[int, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()
        if self._faiss.ntotal != len(self._raw) or len(self._raw) != manifest.counts["vectors"]:
            raise ImageIndexError(
                f"{index_dir}: {self._faiss.ntotal} FAISS vectors, {len(self._raw)} raw vectors, "
                f"{manifest.counts['vectors']} in the manifest; rebuild it"
            )

    @classmethod
    def open(cls, index_dir: str | os.PathLike, expected_checkpoint_sha: str | None = None) -> ImageIndex:
        """Open an image index; with ``expected_checkpoint_sha``, refuse one built from another checkpoint
        (:class:`indexer.store.IndexMismatchError`). Raises :class:`ImageIndexError` for a directory that is not
        an image index of this version, or whose parts disagree."""
        index_dir = Path(index_dir).expanduser().resolve()
        names = (MANIFEST_NAME, DB_NAME, VECTORS_RAW, VECTORS_FAISS, PROTOTYPES_NAME)
        missing = [n for n in names if not (index_dir / n).is_file()]
        if missing:
            raise ImageIndexError(f"{index_dir} is not an image index (missing {', '.join(missing)})")
        manifest = ImageIndexManifest.from_dict(json.loads((index_dir / MANIFEST_NAME).read_text()))
        sha = manifest.checkpoint.get("sha256")
        if expected_checkpoint_sha is not None and sha != expected_checkpoint_sha:
            raise IndexMismatchError(
                f"image index {index_dir} was built from checkpoint {sha}, not the expected {expected_checkpoint_sha}"
            )
        return cls(index_dir, manifest)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ImageIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # -------------------------------------------------------------------------------- records
    @property
    def num_images(self) -> int:
        """Images indexed (skipped ones excluded)."""
        return int(self.manifest.counts["images"])

    @property
    def num_vectors(self) -> int:
        """(image, prototype) vectors."""
        return int(self.manifest.counts["vectors"])

    @property
    def num_prototypes(self) -> int:
        """K."""
        return int(self.manifest.num_prototypes)

    @property
    def dim(self) -> int:
        """D."""
        return int(self.manifest.dim)

    @property
    def has_global_vectors(self) -> bool:
        """Whether image-to-image search (global vectors) is available."""
        return bool(self.manifest.global_vectors)

    def _image(self, row: tuple) -> ImageEntry:
        root = Path(self.manifest.data["root"] or ".")
        return ImageEntry(row[0], row[1], root / row[1], row[2], row[3], row[4])

    def image(self, image_id: int) -> ImageEntry:
        """The image ``image_id`` (KeyError if not indexed)."""
        rows = self._query(
            "SELECT id, file_name, width, height, num_vectors FROM images WHERE id = ?", (int(image_id),)
        )
        if not rows:
            raise KeyError(f"no image {image_id}")
        return self._image(rows[0])

    _VEC_SQL = (
        "SELECT v.id, v.image_id, v.prototype, v.score, v.area_share, v.feature_area, i.file_name "
        "FROM vectors v JOIN images i ON i.id = v.image_id"
    )

    def vector(self, vector_id: int) -> VectorRecord:
        """The (image, prototype) vector record ``vector_id`` (KeyError if unknown)."""
        rows = self._query(f"{self._VEC_SQL} WHERE v.id = ?", (int(vector_id),))
        if not rows:
            raise KeyError(f"no vector {vector_id}")
        return VectorRecord(*rows[0])

    def vectors(self, ids: Sequence[int]) -> dict[int, VectorRecord]:
        """Records of ``ids`` (unknown ones left out), by id."""
        found: dict[int, VectorRecord] = {}
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            for r in self._query(f"{self._VEC_SQL} WHERE v.id IN ({marks})", tuple(part)):
                found[r[0]] = VectorRecord(*r)
        return found

    def image_vectors(self, image_id: int) -> list[VectorRecord]:
        """The vectors of image ``image_id``, by prototype (KeyError if the image is not indexed)."""
        self.image(image_id)
        return [
            VectorRecord(*r)
            for r in self._query(f"{self._VEC_SQL} WHERE v.image_id = ? ORDER BY v.prototype", (int(image_id),))
        ]

    def vector_array(self, vector_id: int) -> np.ndarray:
        """(D,) float32 the stored (unit) vector ``vector_id``."""
        if not 0 <= int(vector_id) < len(self._raw):
            raise KeyError(f"no vector {vector_id}")
        return np.array(self._raw[int(vector_id)], dtype=np.float32)

    def global_vector(self, image_id: int) -> np.ndarray:
        """(D,) float32 the global vector of image ``image_id``."""
        self._require_global()
        rows = self._query("SELECT global_row FROM images WHERE id = ?", (int(image_id),))
        if not rows:
            raise KeyError(f"no image {image_id}")
        return np.array(self._global_raw[rows[0][0]], dtype=np.float32)

    def prototype_vectors(self) -> np.ndarray:
        """(K, D) the normalised teacher prototypes."""
        return self._prototypes.copy()

    def prototype_count(self, prototype: int) -> int:
        """How many images the prototype is active in (= its vectors)."""
        self._check_prototype(prototype)
        return int(self._query("SELECT COUNT(*) FROM vectors WHERE prototype = ?", (int(prototype),))[0][0])

    def _check_prototype(self, prototype: int) -> None:
        if not 0 <= int(prototype) < self.num_prototypes:
            raise KeyError(f"no prototype {prototype} (K = {self.num_prototypes})")

    # -------------------------------------------------------------------------------- queries
    def top_k(self, prototype: int, k: int = 10, offset: int = 0) -> list[VectorRecord]:
        """The images where ``prototype`` scores highest: their (image, prototype) vectors ranked by score
        (descending, ties by image id); images where it is not active are not ranked."""
        self._check_prototype(prototype)
        rows = self._query(
            f"{self._VEC_SQL} WHERE v.prototype = ? ORDER BY v.score DESC, v.image_id LIMIT ? OFFSET ?",
            (int(prototype), int(k), int(offset)),
        )
        return [VectorRecord(*r) for r in rows]

    def neighbors(
        self, vector_id: int | None = None, image_id: int | None = None, k: int = 10, prototype: int | None = None
    ) -> list[Neighbor]:
        """Nearest neighbours by cosine, the query itself left out. Give exactly one of:

        - ``vector_id``: the (image, prototype) vectors nearest to that vector (only ``prototype``'s if given);
        - ``image_id`` with ``prototype``: the same, for the image's vector of that prototype (KeyError when the
          prototype is not active in the image);
        - ``image_id`` alone: the images nearest by their global vectors (:class:`GlobalVectorsUnavailableError`
          for an index built without them).
        """
        if (vector_id is None) == (image_id is None):
            raise ValueError("give exactly one of vector_id and image_id")
        if image_id is not None and prototype is None:
            return self.search_images(self.global_vector(image_id), k, exclude=int(image_id))
        if vector_id is None:
            self._check_prototype(prototype)
            rows = self._query(
                "SELECT id FROM vectors WHERE image_id = ? AND prototype = ?", (int(image_id), int(prototype))
            )
            if not rows:
                self.image(image_id)
                raise KeyError(f"prototype {prototype} is not active in image {image_id}")
            vector_id = rows[0][0]
        return self.search(self.vector_array(vector_id), k, prototype, exclude=int(vector_id))

    def search(
        self, vector: np.ndarray, k: int = 10, prototype: int | None = None, exclude: int | None = None
    ) -> list[Neighbor]:
        """The (image, prototype) vectors nearest to ``vector`` (D,) by cosine (it is normalised here), only
        ``prototype``'s if given, ``exclude`` left out; most similar first."""
        q = self._unit(vector)
        subset = bitmap = None
        if prototype is not None:
            self._check_prototype(prototype)
            subset, bitmap = self._subset(int(prototype))
        hits = search_vectors(self._faiss, self._raw, q, int(k), exclude, subset, bitmap=bitmap)
        records = self.vectors([i for i, _ in hits])
        images = self._images_by_id({r.image_id for r in records.values()})
        return [Neighbor(s, images[records[i].image_id], records[i]) for i, s in hits if i in records]

    def search_images(self, vector: np.ndarray, k: int = 10, exclude: int | None = None) -> list[Neighbor]:
        """The images whose global vectors are nearest to ``vector`` (D,) by cosine, image ``exclude`` left out."""
        self._require_global()
        q = self._unit(vector)
        ex_row = None
        if exclude is not None:
            rows = self._query("SELECT global_row FROM images WHERE id = ?", (int(exclude),))
            ex_row = rows[0][0] if rows else None
        hits = search_vectors(self._global_faiss, self._global_raw, q, int(k), ex_row)
        by_row = {r[5]: self._image(r) for r in self._images_where("global_row", [r for r, _ in hits])}
        return [Neighbor(s, by_row[r]) for r, s in hits if r in by_row]

    def _images_by_id(self, ids: set[int]) -> dict[int, ImageEntry]:
        return {r[0]: self._image(r) for r in self._images_where("id", sorted(ids))}

    def _images_where(self, column: str, values: Sequence[int]) -> list[tuple]:
        """Rows (id, file_name, width, height, num_vectors, global_row) of the images whose ``column`` is in
        ``values`` (queried 500 at a time)."""
        rows: list[tuple] = []
        cols = "id, file_name, width, height, num_vectors, global_row"
        for start in range(0, len(values), 500):
            part = tuple(int(v) for v in values[start : start + 500])
            rows += self._query(f"SELECT {cols} FROM images WHERE {column} IN ({','.join('?' * len(part))})", part)
        return rows

    def _unit(self, vector: np.ndarray) -> np.ndarray:
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        if v.shape[0] != self.dim:
            raise ValueError(f"vector has dimension {v.shape[0]}, the index's is {self.dim}")
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def _require_global(self) -> None:
        if not self.has_global_vectors:
            raise GlobalVectorsUnavailableError(
                f"image index {self.index_dir} has no global image vectors; rebuild it with --global-vectors"
            )

    def _subset(self, prototype: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(the sorted vector ids of ``prototype``, their FAISS selector bitmap, or None where the subset is small
        enough to be searched exactly), cached for the last :data:`SUBSET_CACHE_ENTRIES` prototypes asked for
        and at most :data:`SUBSET_CACHE_IDS` ids in all."""
        with self._lock:
            hit = self._subsets.get(prototype)
            if hit is None:
                rows = self._conn.execute("SELECT id FROM vectors WHERE prototype = ?", (prototype,)).fetchall()
                ids = np.sort(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
                hit = (ids, _bitmap(ids, len(self._raw)) if len(ids) > EXACT_SUBSET_MAX else None)
                self._subsets[prototype] = hit
                while len(self._subsets) > 1 and (
                    len(self._subsets) > SUBSET_CACHE_ENTRIES
                    or sum(len(v[0]) for v in self._subsets.values()) > SUBSET_CACHE_IDS
                ):
                    self._subsets.popitem(last=False)
            self._subsets.move_to_end(prototype)
            return hit


def search_vectors(
    index: faiss.Index,
    raw: np.ndarray,
    q: np.ndarray,
    k: int,
    exclude: int | None = None,
    subset: np.ndarray | None = None,
    exact_subset_max: int | None = None,
    bitmap: np.ndarray | None = None,
) -> list[tuple[int, float]]:
    """Top-``k`` (id, cosine) of the unit query ``q`` (D,) among the unit vectors ``raw`` (N, D) that ``index``
    holds (FAISS id = row), only the ids in ``subset`` (sorted) if given, ``exclude`` left out; most similar
    first, ties by id. Exact for a flat index and for subsets of at most ``exact_subset_max`` ids (default
    :data:`EXACT_SUBSET_MAX`; scored from ``raw``); for IVF, FAISS's ``RERANK_FACTOR`` × k candidates are
    re-scored exactly from ``raw``, so the similarities are exact and only the recall is approximate. ``bitmap``:
    the subset's selector bitmap when the caller has it (else it is made here)."""
    if k <= 0 or len(raw) == 0:
        return []
    want = k + (1 if exclude is not None else 0)
    exact_subset_max = EXACT_SUBSET_MAX if exact_subset_max is None else exact_subset_max
    if subset is not None and len(subset) <= exact_subset_max:
        cand = subset
    else:
        exact = isinstance(index, faiss.IndexFlat)
        fetch = min(len(raw), want if exact else max(RERANK_FACTOR * want, want + 32))
        q2 = q.reshape(1, -1)
        if subset is None:
            sims, ids = index.search(q2, fetch)
        else:
            if bitmap is None:  # callers that search one subset often pass it (ImageIndex caches them)
                bitmap = _bitmap(subset, len(raw))
            sel = faiss.IDSelectorBitmap(len(raw), faiss.swig_ptr(bitmap))
            if exact:
                params = faiss.SearchParameters(sel=sel)
            else:
                params = faiss.SearchParametersIVF(sel=sel, nprobe=faiss.extract_index_ivf(index).nprobe)
            sims, ids = index.search(q2, fetch, params=params)
        found = ids[0] >= 0
        if exact:
            return _top(ids[0][found], sims[0][found], k, exclude)
        cand = np.sort(ids[0][found])
    sims = np.asarray(raw[cand], dtype=np.float32) @ q  # exact cosines of the candidates
    return _top(cand, sims, k, exclude)


def _top(ids: np.ndarray, sims: np.ndarray, k: int, exclude: int | None) -> list[tuple[int, float]]:
    """The ``k`` best (id, similarity) pairs, ``exclude`` left out, most similar first, ties by id."""
    ids, sims = np.asarray(ids, np.int64), np.asarray(sims, np.float32)
    if exclude is not None:
        keep = ids != exclude
        ids, sims = ids[keep], sims[keep]
    if len(ids) > k:
        part = np.argpartition(-sims, k - 1)[:k]
        # every id scoring as the k-th best competes for the last places, so ties break by id
        part = np.union1d(part, np.flatnonzero(sims == sims[part].min()))
        ids, sims = ids[part], sims[part]
    order = np.lexsort((ids, -sims))[:k]
    return [(int(ids[i]), float(sims[i])) for i in order]
