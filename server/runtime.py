"""What the server holds while it runs (``app.state.runtime``): the model, the active index, the
jobs supervisor, the upload slots and caches. Loaded once in the lifespan; the index can be swapped
without a restart, all or nothing: a new index is opened and validated whole (:mod:`indexer.validate`),
its checkpoint hashed and loaded and its K and D compared, before the swap; on any failure the old
index and model stay active and the error is a typed 400 (a broken index) or 409 (an index that does
not match its checkpoint). At start-up the same failure is a one-line :class:`StartupError`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.checkpoint import CheckpointError
from core.infer_model import inference_model_for
from server.errors import ApiError
from server.exposure import StartupError
from server.guard import Budget, cancel_flag, slot
from server.services.digests import content_sha256, file_key
from server.services.folders import check_index_dir, inside
from server.services.image_structure import StructureLimits
from server.services.names import ServerPaths
from server.settings import Settings

logger = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@dataclass
class LoadedModel:
    """A model ready for inference with the file it came from."""

    model: torch.nn.Module  # core.infer_model.InferenceModel (or the full SlotCon with SLOTCON_INFER=plain)
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

    def __init__(self, settings: Settings, exposed: bool = False, paths: ServerPaths | None = None) -> None:
        self.settings = settings
        self.paths = paths or ServerPaths.for_settings(settings)  # how answers name server paths
        self.exposed = exposed or settings.exposed
        self.device = pick_device(settings.device)
        self.model: LoadedModel | None = None
        self.index: LoadedIndex | None = None
        self.index_error: str | None = None
        self.model_lock = threading.Lock()  # one forward at a time: torch already uses every core
        self.upload_slots = threading.BoundedSemaphore(settings.upload_concurrency)
        self.work_slots = threading.BoundedSemaphore(settings.work_concurrency)
        self.render_slots = threading.BoundedSemaphore(settings.render_concurrency)
        self.stopping = threading.Event()  # set on SIGTERM/SIGINT: work in flight stops at its next check
        self._swap_lock = threading.Lock()
        self._activate_lock = threading.Lock()
        self.cache: dict[str, Any] = {}
        self._trusted_checkpoints: set[str] = set()
        self.supervisor: Any = None  # server.services.jobs.Supervisor, set by the app

    # ------------------------------------------------------------------ loading
    def load(self) -> None:
        """Load the configured index (and its checkpoint's model) or the configured checkpoint alone.

        Raises :class:`StartupError` (one line) when either is configured and cannot be served.
        """
        if self.settings.index is not None:
            try:
                self.activate(self.settings.index, trusted=True)
            except ApiError as e:
                raise StartupError(f"cannot serve the configured index: {e.message}") from None
        elif self.settings.checkpoint is not None:
            path = Path(self.settings.checkpoint)
            try:
                self.model = self._load_model(path, content_sha256(path))
            except (CheckpointError, OSError, RuntimeError, ApiError) as e:
                why = e.message if isinstance(e, ApiError) else str(e).replace(str(path), path.name)
                raise StartupError(f"checkpoint {path.name!r} not loaded: {why}") from None

    def _load_model(self, path: Path, sha: str) -> LoadedModel:
        """The model in ``path`` whose bytes hash to ``sha`` (the current one when it is that file)."""
        if self.model is not None and self.model.sha256 == sha:
            return self.model
        before = file_key(path)
        model = inference_model_for(path, self.device)  # fused; SLOTCON_INFER=plain for the full model
        if file_key(path) != before or content_sha256(path) != sha:
            raise ApiError(409, "checkpoint_changed", f"checkpoint {_ident(path)} changed while it was loaded; retry")
        logger.info(
            "loaded %s (%s, K=%d) on %s", path.name, model.config.arch, model.config.num_prototypes, self.device
        )
        return LoadedModel(model, path, sha)

    def _model_for(self, index: Any, name: str, trusted: bool = False) -> LoadedModel:
        """The model an index was built from, verified by the content hash of the file, K and D (409).

        The file a manifest names is opened only inside the allowed places (:meth:`checkpoint_allowed`;
        ``trusted``: the index the operator configured, whose checkpoint is allowed from then on), so an
        index cannot make the server hash, or say whether there is, a file anywhere else (409
        ``checkpoint_outside``)."""
        manifest = index.manifest
        built = manifest.checkpoint.sha256
        configured = self.settings.checkpoint
        path = Path(configured) if configured is not None else Path(manifest.checkpoint.path)
        if trusted and configured is None:
            self._trusted_checkpoints.add(str(path.resolve()))
        if not self.checkpoint_allowed(path):
            raise ApiError(
                409, "checkpoint_outside",
                f"index {name!r} names checkpoint {_ident(path)}, which is outside the runs folder "
                "(SLOTCON_RUNS_DIR): copy it there and rebuild the index, or point SLOTCON_CHECKPOINT at it",
            )  # fmt: skip
        rebuild = (
            f'rebuild the index from it (POST /api/jobs/index with {{"checkpoint": "{_ident(path)}"}}, '
            f"or slotcon index --checkpoint {_ident(path)} --out <new index>)"
        )
        if not path.is_file():
            raise ApiError(
                409, "checkpoint_missing",
                f"index {name!r} was built from checkpoint {_ident(path)} (sha256 {built[:12]}…), which is not "
                "on this server: restore that file, or point SLOTCON_CHECKPOINT at a copy of it",
            )  # fmt: skip
        try:
            sha = content_sha256(path)
        except (OSError, RuntimeError) as e:
            raise ApiError(409, "checkpoint_unreadable", f"checkpoint {_ident(path)} cannot be hashed: {e}") from e
        if sha != built:
            raise ApiError(
                409, "index_mismatch",
                f"index {name!r} was built from checkpoint sha256 {built[:12]}…, but {_ident(path)} now holds "
                f"sha256 {sha[:12]}… (overwritten since, e.g. by a resumed run, or another model): {rebuild}",
            )  # fmt: skip
        try:
            loaded = self._load_model(path, sha)
        except CheckpointError as e:
            why = str(e).replace(str(path), _ident(path))
            raise ApiError(409, "checkpoint_unreadable", f"checkpoint {_ident(path)} cannot be loaded: {why}") from e
        cfg, k, d = loaded.model.config, manifest.num_prototypes, manifest.dim
        if (cfg.num_prototypes, cfg.dim_out) != (k, d):
            raise ApiError(
                409, "index_mismatch",
                f"index {name!r} has K = {k}, D = {d} but its checkpoint {_ident(path)} has K = "
                f"{cfg.num_prototypes}, D = {cfg.dim_out}: {rebuild}",
            )  # fmt: skip
        return loaded

    def checkpoint_allowed(self, path: Path) -> bool:
        """True for a checkpoint the server may open: under ``runs_dir``, the configured checkpoint, or that
        of the index configured at start-up (compared resolved: a symlink out of the runs folder is outside)."""
        resolved = str(Path(path).resolve())
        configured = self.settings.checkpoint
        if configured is not None and resolved == str(Path(configured).resolve()):
            return True
        return resolved in self._trusted_checkpoints or inside(Path(resolved), self.settings.runs_dir)

    def activate(self, index_dir: Path, trusted: bool = False) -> LoadedIndex:
        """Open and fully validate ``index_dir`` and its checkpoint, then make them active at once.

        Raises :class:`ApiError` 400 ``bad_index`` (missing, malformed or inconsistent files) or 409
        (``index_mismatch``, ``checkpoint_missing``, ``checkpoint_unreadable``: the index does not
        match the checkpoint it names); either way the previous index and model stay active.
        """
        from indexer.store import IndexMismatchError
        from indexer.validate import IndexInvalidError, open_validated

        index_dir = Path(index_dir)
        with self._activate_lock:
            # lstat every entry first: a FIFO would block the open, a symlink lead out of the folder
            check_index_dir(index_dir.resolve() if trusted else index_dir, index_dir.name)
            try:
                index = open_validated(index_dir)
            except IndexMismatchError as e:
                raise ApiError(409, "index_mismatch", str(e)) from e
            except IndexInvalidError as e:
                raise ApiError(400, "bad_index", str(e)) from e
            try:
                model = self._model_for(index, index_dir.name, trusted)
            except BaseException:
                index.close()
                raise
            loaded = LoadedIndex(index, index_dir)
            self.paths.add(index_dir.parent, model.path.parent.parent)
            with self._swap_lock:
                self.index, self.model, self.index_error = loaded, model, None
                self.cache.clear()
        # The previous index is not closed here: requests still running on it finish undisturbed,
        # and its SQLite connection closes when the last reference goes.
        logger.info("active index: %s (%d images)", index_dir, index.num_images)
        return loaded

    def require_model_file(self, model: LoadedModel) -> Path:
        """The loaded model's file, when its bytes are still the ones loaded (a job would reload it); else 409."""
        try:
            same = content_sha256(model.path) == model.sha256
        except (OSError, RuntimeError):
            same = False
        if not same:
            raise ApiError(
                409, "checkpoint_changed",
                f"checkpoint {_ident(model.path)} is no longer the file the server loaded "
                f"(sha256 {model.sha256[:12]}…); activate an index built from the new file first",
            )  # fmt: skip
        return model.path

    @contextmanager
    def upload_slot(self, budget: Budget | None = None) -> Iterator[None]:
        """Hold one of the ``upload_concurrency`` slots for a decode + analysis (503 ``busy`` after
        ``upload_queue_s`` seconds of waiting; a waiting request whose ``budget`` says stop stops waiting)."""
        s = self.settings
        with slot(self.upload_slots, s.upload_queue_s, f"uploads (all {s.upload_concurrency})", budget):
            yield

    @contextmanager
    def work_slot(self, budget: Budget) -> Iterator[None]:
        """Hold one of the ``work_concurrency`` slots for an expensive read (a figure, a comparison, a named
        index opened): 503 ``busy`` when none frees up within ``work_timeout_s``."""
        s = self.settings
        with slot(self.work_slots, s.work_timeout_s, f"{budget.what} (all {s.work_concurrency})", budget):
            yield

    @contextmanager
    def render_slot(self, scope: Any, what: str) -> Iterator[None]:
        """Hold one of the ``render_concurrency`` slots while a dataset image is decoded and drawn (503
        ``busy`` after ``work_timeout_s`` of waiting; a client that leaves stops waiting), so a burst
        decodes a bounded number of images at once."""
        s = self.settings
        budget = self.budget(scope, what)
        with slot(self.render_slots, s.work_timeout_s, f"rendering (all {s.render_concurrency})", budget):
            budget.check_stop()
            yield

    def budget(self, scope: Any, what: str, seconds: float | None = None) -> Budget:
        """A :class:`Budget` for work done for the request of ``scope``: its client's cancellation flag,
        the server's stopping flag and a deadline of ``seconds`` (default ``work_timeout_s``)."""
        seconds = self.settings.work_timeout_s if seconds is None else seconds
        return Budget(what, seconds, cancel_flag(scope), self.stopping)

    @property
    def structure_limits(self) -> StructureLimits:
        """The most an upload's file may hold (scans, frames, chunks), from the settings."""
        s = self.settings
        return StructureLimits(scans=s.max_jpeg_scans, frames=s.max_image_frames, chunks=s.max_image_chunks)

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


def _ident(path: Path) -> str:
    """``<run>/<file>`` of a checkpoint (what the API names it by; never the full path)."""
    return f"{path.parent.name}/{path.name}"
