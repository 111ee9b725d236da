"""Fixtures of the UI tests: a real small index, a live API serving it, the UI in front of it, a browser,
and AppTest helpers.

``ui_index`` builds a concept index from the shared ``synthetic_root`` and ``tiny_checkpoint``
(``indexer.build.build_index``) and stores an unsupervised-segmentation evaluation in it;
``live_api`` starts ``python -m server`` on that index on a free port (data, runs, indexes and
state in temporary directories) and yields its URL; ``ui_url`` starts ``slotcon ui`` against it;
``browser`` is Debian's Chromium (scripts/browser.py). Nothing is mocked.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.browser import launch
from server.processes import Service, ServiceError, free_port

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "ui" / "app_pages"
UNREACHABLE_URL = "http://127.0.0.1:9"  # the discard port: nothing listens there


def serve(name: str, argv: list[str], url: str, log: Path, env: dict[str, str], timeout_s: float = 90.0) -> Service:
    """Starts ``argv`` (logging to ``log``) and waits for ``url``; fails the test with the log tail if it dies."""
    service = Service.start(name, argv, log, env=env, cwd=ROOT)
    try:
        service.wait_healthy(url, timeout_s)
    except ServiceError as e:
        service.stop()
        pytest.fail(str(e))
    return service


def store_segmentation_eval(index_dir: Path, data_root: Path, checkpoint: Path) -> None:
    """Stores a real evaluation in the index, as ``slotcon eval --index`` does (``indexer.evaluate.run_eval``),
    with every metric (the object-discovery and dissection sections of the pages read it)."""
    from indexer.evaluate import EvalConfig, run_eval
    from indexer.evaluate_objects import METRICS

    run_eval(
        EvalConfig(
            checkpoint, data_root, "synthetic", resolution=64, index_dir=index_dir, num_examples=3, metrics=METRICS
        )
    )


@pytest.fixture(scope="session")
def ui_index(synthetic_root: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real index of the synthetic val split (tiny untrained model) with one stored evaluation."""
    from indexer.build import build_index

    indexes = tmp_path_factory.mktemp("indexes")
    index_dir = build_index(
        tiny_checkpoint, synthetic_root, indexes / "tiny", split="val2017", resize=96, crop=96, batch_size=12
    )
    store_segmentation_eval(Path(index_dir), synthetic_root, tiny_checkpoint)
    return Path(index_dir)


def start_api(index: Path, data_root: Path, state: Path) -> tuple[Service, str]:
    """``python -m server`` on ``index`` (its indexes folder: the index's parent) and ``data_root``, on the CPU
    with no token, its runs, state and log under ``state``, on a free port; returns the service and its URL."""
    env = {
        **os.environ,
        "SLOTCON_INDEX": str(index),
        "SLOTCON_DATA_ROOT": str(data_root),
        "SLOTCON_RUNS_DIR": str(state / "runs"),
        "SLOTCON_INDEXES_DIR": str(index.parent),
        "SLOTCON_STATE_DIR": str(state / "state"),
        "SLOTCON_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("SLOTCON_API_TOKEN", None)
    port = free_port()
    argv = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    url = f"http://127.0.0.1:{port}"
    return serve("API", argv, f"{url}/api/health", state / "api.log", env), url


def start_ui(api: str, log: Path) -> tuple[Service, str]:
    """``slotcon ui`` against the API at ``api`` on a free port, logging to ``log``; returns the service and
    its URL."""
    port = free_port()
    argv = [sys.executable, "-m", "slotcon", "ui", "--api", api, "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    return serve("UI", argv, f"{url}/_stcore/health", log, {**os.environ, "SLOTCON_API_URL": api}, 60), url


@pytest.fixture(scope="session")
def live_api(ui_index: Path, synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m server`` on ``ui_index`` (a free port, tmp runs/state dirs); yields its base URL."""
    service, url = start_api(ui_index, synthetic_root, tmp_path_factory.mktemp("api-state"))
    try:
        yield url
    finally:
        service.stop()


@pytest.fixture(scope="session")
def ui_url(live_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``slotcon ui`` against the live API on a free port; yields the UI's URL."""
    service, url = start_ui(live_api, tmp_path_factory.mktemp("ui") / "ui.log")
    try:
        yield url
    finally:
        service.stop()


@pytest.fixture(scope="module")
def jobs_servers(
    ui_index: Path, synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """An API and a UI of their own, on a copy of the index, for a test that trains and evaluates (its runs,
    checkpoints and evaluation stay out of the shared servers the other tests read); yields (API, UI) URLs."""
    import shutil

    state = tmp_path_factory.mktemp("jobs-state")
    index = state / "indexes" / ui_index.name
    shutil.copytree(ui_index, index)
    api, api_url = start_api(index, synthetic_root, state)
    try:
        ui, ui_url = start_ui(api_url, state / "ui.log")
        try:
            yield api_url, ui_url
        finally:
            ui.stop()
    finally:
        api.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Chromium from /usr/bin/chromium (tests that use it are marked ``browser``: skipped where it is
    not installed)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def api_env(live_api: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Points the UI (``SLOTCON_API_URL``) at the live API; returns its URL."""
    monkeypatch.setenv("SLOTCON_API_URL", live_api)
    return live_api


@pytest.fixture
def sample_image_bytes(synthetic_root: Path) -> bytes:
    """The bytes of one synthetic val image (an upload as a user would make it)."""
    return sorted((synthetic_root / "val2017").glob("*.jpg"))[0].read_bytes()
