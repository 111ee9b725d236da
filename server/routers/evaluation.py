"""Slot statistics and unsupervised-segmentation evaluations (stored results, examples, new jobs)."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from indexer.evaluate_objects import latest_dissection
from indexer.evaluate_tag import PAPER
from server.deps import Authorized, IndexDep, IndexModelDep, RuntimeDep, SettingsDep, SupervisorDep
from server.errors import not_found
from server.schemas import (
    MAX_ID,
    Dissection,
    ErrorBody,
    EvalExample,
    EvalExampleList,
    EvalList,
    EvalRequest,
    EvalResult,
    InlineExample,
    Job,
    Stats,
)
from server.services.jobview import job_view
from server.services.launch import start_eval

router = APIRouter(tags=["statistics"])
ERRORS = {code: {"model": ErrorBody} for code in (404, 422, 503)}
INLINE_EXAMPLES = 6
EvalId = Annotated[int, Path(ge=0, le=MAX_ID)]


def _examples(loaded: IndexDep, eval_id: int) -> list[tuple[int, bytes, bytes]]:
    try:
        return loaded.index.eval_examples(eval_id)
    except KeyError:
        raise not_found("evaluation", eval_id) from None


@router.get("/stats", responses=ERRORS)
def get_stats(
    loaded: IndexDep,
    duplicate_threshold: Annotated[
        float | None,
        Query(
            ge=-1.0,
            le=1.0,
            description="cosine from which two prototypes are near-duplicates (default: the "
            "threshold the statistics were stored with)",
            examples=[0.9],
        ),
    ] = None,
) -> Stats:
    """The index's slot statistics: dead prototypes, active prototypes per image, activity, duplicates."""
    stats = loaded.index.stats(duplicate_threshold).to_dict()
    return Stats(**stats)


@router.get("/eval", responses=ERRORS)
def list_evals(
    loaded: IndexDep,
    runtime: RuntimeDep,
    inline_examples: Annotated[int, Query(ge=0, le=50, description="examples inlined per result")] = INLINE_EXAMPLES,
) -> EvalList:
    """Stored evaluation results, newest first, and the paper's row. Each result has its ``scores`` side by
    side, each tagged with how it was measured and checked against the paper's tag, and ``examples``: the
    first ``inline_examples`` as ``{image_id, prediction, ground_truth}`` base64 PNGs (all via
    ``/api/eval/{id}/examples``)."""
    items = []
    for stored in loaded.index.eval_results():
        examples = [
            InlineExample(
                image_id=i, prediction=base64.b64encode(p).decode(), ground_truth=base64.b64encode(g).decode()
            )
            for i, p, g in _examples(loaded, stored.id)[:inline_examples]
        ]
        fields = runtime.paths.value(stored.result.to_dict())  # checkpoint and data root relative to their folders
        items.append(EvalResult(**fields, id=stored.id, created_at=stored.created_at, examples=examples))
    return EvalList(items=items, paper=PAPER.to_dict())


@router.get("/eval/dissection", responses=ERRORS)
def get_dissection(loaded: IndexDep) -> Dissection:
    """The newest stored dissection of the model (``slotcon eval --metric dissection``): every prototype's
    IoU with every labelled class, its best class, and the classes found above the threshold. 404 when no
    stored evaluation has one."""
    latest = latest_dissection(loaded.index.eval_results())
    if latest is None:
        raise not_found("dissection", "latest")
    eval_id, found = latest
    return Dissection(**found.to_dict(), eval_id=eval_id)


@router.post("/eval", status_code=201, dependencies=[Authorized], responses=ERRORS | {401: {"model": ErrorBody}})
def create_eval_job(
    req: EvalRequest,
    loaded: IndexDep,
    model: IndexModelDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
    jobs: SupervisorDep,
) -> Job:
    """Start an evaluation job of the active index's checkpoint; the result is stored in the index."""
    checkpoint = runtime.require_model_file(model)  # the job reloads the file: it must still be this model
    return job_view(start_eval(settings, jobs, req, loaded.path, checkpoint), jobs.metrics)


@router.get("/eval/{eval_id}/examples", responses=ERRORS)
def list_examples(eval_id: EvalId, loaded: IndexDep) -> EvalExampleList:
    """The example images stored with an evaluation, with the URLs of their predicted and true maps."""
    items = [
        EvalExample(
            image_id=i,
            pred_url=f"/api/eval/{eval_id}/examples/{i}.png?kind=pred",
            gt_url=f"/api/eval/{eval_id}/examples/{i}.png?kind=gt",
        )
        for i, _, _ in _examples(loaded, eval_id)
    ]
    return EvalExampleList(eval_id=eval_id, items=items)


@router.get(
    "/eval/{eval_id}/examples/{image_id}.png",
    response_class=Response,
    responses=ERRORS | {200: {"content": {"image/png": {}}}},
)
def get_example(
    eval_id: EvalId,
    image_id: Annotated[int, Path(ge=0, le=MAX_ID)],
    loaded: IndexDep,
    kind: Literal["pred", "gt"] = "pred",
) -> Response:
    """An example's predicted (Hungarian-matched) or ground-truth class map as a palette PNG."""
    for i, pred, gt in _examples(loaded, eval_id):
        if i == image_id:
            return Response(pred if kind == "pred" else gt, media_type="image/png")
    raise not_found("example image", image_id)
