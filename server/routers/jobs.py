"""Jobs: training, indexing (and evaluation, see :mod:`server.routers.evaluation`) as child processes."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from server.deps import Authorized, SettingsDep, SupervisorDep
from server.errors import ApiError
from server.schemas import MAX_ID, ErrorBody, IndexRequest, Job, JobList, JobLog, MetricsPage, TrainRequest
from server.services.jobview import job_log, job_view
from server.services.launch import start_index, start_train

router = APIRouter(prefix="/jobs", tags=["jobs"])
ERRORS = {code: {"model": ErrorBody} for code in (401, 404, 409, 422)}
JobId = Annotated[int, Path(ge=0, le=MAX_ID)]


@router.post("/train", status_code=201, dependencies=[Authorized], responses=ERRORS)
def create_train_job(req: TrainRequest, settings: SettingsDep, jobs: SupervisorDep) -> Job:
    """Start a training run (one at a time: a second gets 409). Output: ``<runs_dir>/<name>``."""
    return job_view(start_train(settings, jobs, req), jobs.metrics)


@router.post("/index", status_code=201, dependencies=[Authorized], responses=ERRORS)
def create_index_job(req: IndexRequest, settings: SettingsDep, jobs: SupervisorDep) -> Job:
    """Index a run's checkpoint over the configured dataset. Output: ``<indexes_dir>/<name>``."""
    return job_view(start_index(settings, jobs, req), jobs.metrics)


@router.get("")
def list_jobs(
    jobs: SupervisorDep,
    kind: Literal["train", "index", "eval"] | None = None,
    status: Literal["running", "stopping", "succeeded", "failed", "stopped"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JobList:
    """Jobs, newest first."""
    jobs.refresh()
    return JobList(items=[job_view(r, jobs.metrics) for r in jobs.store.list(kind, status, limit)])


@router.get("/{job_id}", responses=ERRORS)
def get_job(job_id: JobId, jobs: SupervisorDep) -> Job:
    """Status, progress fraction, ETA and the latest metrics of one job."""
    return job_view(jobs.get(job_id), jobs.metrics)


@router.get("/{job_id}/metrics", responses=ERRORS)
def get_job_metrics(
    job_id: JobId,
    jobs: SupervisorDep,
    since: Annotated[int | None, Query(ge=-1, le=MAX_ID, description="only records with step > since")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> MetricsPage:
    """The training metrics history (for live curves); poll with ``since=<last_step>``."""
    row = jobs.get(job_id)
    if row.kind != "train":
        raise ApiError(422, "invalid_request", f"job {job_id} is a {row.kind} job; only training jobs have metrics")
    items = jobs.metrics.since(row.progress_path, since, limit)
    last = items[-1].get("step") if items else since
    return MetricsPage(job_id=job_id, items=items, last_step=last, event=jobs.metrics.final_event(row.progress_path))


@router.get("/{job_id}/log", dependencies=[Authorized], responses=ERRORS)
def get_job_log(
    job_id: JobId,
    jobs: SupervisorDep,
    tail_bytes: Annotated[int, Query(ge=1, le=4 * 1024 * 1024)] = 64 * 1024,
) -> JobLog:
    """The tail of the job's combined stdout/stderr (needs the token when one is set)."""
    return job_log(jobs.get(job_id), tail_bytes)


@router.delete("/{job_id}", status_code=202, dependencies=[Authorized], responses=ERRORS)
def stop_job(job_id: JobId, jobs: SupervisorDep) -> Job:
    """Stop a running job: SIGTERM (the trainer saves ``current.pth`` and exits). 409 if not running."""
    return job_view(jobs.stop(job_id), jobs.metrics)
