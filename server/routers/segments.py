"""Segments: one segment and its nearest neighbours in the index (FAISS, cosine)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from indexer.store import SpaceUnavailableError
from server.deps import IndexDep
from server.errors import ApiError, not_found
from server.schemas import MAX_ID, ErrorBody, NeighborList, Segment, Space
from server.services.records import neighbors_out, segment_out

router = APIRouter(prefix="/segments", tags=["segments"])
ERRORS = {code: {"model": ErrorBody} for code in (404, 409, 422, 503)}
SegmentId = Annotated[int, Path(ge=0, le=MAX_ID)]


@router.get("/{segment_id}", responses=ERRORS)
def get_segment(segment_id: SegmentId, loaded: IndexDep) -> Segment:
    """One segment (image, prototype, score, area, bbox, RLE mask)."""
    try:
        return segment_out(loaded.index.segment(segment_id))
    except KeyError:
        raise not_found("segment", segment_id) from None


@router.get("/{segment_id}/neighbors", responses=ERRORS)
def get_neighbors(
    segment_id: SegmentId,
    loaded: IndexDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 10,
    prototype: Annotated[int | None, Query(ge=0, le=MAX_ID, description="only segments of this prototype")] = None,
    space: Annotated[
        Space,
        Query(
            description="the embedding: 'projector' (the teacher's projections, which the prototypes score; after "
            "training one prototype's segments are nearly identical there) or 'encoder' (the backbone's features "
            "pooled per segment, where they still differ; the index's `spaces` in /api/health say if it has them)",
            examples=["encoder"],
        ),
    ] = "projector",
) -> NeighborList:
    """The segments most similar to this one (itself excluded), most similar first, in the chosen embedding.

    409 when the index stores no vectors of that space (built with ``--no-encoder-vectors``)."""
    index = loaded.index
    if prototype is not None and prototype >= index.num_prototypes:
        raise not_found("prototype", prototype)
    try:
        pairs = index.neighbors(segment_id, limit, prototype, space=space)
    except KeyError:
        raise not_found("segment", segment_id) from None
    except SpaceUnavailableError as e:
        raise ApiError(409, "space_unavailable", str(e)) from None
    return NeighborList(items=neighbors_out(pairs), segment_id=segment_id, space=space)
