"""The indexes under the configured indexes directory as resources: their listing (with each one's build
id and checkpoint), readable names for new ones, renaming and deleting (never the default one).

The client names an index (``[A-Za-z0-9_-]``, checked by the route); the server resolves it inside
``indexes_dir`` and never touches a path the client wrote.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from server.errors import ApiError, not_found
from server.runtime import Runtime, build_id
from server.schemas import IndexEntry
from server.services.folders import is_real_dir, is_regular_file, read_manifest, subdirectories

logger = logging.getLogger(__name__)
_EPOCH = re.compile(r"^ckpt_epoch_?(\d+)$")


def _checkpoint_details(runtime: Runtime, path: Path) -> tuple[int | None, int | None]:
    """(epoch, step) of a checkpoint the server may open (from its sidecar, cached); (None, None) otherwise."""
    from server.services.checkpoints import _summary

    try:
        if not (runtime.checkpoint_allowed(path) and is_regular_file(path)):
            return None, None
        info = _summary(path)
    except OSError:
        return None, None
    return info.get("epoch"), info.get("step")


def _entry(runtime: Runtime, folder: Path, default: Path | None) -> IndexEntry | None:
    try:
        m = read_manifest(folder)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ckpt = Path(m.checkpoint.path)
    epoch, step = _checkpoint_details(runtime, ckpt)
    is_default = default is not None and folder.resolve() == default
    return IndexEntry(
        name=folder.name, build=build_id(folder), checkpoint=ckpt.name, run=ckpt.parent.name or None, epoch=epoch,
        step=step, num_prototypes=m.num_prototypes, num_images=m.counts.images, built_at=m.built_at,
        default=is_default, active=is_default,
    )  # fmt: skip


def list_indexes(runtime: Runtime) -> list[IndexEntry]:
    """The indexes under ``indexes_dir`` whose manifest reads, by name, and the default index first when it
    lives elsewhere (configured by ``--index``)."""
    default = runtime.index.path.resolve() if runtime.index is not None else None
    items = []
    for folder in subdirectories(runtime.settings.indexes_dir):  # no symlinks, no FIFOs (see server.services.folders)
        entry = _entry(runtime, folder, default)
        if entry is not None:
            items.append(entry)
    if default is not None and not any(e.default for e in items):
        entry = _entry(runtime, runtime.index.path, default)
        if entry is not None:
            items.insert(0, entry)
    return items


def readable_name(indexes_dir: Path, run: str, checkpoint: Path, taken: set[str] = frozenset()) -> str:
    """A new index's name from its run and checkpoint: ``<run>-final`` for ``final.pth``, ``<run>-epoch2`` for
    ``ckpt_epoch_2.pth``, ``<run>-<stem>`` otherwise (characters outside ``[A-Za-z0-9_-]`` become ``-``);
    ``-2``, ``-3``... only when the name is already an index in ``indexes_dir`` or in ``taken``."""
    stem = checkpoint.stem
    match = _EPOCH.match(stem)
    stem = f"epoch{int(match.group(1))}" if match else stem
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", f"{run}-{stem}").strip("-")[:56] or "index"
    name, n = base, 1
    while name in taken or os.path.lexists(indexes_dir / name):
        n += 1
        name = f"{base}-{n}"
    return name


def _folder(runtime: Runtime, name: str) -> Path:
    """``indexes_dir/name`` when it is an index there (404 otherwise), refusing the default one (409)."""
    path = runtime.settings.indexes_dir / name
    if not (is_real_dir(path) and is_regular_file(path / "manifest.json")):
        raise not_found("index", name)
    if runtime.index is not None and runtime.index.path.resolve() == path.resolve():
        raise ApiError(409, "default_index", f"index {name!r} is the default index: make another one the default first")
    if runtime.supervisor is not None:
        for row in runtime.supervisor.store.active():
            if Path(row.output_dir).resolve() == path.resolve() or row.config.get("index") == name:
                why = f"index {name!r} is in use by job {row.id} ({row.kind}, {row.status})"
                raise ApiError(409, "index_busy", why)
    return path


def rename_index(runtime: Runtime, name: str, new: str) -> IndexEntry:
    """Rename the index ``name`` to ``new`` (409 ``index_exists`` when that name is taken); returns its entry."""
    path = _folder(runtime, name)
    target = runtime.settings.indexes_dir / new
    if os.path.lexists(target):
        raise ApiError(409, "index_exists", f"index {new!r} already exists; pick another name")
    runtime.indexes.drop(name)
    os.rename(path, target)
    logger.info("index %s renamed to %s", name, new)
    entry = _entry(runtime, target, None)
    if entry is None:
        raise ApiError(409, "bad_index", f"index {new!r} has no readable manifest")
    return entry


def delete_index(runtime: Runtime, name: str) -> None:
    """Delete the index ``name`` and its files."""
    path = _folder(runtime, name)
    runtime.indexes.drop(name)
    shutil.rmtree(path)
    logger.info("index %s deleted", name)
