"""Indexes by name, and how the concepts of two of them (e.g. two checkpoints of one run) compare."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from server.deps import IndexDep, RuntimeDep
from server.errors import ApiError, not_found
from server.schemas import MAX_ID, CompareResult, ErrorBody, IndexList, Name
from server.services import images
from server.services.compare import comparison, list_indexes, named_index

router = APIRouter(tags=["compare"])
ERRORS = {code: {"model": ErrorBody} for code in (404, 409, 422, 503)}
IndexName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="an index under the indexes directory",
                                examples=["cpu-demo"])]


@router.get("/indexes", responses=ERRORS)
def get_indexes(runtime: RuntimeDep) -> IndexList:
    """The indexes under the configured indexes directory (what ``/api/compare`` and activation take)."""
    return IndexList(items=list_indexes(runtime))


@router.get("/compare", responses=ERRORS)
def get_compare(
    loaded: IndexDep, runtime: RuntimeDep,
    a: Annotated[Name, Query(description="index A (the earlier checkpoint)", examples=["cpu-demo-epoch1"])],
    b: Annotated[Name | None, Query(description="index B (default: the active index)", examples=["cpu-demo"])] = None,
) -> CompareResult:
    """Compare two indexes of the same images: Hungarian-matched prototype pairs with their mask IoU,
    splits, merges, born and died prototypes. Computed once per pair of index builds (seconds at K = 256)."""
    index_b = loaded if b is None else named_index(runtime, b)
    return comparison(runtime, named_index(runtime, a), index_b)


@router.get("/indexes/{name}/prototypes/{k}/best.png", response_class=Response,
            responses=ERRORS | {200: {"content": {"image/png": {}}}})
def get_best_segment(
    name: IndexName, k: Annotated[int, Path(ge=0, le=MAX_ID)], runtime: RuntimeDep,
    rank: Annotated[int, Query(ge=0, le=49, description="0 = the best segment")] = 0,
    size: Annotated[int | None, Query(ge=16, le=1024)] = 160,
) -> Response:
    """A prototype's ``rank``-th best segment in the named index, in Figure-3 red (the Compare page's
    side-by-side tiles)."""
    other = named_index(runtime, name)
    if k >= other.index.num_prototypes:
        raise not_found("prototype", k)
    segments = other.index.top_segments(k, offset=rank, limit=1)
    if not segments:
        raise ApiError(404, "not_found", f"prototype {k} of {name} has no segment of rank {rank}")
    seg = segments[0]
    png = images.segment_overlay(other, seg.image_id, None, seg.id, size)
    return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=300"})



