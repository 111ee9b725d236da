"""What the server holds while it runs (``app.state.runtime``): the model, the default index, the
named indexes opened on demand (a bounded least-recently-used cache, each with its model once a route
needs it), the jobs supervisor, the upload slots and caches. Loaded once in the lifespan; the default
index is chosen by ``--index``, then ``SLOTCON_INDEX``, then the default stored in the state database
(:mod:`server.services.state`), and can be swapped without a restart, all or nothing: a new index is
opened and validated whole (:mod:`indexer.validate`), its checkpoint hashed and loaded and its K and D
compared, before the swap; on any failure the old index and model stay active and the error is a typed
400 (a broken index) or 409 (an index that does not match its checkpoint). At start-up the same failure
is a one-line :class:`StartupError`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.checkpoint import CheckpointError
from core.infer_model import inference_model_for
from server.errors import ApiError, not_found
from server.exposure import StartupError
from server.guard import Budget, cancel_flag, slot
from server.services.digests import content_sha256, file_key
from server.services.folders import check_index_dir, inside, is_real_dir, is_regular_file
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

    model: torch.nn.Module  # core.infer_model.InferenceModel (the full SlotCon with SLOTCON_INFER=plain)
    path: Path
    sha256: str


@dataclass
class LoadedIndex:
    """An open :class:`indexer.store.ConceptIndex` and where it lives."""

    index: Any  # indexer.store.ConceptIndex (imported lazily: the server starts without an index)
    path: Path
    build: str = field(default="")
    model: LoadedModel | None = None  # the index's model, once a route needed it (named indexes)

    def __post_init__(self) -> None:
        if not self.build:
            self.build = build_id(self.path)

    @property
    def name(self) -> str:
        """The directory's name (what the API shows instead of a path)."""
        return self.path.name

    def nbytes(self) -> int:
        """What the open index holds in memory, estimated from its files (FAISS vectors, SQLite pages) plus
        its model's tensors when loaded: the measure of the named-index cache's memory cap."""
        total = 0
        for entry in os.scandir(self.path):
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
        if self.model is not None:
            total += sum(t.numel() * t.element_size() for t in self.model.model.state_dict().values())
        return total


