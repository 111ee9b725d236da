"""Full validation of an index directory before anything serves it.

:func:`open_validated` opens an index only when every part of it holds together: the manifest's
schema, the SQLite database (``PRAGMA quick_check`` and the tables the queries read), the FAISS
file, and the counts and dimensions that tie them (manifest K and D, prototype rows, the (K, D)
prototype matrix, FAISS vectors = segment rows, segment prototype ids in [0, K)). Whatever is
wrong raises :class:`IndexInvalidError` with a one-line message naming the index and the part.
The checkpoint behind the index is the caller's to check (its content hash, K and D).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from indexer import schema
from indexer.store import ConceptIndex, IndexMismatchError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TABLES = ("images", "segments", "prototypes", "stats", "evaluations", "eval_examples")


class IndexInvalidError(ValueError):
    """An index directory that cannot be served; the message says which part is wrong."""


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_manifest(manifest: Any, name: str = "index") -> dict[str, Any]:
    """Raise :class:`IndexInvalidError` unless ``manifest`` has every field the server relies on; returns it."""
    if not isinstance(manifest, dict):
        raise IndexInvalidError(f"index {name!r}: manifest.json is not a JSON object")
    problems = []
    for key in ("num_prototypes", "dim", "resize", "crop"):
        if not _positive_int(manifest.get(key)):
            problems.append(f"'{key}' must be a positive integer (got {manifest.get(key)!r})")
    ck = manifest.get("checkpoint")
    if not isinstance(ck, dict):
        problems.append("'checkpoint' is missing (it must name the checkpoint's path and sha256)")
    else:
        if not isinstance(ck.get("path"), str) or not ck["path"]:
            problems.append("'checkpoint.path' is missing")
        if not isinstance(ck.get("sha256"), str) or not _SHA256.match(ck["sha256"]):
            problems.append("'checkpoint.sha256' is not a sha256 hex digest")
    data = manifest.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("root"), str):
        problems.append("'data.root' is missing")
    if problems:
        raise IndexInvalidError(f"index {name!r}: manifest.json: {'; '.join(problems)}")
    return manifest


def read_manifest(index_dir: str | os.PathLike) -> dict[str, Any]:
    """The checked manifest of ``index_dir`` (:class:`IndexInvalidError` when absent or malformed)."""
    index_dir = Path(index_dir)
    missing = [n for n in (schema.MANIFEST_NAME, schema.DB_NAME, schema.FAISS_NAME, schema.PROTOTYPES_NAME)
               if not (index_dir / n).is_file()]
    if missing:
        raise IndexInvalidError(f"index {index_dir.name!r} is not a concept index (missing {', '.join(missing)})")
    try:
        manifest = json.loads((index_dir / schema.MANIFEST_NAME).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise IndexInvalidError(f"index {index_dir.name!r}: manifest.json is not readable JSON ({e})") from e
    return check_manifest(manifest, index_dir.name)


def _count(index: ConceptIndex, table: str) -> int:
    return int(index._query(f"SELECT COUNT(*) FROM {table}")[0][0])  # noqa: S608 - fixed table names


def check_open_index(index: ConceptIndex, name: str = "index") -> None:
    """Raise :class:`IndexInvalidError` unless the open ``index``'s database, vectors and manifest agree."""
    import sqlite3

    k, d = index.num_prototypes, index.dim
    try:
        verdict = [r[0] for r in index._query("PRAGMA quick_check")]
        if verdict != ["ok"]:
            raise IndexInvalidError(f"index {name!r}: index.db fails SQLite's check: {'; '.join(verdict[:3])}")
        tables = {r[0] for r in index._query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        absent = [t for t in _TABLES if t not in tables]
        if absent:
            raise IndexInvalidError(f"index {name!r}: index.db lacks the tables {', '.join(absent)}")
        n_images, n_segments, n_protos = (_count(index, t) for t in ("images", "segments", "prototypes"))
        lo, hi, per_proto = index._query(
            "SELECT MIN(prototype), MAX(prototype), (SELECT COALESCE(SUM(num_segments), 0) FROM prototypes) "
            "FROM segments")[0]
    except sqlite3.Error as e:
        raise IndexInvalidError(f"index {name!r}: index.db cannot be read ({e})") from e
    problems = []
    if n_protos != k:
        problems.append(f"index.db has {n_protos} prototypes, the manifest K = {k}")
    if index._faiss.d != d:
        problems.append(f"segments.faiss holds {index._faiss.d}-d vectors, the manifest D = {d}")
    if int(index._faiss.ntotal) != n_segments:
        problems.append(f"segments.faiss holds {index._faiss.ntotal} vectors for {n_segments} segments")
    if int(per_proto) != n_segments:
        problems.append(f"the prototypes' segment counts add up to {per_proto}, not {n_segments}")
    if n_segments and not (int(lo) >= 0 and int(hi) < k):
        problems.append(f"segment prototype ids span {lo}..{hi}, outside 0..{k - 1}")
    protos = index._prototypes
    if protos.shape != (k, d) or not np.isfinite(protos).all():
        problems.append(f"prototypes.npy is {protos.shape}, not the manifest's ({k}, {d}), or not finite")
    counts = index.manifest.get("counts") or {}
    for key, actual in (("images", n_images), ("segments", n_segments)):
        if key in counts and counts[key] != actual:
            problems.append(f"the manifest counts {counts[key]} {key}, index.db holds {actual}")
    if problems:
        raise IndexInvalidError(f"index {name!r}: {'; '.join(problems)}")


def open_validated(index_dir: str | os.PathLike, search_threads: int | None = 1) -> ConceptIndex:
    """Open ``index_dir`` and validate it whole; returns the open :class:`ConceptIndex`.

    Raises :class:`IndexInvalidError` (closing whatever it opened) for any inconsistency, and lets
    :class:`indexer.store.IndexMismatchError` through.
    """
    index_dir = Path(index_dir).expanduser().resolve()
    read_manifest(index_dir)
    try:
        index = ConceptIndex.open(index_dir, search_threads=search_threads)
    except (IndexMismatchError, IndexInvalidError):
        raise
    except Exception as e:  # noqa: BLE001 - SQLite, FAISS and numpy each raise their own types
        why = str(e).strip().splitlines()[-1:] or [""]
        why = why[0].replace(str(index_dir) + os.sep, "").replace(str(index_dir), index_dir.name)
        raise IndexInvalidError(f"index {index_dir.name!r} cannot be opened: {type(e).__name__}: {why}") from e
    try:
        check_open_index(index, index_dir.name)
    except BaseException:
        index.close()
        raise
    return index
