"""The ASGI app: :func:`create_app` wires settings, the lifespan (exposure decided from the bound
socket, then model, index and jobs loaded once into ``app.state.runtime``), middleware (exposure and
Host check, upload limit, CORS), typed errors and the routers under /api.

    uvicorn --factory server.app:create_app      # or: slotcon serve

Whatever the launcher, a server that binds beyond loopback without ``SLOTCON_API_TOKEN`` refuses to
start (see :mod:`server.exposure`), and one whose configured index or checkpoint cannot be served
exits with a one-line error (uvicorn's exit code 3).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from server import __version__
from server.errors import ApiError, install_error_handlers
from server.exposure import LOCAL_HOSTS, Exposure, ExposureMiddleware, StartupErrorMiddleware, decide_exposure
from server.guard import CrossSiteMiddleware, DisconnectMiddleware
from server.routers import ROUTERS
from server.runtime import Runtime
from server.services.jobs import Supervisor
from server.services.jobstore import JobRow, JobStore
from server.services.memory import Activity, IdleTrimmer
from server.services.names import PathScrubMiddleware, ServerPaths
from server.services.uploads import MULTIPART_OVERHEAD, BodyLimitMiddleware, mmap_large_allocations
from server.settings import Settings, get_settings

logger = logging.getLogger(__name__)
JSON_BODY_LIMIT = 1024 * 1024
UPLOAD_PATHS = frozenset({"/api/slots"})


def _on_job_finished(runtime: Runtime, row: JobRow) -> None:
    """An index job that asked for it (``make_default``, or its earlier name ``activate``) becomes the default
    index as soon as it succeeds (also when it is settled after a restart); the job's message says whether
    it did, and why not. Other index jobs leave the default as it is."""
    if row.kind != "index" or not (row.config.get("make_default") or row.config.get("activate")):
        return
    if row.status != "succeeded":
        note = f"not made the default: the job {row.status}"
    else:
        try:
            runtime.make_default(Path(row.output_dir).name, f"index job {row.id} (make_default)")
            note = f"made {row.name!r} the default index"
        except ApiError as e:
            note = f"not made the default (the previous default stays): {e.message}"
            logger.error("index job %s: %s %s", row.id, row.name, note)
    if runtime.supervisor is not None:
        runtime.supervisor.store.update(row.id, message="; ".join(m for m in (row.message, note) if m))


def stop_on_signals(stopping: threading.Event) -> Callable[[], None]:
    """Have SIGTERM and SIGINT also set ``stopping`` (work in flight checks it and stops) before the
    handler already installed (the server's own: uvicorn's graceful shutdown) runs; returns what restores
    the previous handlers. Does nothing outside the main thread, where signals cannot be handled."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handle(sig: int, frame: FrameType | None) -> None:
        stopping.set()
        before = previous[sig]
        if callable(before):
            before(sig, frame)
        elif before != signal.SIG_IGN:  # the default action, as if we had never been here
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)

    for sig in previous:
        signal.signal(sig, handle)

    def restore() -> None:
        if threading.current_thread() is threading.main_thread():
            for sig, before in previous.items():
                if signal.getsignal(sig) is handle:
                    signal.signal(sig, before)

    return restore


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Raises ``RuntimeError`` when configured to listen beyond loopback without a token;
    its lifespan raises :class:`server.exposure.StartupError` when the socket it is served on is."""
    settings = settings or get_settings()
    settings.check_exposure()
    mmap_large_allocations()  # decoded uploads go back to the system when freed (per-upload bound)
    exposure = Exposure(exposed=settings.exposed)
    paths = ServerPaths.for_settings(settings)
    activity = Activity()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        exposure.exposed = decide_exposure(settings)
        runtime = Runtime(settings, exposed=exposure.exposed, paths=paths)
        restore = stop_on_signals(runtime.stopping)
        runtime.load()
        store = JobStore(settings.state_dir / "jobs.db")
        runtime.supervisor = Supervisor(store, settings.job_poll_s, lambda row: _on_job_finished(runtime, row))
        runtime.supervisor.start()
        app.state.runtime = runtime
        trimmer = IdleTrimmer(activity).start()  # freed request memory back to the system after bursts
        try:
            yield
        finally:
            runtime.stopping.set()
            trimmer.close()
            runtime.close()
            restore()

    app = FastAPI(
        title="SlotCon Explorer API",
        version=__version__,
        description="Concept retrieval, image slots, slot statistics, unsupervised segmentation and "
        'training/indexing jobs for SlotCon (NeurIPS 2022). Errors: `{"error": {"code", "message"}}`.',
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(PathScrubMiddleware, paths=paths)  # innermost: it sees every answer and error
    upload_limit = settings.max_upload_bytes + MULTIPART_OVERHEAD
    app.add_middleware(
        BodyLimitMiddleware, limit_for=lambda path: upload_limit if path in UPLOAD_PATHS else JSON_BODY_LIMIT
    )
    app.add_middleware(DisconnectMiddleware, activity=activity)  # outside the body limit: it reads through it
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "PUT", "DELETE"],
        allow_headers=["Authorization", "Content-Type"],
    )
    app.add_middleware(CrossSiteMiddleware, trusted_origins=settings.cors_origins)
    app.add_middleware(
        ExposureMiddleware, settings=settings, state=exposure, allowed_hosts=[*LOCAL_HOSTS, *settings.allowed_hosts]
    )
    app.add_middleware(StartupErrorMiddleware)
    for router in ROUTERS:
        app.include_router(router, prefix="/api")
    app.openapi = lambda: _openapi_with_our_errors(app)  # type: ignore[method-assign]
    return app


def _openapi_with_our_errors(app: FastAPI) -> dict:
    """The OpenAPI schema, with FastAPI's default 422 body (``{"detail": [...]}``) replaced by the one
    the error handlers really send (``ErrorBody``), so the schema describes every answer truthfully."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        ours, theirs = "#/components/schemas/ErrorBody", "#/components/schemas/HTTPValidationError"

        def swap(node: object) -> None:
            if isinstance(node, dict):
                if node.get("$ref") == theirs:
                    node["$ref"] = ours
                for value in node.values():
                    swap(value)
            elif isinstance(node, list):
                for value in node:
                    swap(value)

        swap(spec["paths"])
        for name in ("HTTPValidationError", "ValidationError"):
            spec["components"]["schemas"].pop(name, None)
        app.openapi_schema = spec
    return app.openapi_schema
