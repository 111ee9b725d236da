"""Indexes by name under the configured indexes directory, and comparisons between two of them.

The client names an index (``[A-Za-z0-9_-]``, checked by the route); the server resolves it inside
``indexes_dir`` and never opens a path the client wrote. Other indexes are opened once (validated) and
kept in the runtime's bounded cache; a comparison (:func:`indexer.compare.compare`) is computed once per
pair of builds.
"""

from __future__ import annotations

from indexer.compare import DEFAULT_MIN_IOU, compare, reanalyse
from server.errors import ApiError
from server.runtime import LoadedIndex, Runtime
from server.schemas import CompareResult


def named_index(runtime: Runtime, name: str) -> LoadedIndex:
    """The index named ``name`` (:meth:`server.runtime.Runtime.open_index`: the default one, or one kept in
    the bounded cache of named indexes)."""
    return runtime.open_index(name)


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
