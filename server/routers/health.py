"""``GET /api/health``: version, device, loaded checkpoint and index."""

from __future__ import annotations

from fastapi import APIRouter

from server import __version__
from server.deps import RuntimeDep
from server.runtime import LoadedIndex
from server.schemas import CheckpointInfo, Health, IndexInfo

router = APIRouter(tags=["health"])


def index_info(loaded: LoadedIndex) -> IndexInfo:
    """The :class:`IndexInfo` of an open index (names and counts, no paths)."""
    index, m = loaded.index, loaded.index.manifest
    return IndexInfo(
        name=loaded.name, build=loaded.build, checkpoint_sha256=index.checkpoint_sha256, num_images=index.num_images,
        num_segments=index.num_segments, num_prototypes=index.num_prototypes, dim=index.dim, split=index.split,
        resize=m.resize, crop=m.crop, built_at=m.built_at, spaces=list(index.spaces),
    )  # fmt: skip


@router.get("/health")
def health(runtime: RuntimeDep) -> Health:
    """Liveness plus what is loaded: the model for uploads, the active index (or why there is none)."""
    model, loaded = runtime.model, runtime.index
    checkpoint = None
    if model is not None:
        cfg = model.model.config
        checkpoint = CheckpointInfo(
            name=model.path.name, sha256=model.sha256, arch=cfg.arch, num_prototypes=cfg.num_prototypes
        )
    running = len(runtime.supervisor.store.active()) if runtime.supervisor is not None else 0
    token = runtime.settings.api_token
    return Health(
        version=__version__, device=str(runtime.device), checkpoint=checkpoint,
        index=index_info(loaded) if loaded is not None else None, index_error=runtime.index_error,
        running_jobs=running, auth_required=bool(token and token.get_secret_value()),
    )  # fmt: skip
