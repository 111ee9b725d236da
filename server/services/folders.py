"""The indexes and runs folders as the server may open them: only regular directories and regular files
inside them, each looked at with ``lstat`` before it is opened. A symlink (out of the folder or not),
a FIFO (whose ``open`` would block a worker thread forever), a socket or a device is skipped in a
listing and refused by name.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from server.errors import ApiError

#: Largest manifest read (a manifest is about a kilobyte).
MAX_MANIFEST_BYTES = 1 << 20
#: Most entries an index directory may hold (its files and SQLite's journal files: about ten).
MAX_INDEX_ENTRIES = 256


def _mode(path: Path) -> int | None:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return None


def is_real_dir(path: Path) -> bool:
    """True when ``path`` itself is a directory (not a symlink to one)."""
    mode = _mode(path)
    return mode is not None and stat.S_ISDIR(mode)


def is_regular_file(path: Path) -> bool:
    """True when ``path`` itself is a regular file (not a symlink, FIFO, socket or device)."""
    mode = _mode(path)
    return mode is not None and stat.S_ISREG(mode)


def subdirectories(root: Path) -> Iterator[Path]:
    """The real directories directly under ``root`` (none when ``root`` is not one), sorted by name."""
    if not is_real_dir(root):
        return
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return
    for name in names:
        if is_real_dir(root / name):
            yield root / name


def read_regular(path: Path, limit: int = MAX_MANIFEST_BYTES) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit``). Opened without following a symlink
    and without blocking, then checked again on the open descriptor, so a FIFO or a file swapped in
    after the ``lstat`` is never read. Raises ``OSError`` for anything but a regular file."""
    if not is_regular_file(path):
        raise OSError(f"{path.name} is not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(f"{path.name} is larger than {limit} bytes")
    return data


def read_manifest(index_dir: Path) -> Any:
    """The parsed ``manifest.json`` of ``index_dir`` (see :func:`read_regular`); OSError or ValueError."""
    from indexer.types import Manifest

    return Manifest.from_dict(json.loads(read_regular(index_dir / "manifest.json")))


def check_index_dir(path: Path, name: str) -> None:
    """Refuse (400 ``bad_index``) an index directory that is not a real directory of regular files and
    directories: a symlink or a FIFO inside it would be followed or block when the index is opened."""
    if not is_real_dir(path):
        raise ApiError(400, "bad_index", f"index {name!r} is not a directory (a symlink or a special file)")
    pending, seen = [path], 0
    while pending:
        folder = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                seen += 1
                if seen > MAX_INDEX_ENTRIES:
                    raise ApiError(400, "bad_index", f"index {name!r} holds more than {MAX_INDEX_ENTRIES} files")
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif not entry.is_file(follow_symlinks=False):
                    what = "a symlink" if entry.is_symlink() else "not a regular file"
                    raise ApiError(400, "bad_index", f"index {name!r}: {entry.name} is {what}; refused")


def inside(path: Path, root: Path) -> bool:
    """True when ``path`` (resolved) lies under ``root`` (resolved)."""
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):
        return False
