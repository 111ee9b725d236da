"""Checkpoints in the configured runs directory, and switching the active index."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from server.deps import Authorized, RuntimeDep, SupervisorDep
from server.errors import ApiError
from server.routers.health import index_info
from server.schemas import ActivateRequest, CheckpointList, ErrorBody, IndexInfo
from server.services.checkpoints import list_checkpoints

router = APIRouter(tags=["checkpoints"])
ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 409, 422)}


@router.get("/checkpoints", dependencies=[Authorized], responses={401: {"model": ErrorBody}})
def get_checkpoints(runtime: RuntimeDep) -> CheckpointList:
    """Checkpoints under the runs directory (id ``<run>/<file>``, epoch, step, config), newest first.

    Needs the token when one is set (training configs name server-side locations, shown as names only).
    """
    return CheckpointList(items=list_checkpoints(runtime))


@router.post("/index/activate", dependencies=[Authorized], responses=ERRORS)
def activate_index(body: ActivateRequest, runtime: RuntimeDep, jobs: SupervisorDep) -> IndexInfo:
    """Make another index the default without a restart (as ``PUT /api/indexes/default``, stored and logged):
    a succeeded index job's, or an index by name."""
    if body.job_id is not None:
        row = jobs.get(body.job_id)
        if row.kind != "index":
            raise ApiError(422, "invalid_request", f"job {row.id} is a {row.kind} job, not an index job")
        if row.status != "succeeded":
            raise ApiError(409, "job_not_finished", f"index job {row.id} is {row.status}, not succeeded")
        name = Path(row.output_dir).name
    else:
        name = str(body.name)
    return index_info(runtime.make_default(name, "POST /api/index/activate"))
