"""Indexes by name, how the concepts of two of them compare, and the paper's concept figures of the active one."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from indexer.compare import DEFAULT_MIN_IOU
from server.deps import IndexDep, RuntimeDep
from server.errors import ApiError, not_found
from server.schemas import MAX_ID, CompareResult, ErrorBody, IndexList, Name
from server.services import images
from server.services.compare import comparison, list_indexes, named_index

router = APIRouter(tags=["compare"])
ERRORS = {code: {"model": ErrorBody} for code in (404, 409, 422, 503)}
IndexName = Annotated[
    str,
    Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="an index under the indexes directory", examples=["cpu-demo"]),
]


@router.get("/indexes", responses=ERRORS)
def get_indexes(runtime: RuntimeDep) -> IndexList:
    """The indexes under the configured indexes directory (what ``/api/compare`` and activation take)."""
    return IndexList(items=list_indexes(runtime))


@router.get("/compare", responses=ERRORS)
def get_compare(
    request: Request,
    loaded: IndexDep,
    runtime: RuntimeDep,
    a: Annotated[Name, Query(description="index A (the earlier checkpoint)", examples=["cpu-demo-epoch1"])],
    b: Annotated[Name | None, Query(description="index B (default: the active index)", examples=["cpu-demo"])] = None,
    min_iou: Annotated[float, Query(ge=0.0, le=1.0, description="the least IoU of a matched pair")] = DEFAULT_MIN_IOU,
) -> CompareResult:
    """Compare two indexes of the same images: Hungarian-matched prototype pairs with their mask IoU,
    splits, merges (absorbed prototypes included), born and died prototypes. The pixels are counted once per
    pair of index builds (seconds at K = 256); ``min_iou`` re-matches from those counts."""
    budget = runtime.budget(request.scope, f"the comparison of {a} and {b or loaded.name}")
    with runtime.work_slot(budget):
        index_b = loaded if b is None else named_index(runtime, b)
        budget.check()
        return comparison(runtime, named_index(runtime, a), index_b, min_iou)


@router.get(
    "/indexes/{name}/prototypes/{k}/best.png",
    response_class=Response,
    responses=ERRORS | {200: {"content": {"image/png": {}}}},
)
def get_best_segment(
    request: Request,
    name: IndexName,
    k: Annotated[int, Path(ge=0, le=MAX_ID)],
    runtime: RuntimeDep,
    rank: Annotated[int, Query(ge=0, le=49, description="0 = the best segment")] = 0,
    size: Annotated[int | None, Query(ge=16, le=1024)] = 160,
) -> Response:
    """A prototype's ``rank``-th best segment in the named index, in Figure-3 red (the Compare page's
    side-by-side tiles). Opening a named index takes a work slot (503 ``busy`` when none frees up)."""
    with runtime.work_slot(runtime.budget(request.scope, f"opening index {name!r}")):
        other = named_index(runtime, name)
    if k >= other.index.num_prototypes:
        raise not_found("prototype", k)
    segments = other.index.top_segments(k, offset=rank, limit=1)
    if not segments:
        raise ApiError(404, "not_found", f"prototype {k} of {name} has no segment of rank {rank}")
    seg = segments[0]
    png = images.segment_overlay(other, seg.image_id, None, seg.id, size)
    return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=300"})


MAX_FIGURE_PROTOTYPES = 32
FIGURE_TYPES = {"png": "image/png", "pdf": "application/pdf", "svg": "image/svg+xml"}


@router.get(
    "/figure", response_class=Response, responses=ERRORS | {200: {"content": {t: {} for t in FIGURE_TYPES.values()}}}
)
def get_figure(
    request: Request,
    runtime: RuntimeDep,
    prototypes: Annotated[
        str,
        Query(
            max_length=200,
            description=f"ids and ranges, e.g. '3,17,42' or '3-5,9' (at most {MAX_FIGURE_PROTOTYPES} prototypes)",
            examples=["3,17,42"],
        ),
    ],
    topk: Annotated[int, Query(ge=1, le=20, description="segments per row")] = 10,
    format: Annotated[str, Query(pattern="^(png|pdf|svg)$")] = "png",
    alpha: Annotated[float, Query(ge=0.0, le=1.0, description="opacity of the red masks")] = 0.5,
    labels: Annotated[bool, Query(description="a title column (#k and the concept's name)")] = True,
) -> Response:
    """The paper's concept figure (Figures 3, 8-11) of the active index: one row of top-k segments per
    prototype, masks in red; deterministic for the same index and arguments (``slotcon figure`` alike).

    422 for more than 32 prototypes or ids beyond K (checked before any work), 503 ``busy`` when every
    work slot stays taken, 503 ``deadline_exceeded`` past ``work_timeout_s`` (the drawing stops)."""
    import tempfile

    from indexer.figure import concept_figure, parse_prototypes

    try:  # checked on the ranges, before any is expanded (0-100000000 costs nothing), then against K
        parse_prototypes(prototypes, limit=MAX_FIGURE_PROTOTYPES)
        loaded = runtime.require_index()
        ids = parse_prototypes(prototypes, loaded.index.num_prototypes, MAX_FIGURE_PROTOTYPES)
    except ValueError as e:
        raise ApiError(422, "invalid_request", str(e)) from e
    budget = runtime.budget(request.scope, f"the figure of {len(ids)} prototypes")
    with runtime.work_slot(budget), tempfile.TemporaryDirectory() as tmp:
        out = FilePath(tmp) / f"figure.{format}"
        try:
            concept_figure(loaded.index, ids, topk=topk, alpha=alpha, labels=labels, out=out, check=budget.check)
        except ValueError as e:
            raise ApiError(422, "invalid_request", str(e)) from e
        data = out.read_bytes()
    name = "concepts-" + "-".join(map(str, ids[:8])) + f".{format}"
    return Response(
        data, media_type=FIGURE_TYPES[format], headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )
