"""One ``APIRouter`` per resource; :data:`ROUTERS` is what :func:`server.app.create_app` mounts under /api."""

from __future__ import annotations

from server.routers import (
    checkpoints,
    compare,
    evaluation,
    health,
    images,
    indexes,
    jobs,
    options,
    prototypes,
    segments,
    slots,
)

ROUTERS = [
    health.router,
    options.router,
    prototypes.router,
    segments.router,
    images.router,
    slots.router,
    evaluation.router,
    jobs.router,
    checkpoints.router,
    compare.router,
    indexes.router,
]

__all__ = ["ROUTERS"]
