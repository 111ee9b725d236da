"""The ASGI app: :func:`create_app` wires settings, the lifespan (model, index and jobs loaded once
into ``app.state.runtime``), middleware (upload limit, CORS), typed errors and the routers under /api.

    uvicorn --factory server.app:create_app      # or: slotcon serve
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from server import __version__
from server.errors import install_error_handlers
from server.routers import ROUTERS
from server.runtime import Runtime
from server.services.jobs import Supervisor
from server.services.jobstore import JobRow, JobStore
from server.services.uploads import MULTIPART_OVERHEAD, BodyLimitMiddleware
from server.settings import Settings, get_settings

logger = logging.getLogger(__name__)
JSON_BODY_LIMIT = 1024 * 1024
UPLOAD_PATHS = frozenset({"/api/slots"})


def _on_job_finished(runtime: Runtime, row: JobRow) -> None:
    """An index job that asked for it becomes the active index as soon as it succeeds."""
    if row.kind == "index" and row.status == "succeeded" and row.config.get("activate"):
        logger.info("index job %s finished: activating %s", row.id, row.name)
        runtime.activate(Path(row.output_dir))


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Raises ``RuntimeError`` when configured to listen beyond loopback without a token."""
    settings = settings or get_settings()
    settings.check_exposure()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings)
        runtime.load()
        store = JobStore(settings.state_dir / "jobs.db")
        runtime.supervisor = Supervisor(store, settings.job_poll_s, lambda row: _on_job_finished(runtime, row))
        runtime.supervisor.start()
        app.state.runtime = runtime
        try:
            yield
        finally:
            runtime.close()

    app = FastAPI(
        title="SlotCon Explorer API",
        version=__version__,
        description="Concept retrieval, image slots, slot statistics, unsupervised segmentation and "
        'training/indexing jobs for SlotCon (NeurIPS 2022). Errors: `{"error": {"code", "message"}}`.',
        lifespan=lifespan,
    )
    install_error_handlers(app)
    upload_limit = settings.max_upload_bytes + MULTIPART_OVERHEAD
    app.add_middleware(
        BodyLimitMiddleware, limit_for=lambda path: upload_limit if path in UPLOAD_PATHS else JSON_BODY_LIMIT
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "PUT", "DELETE"],
        allow_headers=["Authorization", "Content-Type"],
    )
    for router in ROUTERS:
        app.include_router(router, prefix="/api")
    return app
