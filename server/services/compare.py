"""Indexes by name under the configured indexes directory, and comparisons between two of them.

The client names an index (``[A-Za-z0-9_-]``, checked by the route); the server resolves it inside
``indexes_dir`` and never opens a path the client wrote. Other indexes are opened once (validated) and
kept; a comparison (:func:`indexer.compare.compare`) is computed once per pair of builds.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from indexer.compare import DEFAULT_MIN_IOU, compare, reanalyse
from server.errors import ApiError, not_found
from server.runtime import LoadedIndex, Runtime
from server.schemas import CompareResult, IndexEntry
from server.services.folders import check_index_dir, is_real_dir, is_regular_file, read_manifest, subdirectories

_lock = threading.Lock()


def list_indexes(runtime: Runtime) -> list[IndexEntry]:
    """The indexes under ``indexes_dir`` whose manifest reads, by name."""
    active = runtime.index.path.resolve() if runtime.index is not None else None
    items = []
    for folder in subdirectories(runtime.settings.indexes_dir):  # no symlinks, no FIFOs (see server.services.folders)
        try:
            m = read_manifest(folder)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        items.append(IndexEntry(
            name=folder.name, checkpoint=Path(m.checkpoint.path).name, num_prototypes=m.num_prototypes,
            num_images=m.counts.images, built_at=m.built_at, active=folder.resolve() == active,
        ))  # fmt: skip
    return items


def named_index(runtime: Runtime, name: str) -> LoadedIndex:
    """The index ``indexes_dir/name``, opened and validated once (the active one when it is that one)."""
    path = runtime.settings.indexes_dir / name
    if not (is_real_dir(path) and is_regular_file(path / "manifest.json")):
        raise not_found("index", name)
    current = runtime.index
    if current is not None and current.path.resolve() == path.resolve():
        return current
    stamp = os.lstat(path / "manifest.json").st_mtime_ns
    key = f"named-index:{name}:{stamp}"
    with _lock:
        if key not in runtime.cache:
            from indexer.validate import IndexInvalidError, open_validated

            for stale in [k for k in runtime.cache if k.startswith(f"named-index:{name}:")]:
                runtime.cache.pop(stale).index.close()  # an earlier build of this name

            try:
                check_index_dir(path, name)
                runtime.cache[key] = LoadedIndex(index=open_validated(path), path=path)
            except ApiError as e:
                raise ApiError(409, "bad_index", f"index {name!r} cannot be used: {e.message}") from e
            except IndexInvalidError as e:
                raise ApiError(409, "bad_index", f"index {name!r} cannot be used: {e}") from e
        return runtime.cache[key]


def comparison(runtime: Runtime, a: LoadedIndex, b: LoadedIndex, min_iou: float = DEFAULT_MIN_IOU) -> CompareResult:
    """:func:`indexer.compare.compare` of ``a`` and ``b`` as the API's model: the pixels are counted once per
    pair of builds, the matching (``min_iou``: the least IoU of a matched pair) made from them per request."""
    key = f"compare:{a.path}:{a.index.manifest.built_at}:{b.path}:{b.index.manifest.built_at}"
    if key not in runtime.cache:
        try:
            runtime.cache[key] = compare(a.index, b.index)
        except ValueError as e:
            raise ApiError(422, "not_comparable", f"{a.name} and {b.name}: {e}") from e
    c = runtime.cache[key]
    if min_iou != c.params["min_iou"]:
        c = reanalyse(c, min_iou=min_iou)
    body = c.to_dict()
    body.update(index_a=a.name, index_b=b.name)
    body.pop("checkpoint_a")
    body.pop("checkpoint_b")
    return CompareResult.model_validate(body)
