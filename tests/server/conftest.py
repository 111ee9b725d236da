"""Server fixtures: a real tiny index (FAISS + SQLite, built by ``indexer.build.build_index`` from the
shared synthetic dataset and tiny checkpoint), settings in a temp directory, and a live ``TestClient``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import Settings


@pytest.fixture(scope="session")
def server_index(synthetic_root: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real concept index of the synthetic val split (12 images, K=8) at resize 128 / crop 112."""
    from indexer.build import build_index

    out = tmp_path_factory.mktemp("server-index") / "tiny"
    return build_index(tiny_checkpoint, synthetic_root, out, split="val2017", resize=128, crop=112)


@pytest.fixture()
def make_settings(tmp_path: Path, synthetic_root: Path, server_index: Path) -> Callable[..., Settings]:
    """Settings in a fresh temp tree (state, runs, indexes); keyword arguments override fields."""

    def make(**overrides) -> Settings:
        values = dict(index=server_index, data_root=synthetic_root, runs_dir=tmp_path / "runs",
                      indexes_dir=tmp_path / "indexes", state_dir=tmp_path / "state", device="cpu",
                      max_upload_bytes=2 * 1024 * 1024, max_upload_pixels=4_000_000, job_poll_s=0.1,
                      trusted_hosts="testserver")
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture()
def client(make_settings) -> Iterator[TestClient]:
    """A TestClient on an app serving the tiny index (lifespan run: model, index and jobs loaded)."""
    with TestClient(create_app(make_settings())) as c:
        yield c


@pytest.fixture(scope="session")
def sample_jpeg(synthetic_root: Path) -> bytes:
    """The bytes of one real dataset image."""
    return sorted((synthetic_root / "val2017").glob("*.jpg"))[0].read_bytes()
