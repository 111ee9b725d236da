"""The checkpoints under the configured runs directory, with epoch and config (cached by mtime/size).

Absolute paths inside the stored training configs are shown by their last component only.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from core.checkpoint import CheckpointError, checkpoint_summary
from server.runtime import Runtime
from server.schemas import CheckpointEntry
from server.services.folders import is_regular_file, read_manifest, subdirectories

logger = logging.getLogger(__name__)
_cache: dict[tuple[str, int, int], dict[str, Any]] = {}
_lock = threading.Lock()


def names_only(value: Any) -> Any:
    """``value`` with every absolute path (in dicts and lists) replaced by its last component."""
    if isinstance(value, dict):
        return {k: names_only(v) for k, v in value.items()}
    if isinstance(value, list):
        return [names_only(v) for v in value]
    if isinstance(value, str) and len(value) > 1 and (value[0] in "/\\" or value[1:3] in (":\\", ":/")):
        return Path(value.replace("\\", "/")).name
    return value


def _summary(path: Path) -> dict[str, Any]:
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _lock:
        if key in _cache:
            return _cache[key]
    try:
        ckpt = checkpoint_summary(path)  # the sidecar; a full load only without one
        summary = {
            "epoch": ckpt.get("epoch"),
            "step": ckpt.get("step"),
            "config": ckpt.get("config"),
            "train_config": names_only(ckpt.get("train_config")),
        }
    except CheckpointError as e:
        logger.warning("skipping unreadable checkpoint %s: %s", path, e)
        summary = {"error": str(e)}
    with _lock:
        _cache[key] = summary
    return summary


def _indexed_checkpoints(indexes_dir: Path) -> set[str]:
    found = set()
    for folder in subdirectories(indexes_dir):
        try:
            found.add(str(Path(read_manifest(folder).checkpoint.path).resolve()))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def _checkpoint_files(runs: Path) -> list[Path]:
    """The regular ``*.pth`` files (no symlinks, FIFOs or devices) in the real directories under ``runs``."""
    found = []
    for run in subdirectories(runs):
        try:
            names = sorted(os.listdir(run))
        except OSError:
            continue
        found += [run / n for n in names if n.endswith(".pth") and not n.startswith(".") and is_regular_file(run / n)]
    return found


def list_checkpoints(runtime: Runtime) -> list[CheckpointEntry]:
    """Readable ``*.pth`` files one level under ``runs_dir``, newest first."""
    runs = runtime.settings.runs_dir
    indexed = _indexed_checkpoints(runtime.settings.indexes_dir)
    active = None
    if runtime.index is not None:
        active = str(Path(runtime.index.index.manifest.checkpoint.path).resolve())
    entries = []
    for path in _checkpoint_files(runs):
        info = _summary(path)
        if "error" in info:
            continue
        st, ident, resolved = path.stat(), f"{path.parent.name}/{path.name}", str(path.resolve())
        entries.append(CheckpointEntry(
            id=ident, name=ident, run=path.parent.name, file=path.name, epoch=info["epoch"], step=info["step"],
            size_bytes=st.st_size, modified=st.st_mtime, config=info["config"], train_config=info["train_config"],
            active=resolved == active, indexed=resolved in indexed,
        ))  # fmt: skip
    return sorted(entries, key=lambda e: -e.modified)
