"""Prototypes (concepts): activity, dead flag, labels, purity, the 2-D map and top-k segments."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from indexer.evaluate_objects import best_iou_by_prototype
from server.deps import Authorized, IndexDep, RuntimeDep
from server.errors import ApiError, not_found
from server.schemas import (
    MAX_ID,
    MAX_OFFSET,
    ErrorBody,
    LabelUpdate,
    Prototype,
    PrototypeList,
    PrototypeMap,
    PrototypeSimilarity,
    PrototypeSort,
    SegmentPage,
)
from server.services import images
from server.services.projection import MAX_SIMILARITY_JSON, prototype_map, prototype_similarity, similarity_image
from server.services.prototype_list import select
from server.services.records import best_images, prototype_out, segment_out

router = APIRouter(prefix="/prototypes", tags=["prototypes"])
ERRORS = {code: {"model": ErrorBody} for code in (404, 422, 503)}
ProtoId = Annotated[int, Path(ge=0, le=MAX_ID, description="prototype id k")]
MAX_PROTOTYPE_PAGE = 4096


def _record(loaded: IndexDep, k: int):
    try:
        return loaded.index.prototype(k)
    except KeyError:
        raise not_found("prototype", k) from None


@router.get("", responses=ERRORS)
def list_prototypes(
    loaded: IndexDep,
    sort: Annotated[
        PrototypeSort,
        Query(
            description="order: id, most_active / least_active (images, then pixel share), purity, label, "
            "dissection (best IoU with a class in the newest stored dissection)"
        ),
    ] = "id",
    q: Annotated[
        str, Query(max_length=200, description="keep labels or majority classes containing this, or the id (#12)")
    ] = "",
    hide_dead: Annotated[bool, Query(description="leave out dead prototypes")] = False,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[
        int | None, Query(ge=1, le=MAX_PROTOTYPE_PAGE, description="page size (default: all that remain)")
    ] = None,
) -> PrototypeList:
    """The prototypes with activity statistics, dead flag, user label and (with ground truth) purity:
    filtered, ordered and paged here, so a K = 2048 grid loads one page (``total`` counts what the filters
    keep). Without parameters: all K in id order."""
    records = loaded.index.prototypes()
    ious = best_iou_by_prototype(loaded.index.eval_results()) if sort == "dissection" else None
    kept = select(records, sort=sort, query=q, hide_dead=hide_dead, dissection=ious)
    page = kept[offset : None if limit is None else offset + limit]
    best = best_images(loaded, page)
    return PrototypeList(
        items=[prototype_out(r, best) for r in page],
        total=len(kept),
        offset=offset,
        num_prototypes=len(records),
        num_dead=sum(r.dead for r in records),
        has_ground_truth=loaded.index.class_names is not None,
    )


@router.get("/map", responses=ERRORS)
def get_map(loaded: IndexDep, runtime: RuntimeDep) -> PrototypeMap:
    """2-D coordinates of the prototypes (PCA of their vectors; computed once per index and cached)."""
    return prototype_map(runtime, loaded)


@router.get("/similarity", responses=ERRORS)
def get_similarity(loaded: IndexDep, runtime: RuntimeDep) -> PrototypeSimilarity:
    """The K×K cosines between the prototype vectors, as numbers: only for K <= 256 (a 422 beyond, where
    /api/prototypes/similarity.png draws them and the statistics list the near-duplicate pairs)."""
    k = loaded.index.num_prototypes
    if k > MAX_SIMILARITY_JSON:
        raise ApiError(
            422,
            "too_many_prototypes",
            f"{k} prototypes: {k * k} cosines are served as an image "
            f"only (GET /api/prototypes/similarity.png); numbers up to K = {MAX_SIMILARITY_JSON}",
        )
    sim = prototype_similarity(runtime, loaded)
    return PrototypeSimilarity(num_prototypes=k, cosine=np.round(sim, 3).tolist())


@router.get("/similarity.png", response_class=Response, responses=ERRORS | {200: {"content": {"image/png": {}}}})
def get_similarity_png(
    loaded: IndexDep,
    runtime: RuntimeDep,
    size: Annotated[int, Query(ge=16, le=2048, description="largest side in pixels (blocks max-pooled)")] = 512,
) -> Response:
    """The K×K cosines as a heatmap (blue -1, white 0, red 1); above ``size`` prototypes each pixel is
    the largest cosine of its block of pairs, so near-duplicates stay visible at K = 2048."""
    png = similarity_image(runtime, loaded, size)
    return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=300"})


@router.get("/{k}", responses=ERRORS)
def get_prototype(k: ProtoId, loaded: IndexDep) -> Prototype:
    """One prototype."""
    rec = _record(loaded, k)
    return prototype_out(rec, best_images(loaded, [rec]))


@router.put("/{k}/label", dependencies=[Authorized], responses=ERRORS | {401: {"model": ErrorBody}})
def put_label(k: ProtoId, body: LabelUpdate, loaded: IndexDep, runtime: RuntimeDep) -> Prototype:
    """Name a concept (``{"label": "sky"}``; surrounding whitespace is dropped, a blank label is a 422). The
    name belongs to the model (a hash of its teacher's weights): every index of the same weights shows it."""
    _record(loaded, k)
    runtime.set_name(loaded, k, body.label)
    rec = loaded.index.prototype(k)
    return prototype_out(rec, best_images(loaded, [rec]))


@router.delete("/{k}/label", dependencies=[Authorized], responses=ERRORS | {401: {"model": ErrorBody}})
def delete_label(k: ProtoId, loaded: IndexDep, runtime: RuntimeDep) -> Prototype:
    """Remove a concept's name (from every index of the same model)."""
    _record(loaded, k)
    runtime.set_name(loaded, k, None)
    rec = loaded.index.prototype(k)
    return prototype_out(rec, best_images(loaded, [rec]))


@router.get("/{k}/segments", responses=ERRORS)
def top_segments(
    k: ProtoId,
    loaded: IndexDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> SegmentPage:
    """The prototype's segments ranked by cosine to it (the top-k are its concept), paginated."""
    rec = _record(loaded, k)
    items = [segment_out(s) for s in loaded.index.top_segments(k, offset, limit)]
    return SegmentPage(items=items, prototype=k, offset=offset, limit=limit, total=rec.num_segments)


@router.get("/{k}/best.png", response_class=Response, responses=ERRORS | {200: {"content": {"image/png": {}}}})
def get_best_segment(
    request: Request,
    k: ProtoId,
    loaded: IndexDep,
    runtime: RuntimeDep,
    rank: Annotated[int, Query(ge=0, le=49, description="0 = the best segment")] = 0,
    size: Annotated[int | None, Query(ge=16, le=1024)] = 160,
) -> Response:
    """A prototype's ``rank``-th best segment in Figure-3 red (the Compare page's side-by-side tiles; ``?index=``
    names the index). Opening a named index takes a work slot (503 ``busy`` when none frees up)."""
    _record(loaded, k)
    segments = loaded.index.top_segments(k, offset=rank, limit=1)
    if not segments:
        raise ApiError(404, "not_found", f"prototype {k} of {loaded.name} has no segment of rank {rank}")
    seg = segments[0]
    with runtime.render_slot(request.scope, f"the best segment of prototype {k}"):
        png = images.segment_overlay(loaded, seg.image_id, None, seg.id, size)
    return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=300"})