def build_id(index_dir: Path) -> str:
    """The build id of an index directory: the first 16 hex digits of the sha256 of its ``manifest.json``
    bytes (a rebuild under the same name writes another manifest: its build time at least); "" when the
    manifest cannot be read."""
    try:
        return hashlib.sha256((Path(index_dir) / "manifest.json").read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


class IndexCache:
    """Named indexes opened on demand, least recently used first out: at most ``entries`` of them and, as
    estimated by :meth:`LoadedIndex.nbytes`, at most ``max_bytes`` together (the newest one is always kept).
    An evicted index is not closed: requests still reading it finish, and it closes with its last reference."""

    def __init__(self, entries: int, max_bytes: int) -> None:
        self.entries, self.max_bytes = entries, max_bytes
        self._items: OrderedDict[str, tuple[tuple[int, int], LoadedIndex, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, stamp: tuple[int, int]) -> LoadedIndex | None:
        """The cached index of that name whose manifest still has ``stamp`` (mtime, size), else None."""
        with self._lock:
            item = self._items.get(name)
            if item is None or item[0] != stamp:
                return None
            self._items.move_to_end(name)
            return item[1]

    def put(self, name: str, stamp: tuple[int, int], loaded: LoadedIndex) -> None:
        """Cache ``loaded`` (replacing an earlier build of the name) and evict down to the bounds."""
        size = loaded.nbytes()
        with self._lock:
            self._items[name] = (stamp, loaded, size)
            self._items.move_to_end(name)
            self._evict()

    def resize(self, loaded: LoadedIndex) -> None:
        """Re-measure ``loaded`` (its model was just loaded) and evict down to the bounds."""
        size = loaded.nbytes()
        with self._lock:
            item = self._items.get(loaded.name)
            if item is not None and item[1] is loaded:
                self._items[loaded.name] = (item[0], loaded, size)
            self._evict()

    def peek(self, name: str) -> LoadedIndex | None:
        """The cached index of that name (whatever its build), without touching its recency."""
        with self._lock:
            item = self._items.get(name)
            return None if item is None else item[1]

    def drop(self, name: str) -> None:
        """Forget the index of that name (renamed or deleted)."""
        with self._lock:
            self._items.pop(name, None)

    def names(self) -> list[str]:
        """The cached names, least recently used first."""
        with self._lock:
            return list(self._items)

    def _evict(self) -> None:
        while len(self._items) > 1 and (
            len(self._items) > self.entries or sum(i[2] for i in self._items.values()) > self.max_bytes
        ):
            name, _ = self._items.popitem(last=False)
            logger.info("named index %s left the cache (least recently used)", name)


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
        self.indexes = IndexCache(settings.index_cache_entries, settings.index_cache_mb * 1024 * 1024)
        self._open_lock = threading.Lock()
        self._state: Any = None  # server.services.state.StateStore, opened on first use
        self._names: Any = None  # server.services.concept_names.NameStore, opened on first use
        self.default_source: str | None = None  # what chose the default index (logged at start-up)
        self._trusted_checkpoints: set[str] = set()
        self.supervisor: Any = None  # server.services.jobs.Supervisor, set by the app

    # ------------------------------------------------------------------ loading
    def load(self) -> None:
        """Load the default index (and its checkpoint's model), or the configured checkpoint alone.

        The default index is, in this order: the configured one (``--index``, else ``SLOTCON_INDEX``),
        else the one stored in the state database; the log says which won. Raises :class:`StartupError`
        (one line) when a configured index or checkpoint cannot be served; a stored default that cannot
        be served leaves the server without an index (``index_error`` says why).
        """
        from server.services.state import DEFAULT_INDEX

        stored = self.state.get(DEFAULT_INDEX)
        if self.settings.index is not None:
            self.default_source = self.settings.index_source
            try:
                loaded = self.activate(self.settings.index, trusted=True)
            except ApiError as e:
                raise StartupError(f"cannot serve the configured index: {e.message}") from None
            ignored = f" (the stored default {stored!r} is not used)" if stored and stored != loaded.name else ""
            logger.info("default index: %s, from %s%s", loaded.name, self.default_source, ignored)
            if stored is None and self._in_indexes_dir(loaded.path):
                self.state.set(DEFAULT_INDEX, loaded.name)  # a fresh server's first index stays the default
            return
        if stored is not None:
            self.default_source = "the stored default"
            path = self.settings.indexes_dir / stored
            try:
                if not is_real_dir(path):
                    raise ApiError(404, "not_found", f"index {stored!r} is not in the indexes directory")
                self.activate(path)
                logger.info("default index: %s, from the stored default", stored)
            except ApiError as e:
                self.index_error = f"the stored default index {stored!r} cannot be served: {e.message}"
                logger.error("%s", self.index_error)
        if self.index is None and self.settings.checkpoint is not None:
            path = Path(self.settings.checkpoint)
            try:
                self.model = self._load_model(path, content_sha256(path))
            except (CheckpointError, OSError, RuntimeError, ApiError) as e:
                why = e.message if isinstance(e, ApiError) else str(e).replace(str(path), path.name)
                raise StartupError(f"checkpoint {path.name!r} not loaded: {why}") from None

    @property
    def state(self) -> Any:
        """The :class:`server.services.state.StateStore` in ``<state_dir>/jobs.db`` (opened on first use)."""
        if self._state is None:
            from server.services.state import StateStore

            self._state = StateStore(self.settings.state_dir / "jobs.db")
        return self._state

    @property
    def names(self) -> Any:
        """The :class:`server.services.concept_names.NameStore` in ``<state_dir>/jobs.db`` (opened on first use)."""
        if self._names is None:
            from server.services.concept_names import NameStore

            self._names = NameStore(self.settings.state_dir / "jobs.db")
        return self._names

    def model_key(self, loaded: LoadedIndex) -> str:
        """The key of the model ``loaded`` was built from, that concept names are stored under: the hash of its
        teacher's weights (:func:`server.services.concept_names.teacher_hash`, computed once per checkpoint
        content and stored), or, while the checkpoint cannot be read here, ``checkpoint:<its sha256>``."""
        from server.services.concept_names import teacher_hash

        built = loaded.index.manifest.checkpoint.sha256
        known = self.names.model_for(built)
        if known is not None:
            return known
        path = Path(loaded.index.manifest.checkpoint.path)
        configured = self.settings.checkpoint
        candidates = [path] + ([Path(configured)] if configured is not None else [])
        for candidate in candidates:
            try:
                if self.checkpoint_allowed(candidate) and candidate.is_file() and content_sha256(candidate) == built:
                    key = teacher_hash(candidate)
                    self.names.remember_model(built, key)
                    return key
            except (CheckpointError, OSError, RuntimeError) as e:
                logger.warning("cannot hash the weights of %s: %s", _ident(candidate), e)
        return f"checkpoint:{built}"

    def sync_names(self, loaded: LoadedIndex) -> None:
        """Bring the model's concept names into ``loaded``'s own database: its names the store does not know
        yet are migrated to the store first, then the store's names (removals included) are written into it."""
        key = self.model_key(loaded)
        records = loaded.index.prototypes()
        moved = self.names.migrate(key, {r.id: r.label for r in records if r.label})
        if moved:
            logger.info("index %s: %d concept names moved to the model's names", loaded.name, moved)
        stored = self.names.names(key)
        for r in records:
            if r.id in stored and stored[r.id] != r.label:
                loaded.index.set_label(r.id, stored[r.id])

    def set_name(self, loaded: LoadedIndex, k: int, label: str | None) -> None:
        """Name prototype ``k`` of ``loaded``'s model (None removes the name): in the store, in ``loaded`` and in
        every other open index of the same model."""
        key = self.model_key(loaded)
        self.names.set(key, k, label)
        loaded.index.set_label(k, label)
        others = [self.index] + [self.indexes.peek(n) for n in self.indexes.names()]
        for other in others:
            if other is None or other is loaded or k >= other.index.num_prototypes:
                continue
            if self.model_key(other) == key:
                other.index.set_label(k, label)

    def _in_indexes_dir(self, path: Path) -> bool:
        return Path(path).resolve().parent == self.settings.indexes_dir.resolve()

    def is_default(self, name: str) -> bool:
        """True when ``name`` is the default index's name."""
        return self.index is not None and self.index.name == name

    def make_default(self, name: str, why: str) -> LoadedIndex:
        """Activate ``indexes_dir/name`` (all or nothing, as :meth:`activate`) and store it as the default
        restored at start-up; logs the change and ``why`` (the API call or job that asked)."""
        from server.services.state import DEFAULT_INDEX

        path = self.settings.indexes_dir / name
        if not is_real_dir(path):  # a symlink out of the folder is no index of it
            raise not_found("index", name)
        before = self.index.name if self.index is not None else None
        loaded = self.activate(path)
        self.state.set(DEFAULT_INDEX, name)
        logger.info("default index: %s (was %s), set by %s", name, before, why)
        return loaded

    def open_index(self, name: str, budget: Budget | None = None) -> LoadedIndex:
        """The index named ``name``: the default one when it has that name, else ``indexes_dir/name`` opened
        and validated once and kept in the bounded cache (reopened when its manifest changes: a rebuild).

        Opening one (not cached) takes a work slot for the request of ``budget`` (503 ``busy`` when none
        frees up). Raises 404 when there is no such index, 409 ``bad_index`` when it cannot be used."""
        current = self.index
        if current is not None and current.name == name:
            return current
        path = self.settings.indexes_dir / name
        if not (is_real_dir(path) and is_regular_file(path / "manifest.json")):
            raise not_found("index", name)
        st = os.lstat(path / "manifest.json")
        stamp = (st.st_mtime_ns, st.st_size)
        loaded = self.indexes.get(name, stamp)
        if loaded is not None:
            return loaded
        with self.work_slot(budget) if budget is not None else nullcontext(), self._open_lock:
            loaded = self.indexes.get(name, stamp)
            if loaded is None:
                from indexer.validate import IndexInvalidError, open_validated

                try:
                    check_index_dir(path, name)
                    loaded = LoadedIndex(index=open_validated(path), path=path)
                except ApiError as e:
                    raise ApiError(409, "bad_index", f"index {name!r} cannot be used: {e.message}") from e
                except IndexInvalidError as e:
                    raise ApiError(409, "bad_index", f"index {name!r} cannot be used: {e}") from e
                self._sync_quietly(loaded)
                self.indexes.put(name, stamp, loaded)
        return loaded

    def _sync_quietly(self, loaded: LoadedIndex) -> None:
        """:meth:`sync_names`, logging instead of failing: an index whose names cannot be synced still serves."""
        try:
            self.sync_names(loaded)
        except (OSError, RuntimeError, ValueError, sqlite3.Error) as e:
            logger.warning("index %s: concept names not synced: %s", loaded.name, e)

    def model_of(self, loaded: LoadedIndex) -> LoadedModel:
        """The model ``loaded`` was built from (the default model for the default index), loaded and
        verified once per named index (409 as :meth:`activate` when it is missing or another model)."""
        if loaded is self.index:
            return self.require_model()
        if loaded.model is None:
            with self.model_lock:  # one model load at a time, as one forward
                if loaded.model is None:
                    loaded.model = self._model_for(loaded.index, loaded.name)
                    self.paths.add(loaded.path.parent, loaded.model.path.parent.parent)
            self.indexes.resize(loaded)
        return loaded.model

    def _load_model(self, path: Path, sha: str) -> LoadedModel:
        """The model in ``path`` whose bytes hash to ``sha`` (the current one when it is that file)."""
        if self.model is not None and self.model.sha256 == sha:
            return self.model
        before = file_key(path)
        inference = self.settings.inference
        model = inference_model_for(path, self.device, fused=inference.fused, options=inference.options())
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
            self._sync_quietly(loaded)
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
