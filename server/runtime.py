"""What the server holds while it runs (``app.state.runtime``): the model, the active index, the
jobs supervisor and caches. Loaded once in the lifespan; the index can be swapped without a restart.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.checkpoint import CheckpointError, file_sha256, load_model
from core.model import SlotCon
from server.errors import ApiError
from server.settings import Settings

logger = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def manifest_checkpoint(manifest: dict[str, Any]) -> tuple[Path | None, str | None]:
    """(checkpoint path, sha256) named by an index manifest."""
    ck = manifest.get("checkpoint")
    if isinstance(ck, dict):
        path, sha = ck.get("path"), ck.get("sha256")
    else:
        path, sha = ck, manifest.get("checkpoint_sha256")
    return (Path(path) if path else None), sha


@dataclass
class LoadedModel:
    """A model ready for inference with the file it came from."""

    model: SlotCon
    path: Path
    sha256: str


@dataclass
class LoadedIndex:
    """An open :class:`indexer.store.ConceptIndex` and where it lives."""

    index: Any  # indexer.store.ConceptIndex (imported lazily: the server starts without an index)
    path: Path

    @property
    def name(self) -> str:
        """The directory's name (what the API shows instead of a path)."""
        return self.path.name


class Runtime:
    """Heavy, shared state. Readers take a snapshot (:meth:`current`); :meth:`activate` swaps atomically."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device = pick_device(settings.device)
        self.model: LoadedModel | None = None
        self.index: LoadedIndex | None = None
        self.index_error: str | None = None
        self.model_lock = threading.Lock()  # one forward at a time: torch already uses every core
        self._swap_lock = threading.Lock()
        self.cache: dict[str, Any] = {}
        self.supervisor: Any = None  # server.services.jobs.Supervisor, set by the app

    # ------------------------------------------------------------------ loading
    def load(self) -> None:
        """Load the configured index (and its checkpoint's model) or the configured checkpoint alone.

        A broken index does not stop the server: health reports ``index_error``.
        """
        if self.settings.index is not None:
            try:
                self.activate(self.settings.index)
            except ApiError as e:
                self.index_error = e.message
                logger.error("index not loaded: %s", e.message)
        if self.model is None and self.settings.checkpoint is not None:
            try:
                self.model = self._load_model(Path(self.settings.checkpoint))
            except CheckpointError as e:
                logger.error("checkpoint not loaded: %s", e)

    def _load_model(self, path: Path, sha: str | None = None) -> LoadedModel:
        sha = sha or file_sha256(path)
        if self.model is not None and self.model.sha256 == sha:
            return self.model
        model = load_model(path, self.device)
        logger.info(
            "loaded %s (%s, K=%d) on %s", path.name, model.config.arch, model.config.num_prototypes, self.device
        )
        return LoadedModel(model, path, sha)

    def activate(self, index_dir: Path) -> LoadedIndex:
        """Open ``index_dir`` (and the model it was built from), then make it the active index.

        Raises a 400 :class:`ApiError` for a missing or inconsistent index; the old one stays active.
        """
        from indexer.store import ConceptIndex, IndexMismatchError

        index_dir = Path(index_dir)
        expected = None
        if self.settings.checkpoint is not None and Path(self.settings.checkpoint).is_file():
            expected = file_sha256(self.settings.checkpoint)
        try:
            index = ConceptIndex.open(index_dir, expected_checkpoint_sha=expected)
        except IndexMismatchError as e:
            raise ApiError(400, "index_mismatch", str(e)) from e
        except (FileNotFoundError, OSError, ValueError, KeyError) as e:
            raise ApiError(400, "bad_index", f"cannot open index {index_dir.name!r}: {e}") from e
        model = self.model
        ck_path, ck_sha = manifest_checkpoint(index.manifest)
        if self.settings.checkpoint is not None:
            ck_path = Path(self.settings.checkpoint)
        if ck_path is not None and ck_path.is_file():
            try:
                model = self._load_model(ck_path, ck_sha if ck_path != self.settings.checkpoint else None)
            except CheckpointError as e:
                logger.error("the index's checkpoint cannot be loaded (uploads disabled): %s", e)
                model = None
        else:
            logger.warning("the index's checkpoint %s is not available: uploads are disabled", ck_path)
            model = None
        loaded = LoadedIndex(index, index_dir)
        with self._swap_lock:
            self.index, self.model, self.index_error = loaded, model, None
            self.cache.clear()
        # The previous index is not closed here: requests still running on it finish undisturbed,
        # and its SQLite connection closes when the last reference goes.
        logger.info("active index: %s (%d images)", index_dir, index.num_images)
        return loaded

    # ------------------------------------------------------------------ access
    def require_index(self) -> LoadedIndex:
        """The active index, or a 503 ``no_index``."""
        current = self.index
        if current is None:
            why = f" ({self.index_error})" if self.index_error else ""
            raise ApiError(
                503,
                "no_index",
                f"no index is loaded: build one (POST /api/jobs/index) and activate it (POST /api/index/activate){why}",
            )
        return current

    def require_model(self) -> LoadedModel:
        """The model for uploads, or a 503 ``no_model``."""
        current = self.model
        if current is None:
            raise ApiError(
                503,
                "no_model",
                "no model is loaded: configure SLOTCON_CHECKPOINT or load an index whose checkpoint is available",
            )
        return current

    def close(self) -> None:
        """Release the index (jobs keep running)."""
        if self.supervisor is not None:
            self.supervisor.close()
        if self.index is not None:
            close = getattr(self.index.index, "close", None)
            if callable(close):
                close()
