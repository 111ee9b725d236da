"""Full validation of an index directory before anything serves it.

:func:`open_validated` opens an index only when every part of it holds together: the manifest's
schema, the SQLite database (read-only first: ``PRAGMA quick_check``, the tables the queries read),
the (K, D) prototype matrix, the FAISS file, and the counts and dimensions that tie them (manifest K
and D, prototype rows and ids, FAISS vectors = segment rows, segment prototype ids in [0, K)). Whatever is
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
    missing = [
        n
        for n in (schema.MANIFEST_NAME, schema.DB_NAME, schema.FAISS_NAME, schema.PROTOTYPES_NAME)
        if not (index_dir / n).is_file()
    ]
    if missing:
        raise IndexInvalidError(f"index {index_dir.name!r} is not a concept index (missing {', '.join(missing)})")
    try:
        manifest = json.loads((index_dir / schema.MANIFEST_NAME).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise IndexInvalidError(f"index {index_dir.name!r}: manifest.json is not readable JSON ({e})") from e
    return check_manifest(manifest, index_dir.name)


def check_database(index_dir: Path, manifest: dict[str, Any]) -> dict[str, int]:
    """Check ``index.db`` (read-only) and ``prototypes.npy`` against the manifest before anything opens
    them for serving; returns the row counts ``{"images", "segments", "prototypes"}``."""
    import sqlite3

    name, k, d = index_dir.name, int(manifest["num_prototypes"]), int(manifest["dim"])
    try:
        protos = np.load(index_dir / schema.PROTOTYPES_NAME, mmap_mode="r", allow_pickle=False)
        shape = tuple(protos.shape)
    except (OSError, ValueError, EOFError) as e:
        raise IndexInvalidError(f"index {name!r}: prototypes.npy cannot be read ({e})") from e
    if shape != (k, d):
        raise IndexInvalidError(f"index {name!r}: prototypes.npy is {shape}, not the manifest's (K = {k}, D = {d})")
    try:
        conn = schema.connect(index_dir / schema.DB_NAME, readonly=True)
    except sqlite3.Error as e:
        raise IndexInvalidError(f"index {name!r}: index.db cannot be opened ({e})") from e
    try:
        verdict = [r[0] for r in conn.execute("PRAGMA quick_check")]
        if verdict != ["ok"]:
            raise IndexInvalidError(f"index {name!r}: index.db fails SQLite's check: {'; '.join(verdict[:3])}")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        absent = [t for t in _TABLES if t not in tables]
        if absent:
            raise IndexInvalidError(f"index {name!r}: index.db lacks the tables {', '.join(absent)}")
        counts = {
            t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])  # noqa: S608 - fixed names
            for t in ("images", "segments", "prototypes")
        }
        lo, hi = conn.execute("SELECT MIN(prototype), MAX(prototype) FROM segments").fetchone()
        p_lo, p_hi, per_proto = conn.execute(
            "SELECT MIN(id), MAX(id), COALESCE(SUM(num_segments), 0) FROM prototypes"
        ).fetchone()
    except sqlite3.Error as e:
        raise IndexInvalidError(f"index {name!r}: index.db cannot be read ({e})") from e
    finally:
        conn.close()
    problems = []
    if counts["prototypes"] != k or (k and (p_lo, p_hi) != (0, k - 1)):
        problems.append(f"index.db has {counts['prototypes']} prototypes (ids {p_lo}..{p_hi}), the manifest K = {k}")
    if int(per_proto) != counts["segments"]:
        problems.append(f"the prototypes' segment counts add up to {per_proto}, not {counts['segments']}")
    if counts["segments"] and not (int(lo) >= 0 and int(hi) < k):
        problems.append(f"segment prototype ids span {lo}..{hi}, outside 0..{k - 1}")
    recorded = manifest.get("counts") or {}
    for key in ("images", "segments"):
        if key in recorded and recorded[key] != counts[key]:
            problems.append(f"the manifest counts {recorded[key]} {key}, index.db holds {counts[key]}")
    if problems:
        raise IndexInvalidError(f"index {name!r}: {'; '.join(problems)}")
    return counts


def check_open_index(index: ConceptIndex, counts: dict[str, int], name: str = "index") -> None:
    """Raise :class:`IndexInvalidError` unless the open ``index``'s vectors agree with its database."""
    d = index.dim
    problems = []
    if index._faiss.d != d:
        problems.append(f"segments.faiss holds {index._faiss.d}-d vectors, the manifest D = {d}")
    if int(index._faiss.ntotal) != counts["segments"]:
        problems.append(f"segments.faiss holds {index._faiss.ntotal} vectors for {counts['segments']} segments")
    if not np.isfinite(index._prototypes).all():
        problems.append("prototypes.npy holds values that are not finite")
    if problems:
        raise IndexInvalidError(f"index {name!r}: {'; '.join(problems)}")


def _part_of(exc: BaseException) -> str | None:
    """Which file of an index an exception raised while opening it came from."""
    import sqlite3

    if isinstance(exc, sqlite3.Error):
        return schema.DB_NAME
    if type(exc) is RuntimeError and "faiss" in str(exc).lower():  # FAISS raises plain RuntimeErrors
        return schema.FAISS_NAME
    return None


def open_validated(index_dir: str | os.PathLike, search_threads: int | None = 1) -> ConceptIndex:
    """Open ``index_dir`` and validate it whole; returns the open :class:`ConceptIndex`.

    Raises :class:`IndexInvalidError` (closing whatever it opened) for any inconsistency, and lets
    :class:`indexer.store.IndexMismatchError` through.
    """
    index_dir = Path(index_dir).expanduser().resolve()
    counts = check_database(index_dir, read_manifest(index_dir))
    try:
        index = ConceptIndex.open(index_dir, search_threads=search_threads)
    except (IndexMismatchError, IndexInvalidError):
        raise
    except Exception as e:  # noqa: BLE001 - SQLite, FAISS and numpy each raise their own types
        why = str(e).strip().splitlines()[-1:] or [""]
        why = why[0].replace(str(index_dir) + os.sep, "").replace(str(index_dir), index_dir.name)
        part = _part_of(e)
        raise IndexInvalidError(
            f"index {index_dir.name!r} cannot be opened{f' ({part})' if part else ''}: {type(e).__name__}: {why}"
        ) from e
    try:
        check_open_index(index, counts, index_dir.name)
    except BaseException:
        index.close()
        raise
    return index
