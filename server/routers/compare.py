"""How the concepts of two indexes compare, and the paper's concept figures of an index."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from indexer.compare import DEFAULT_MIN_IOU
from server.deps import BuildParam, IndexParam, RuntimeDep, resolve_index
from server.errors import ApiError
from server.schemas import MAX_ID, CompareResult, ErrorBody, Name
from server.services.compare import comparison, named_index

router = APIRouter(tags=["compare"])
ERRORS = {code: {"model": ErrorBody} for code in (404, 409, 422, 503)}
IndexName = Annotated[
    str,
    Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="an index under the indexes directory", examples=["cpu-demo"]),
]


@router.get("/compare", responses=ERRORS)
def get_compare(
    request: Request,
    runtime: RuntimeDep,
    a: Annotated[Name, Query(description="index A (the earlier checkpoint)", examples=["cpu-demo-epoch1"])],
    b: Annotated[Name | None, Query(description="index B (default: the default index)", examples=["cpu-demo"])] = None,
    min_iou: Annotated[float, Query(ge=0.0, le=1.0, description="the least IoU of a matched pair")] = DEFAULT_MIN_IOU,
) -> CompareResult:
    """Compare two indexes of the same images: Hungarian-matched prototype pairs with their mask IoU,
    splits, merges (absorbed prototypes included), born and died prototypes. The pixels are counted once per
    pair of index builds (seconds at K = 256); ``min_iou`` re-matches from those counts."""
    loaded = runtime.require_index() if b is None else None
    budget = runtime.budget(request.scope, f"the comparison of {a} and {b or loaded.name}")
    with runtime.work_slot(budget):
        index_b = loaded if b is None else named_index(runtime, b)
        budget.check()
        return comparison(runtime, named_index(runtime, a), index_b, min_iou)


@router.get("/indexes/{name}/prototypes/{k}/best.png", response_class=RedirectResponse, status_code=308)
def get_best_segment_by_path(
    request: Request,
    name: IndexName,
    k: Annotated[int, Path(ge=0, le=MAX_ID)],
    rank: Annotated[int, Query(ge=0, le=49)] = 0,
    size: Annotated[int | None, Query(ge=16, le=1024)] = 160,
) -> RedirectResponse:
    """The earlier address of ``GET /api/prototypes/{k}/best.png?index={name}``: a permanent redirect there,
    so links made before the index became a parameter keep working."""
    query = f"index={name}&rank={rank}" + (f"&size={size}" if size is not None else "")
    return RedirectResponse(f"{request.scope.get('root_path', '')}/api/prototypes/{k}/best.png?{query}", 308)


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
    index: IndexParam = None,
    build: BuildParam = None,
) -> Response:
    """The paper's concept figure (Figures 3, 8-11) of an index (``?index=``, else the default one): one row
    of top-k segments per prototype, masks in red; deterministic for the same index and arguments
    (``slotcon figure`` alike).

    422 for more than 32 prototypes or ids beyond K (checked before any work), 503 ``busy`` when every
    work slot stays taken, 503 ``deadline_exceeded`` past ``work_timeout_s`` (the drawing stops)."""
    import tempfile

    from indexer.figure import concept_figure, parse_prototypes

    try:  # checked on the ranges, before any is expanded (0-100000000 costs nothing), then against K
        parse_prototypes(prototypes, limit=MAX_FIGURE_PROTOTYPES)
        loaded = resolve_index(runtime, request, index, build)
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
