"""Checkpoint identity by content: the hash is of the bytes (streamed), cached until the file changes;
upload slots bound how many decodes run at once."""

from __future__ import annotations

import hashlib
import os

import pytest

import server.services.digests as digests
from server.errors import ApiError
from server.runtime import Runtime


def test_the_hash_is_of_the_bytes_and_cached_until_the_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "final.pth"
    path.write_bytes(b"x" * 5000)
    hashed = []
    real = digests.file_sha256
    monkeypatch.setattr(digests, "file_sha256", lambda p: hashed.append(p) or real(p))
    assert digests.content_sha256(path) == hashlib.sha256(b"x" * 5000).hexdigest()
    assert digests.content_sha256(path) == hashlib.sha256(b"x" * 5000).hexdigest()
    assert len(hashed) == 1  # the second answer came from the cache
    before = path.stat()
    path.write_bytes(b"y" * 5000)  # same size, rewritten in place
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    assert digests.content_sha256(path) == hashlib.sha256(b"y" * 5000).hexdigest()
    assert len(hashed) == 2
    replacement = tmp_path / "new.pth"
    replacement.write_bytes(b"z" * 5000)
    os.utime(replacement, ns=(before.st_atime_ns, path.stat().st_mtime_ns))  # same size and mtime
    os.replace(replacement, path)  # an atomic replace: another inode
    assert digests.content_sha256(path) == hashlib.sha256(b"z" * 5000).hexdigest()


def test_upload_slots_bound_concurrent_decodes(make_settings):
    runtime = Runtime(make_settings(upload_concurrency=1, upload_queue_s=0.05))
    with runtime.upload_slot():
        with pytest.raises(ApiError) as busy, runtime.upload_slot():
            pass
        assert busy.value.status_code == 503 and busy.value.code == "busy"
        assert busy.value.headers["Retry-After"]
    with runtime.upload_slot():  # released: free again
        pass
