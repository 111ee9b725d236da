"""Content hashes of checkpoint files: streamed SHA-256, cached by path, size, mtime and inode.

The server never takes a checkpoint's identity from a manifest: it hashes the bytes it is about to
load. Hashing a large checkpoint takes seconds, so the digest is kept until the file changes (any
of its size, modification time or inode: a rewrite or an atomic replace both change one).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from core.checkpoint import file_sha256

_cache: dict[tuple[str, int, int, int], str] = {}
_lock = threading.Lock()


def file_key(path: str | os.PathLike) -> tuple[str, int, int, int]:
    """(resolved path, size, mtime in ns, inode): what identifies a file's version here."""
    path = Path(path).resolve()
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns, st.st_ino


def content_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of ``path``'s bytes now (streamed; cached while the file is unchanged).

    Raises ``OSError`` when the file cannot be read, and ``RuntimeError`` when it kept changing
    while it was hashed.
    """
    for _ in range(3):
        key = file_key(path)
        with _lock:
            if key in _cache:
                return _cache[key]
        digest = file_sha256(key[0])
        if file_key(path) == key:  # not rewritten while we read it
            with _lock:
                _cache[key] = digest
            return digest
    raise RuntimeError(f"{Path(path).name} kept changing while it was hashed")
