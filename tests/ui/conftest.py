"""Fixtures of the UI tests: a real small index, a live API serving it, and AppTest helpers.

``ui_index`` builds a concept index from the shared ``synthetic_root`` and ``tiny_checkpoint``
(``indexer.build.build_index``) and stores an unsupervised-segmentation evaluation in it;
``live_api`` starts ``python -m server`` on that index on a free port (data, runs, indexes and
state in temporary directories) and yields its URL. Nothing is mocked.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slotcon.processes import Service, ServiceError, free_port

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


def _png(labels: np.ndarray) -> bytes:
    """A palette PNG of a class map (255 = ignore, black), as the evaluator stores them."""
    rng = np.random.default_rng(0)
    palette = rng.integers(40, 255, size=(256, 3), dtype=np.uint8)
    palette[255] = 0
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette(palette.ravel().tolist())
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def store_segmentation_eval(index_dir: Path, data_root: Path, checkpoint: Path) -> None:
    """Stores a real evaluation in the index: ``indexer.evaluate.run_eval`` when it exists, else the
    index's own prototype maps (from the segments' masks) scored by ``hungarian_scores``."""
    from pycocotools import mask as mask_utils

    from core.datasets import load_semantic_label, semantic_label_path
    from core.synthetic import CLASSES
    from indexer.store import ConceptIndex
    from indexer.unsupervised import hungarian_scores

    with ConceptIndex.open(index_dir) as index:
        preds, gts, examples = [], [], []
        for image in index.images(0, 10_000):
            gt = load_semantic_label(semantic_label_path(data_root, "val2017", image.path))
            pred = np.full(gt.shape, 255, dtype=np.int64)
            for seg in index.image_segments(image.id):
                rle = {"size": seg.rle["size"], "counts": seg.rle["counts"].encode()}
                mask = mask_utils.decode(rle).astype(bool)
                if mask.shape == gt.shape:
                    pred[mask] = seg.prototype
            preds.append(pred)
            gts.append(gt)
            if len(examples) < 3:
                examples.append((image.id, image.file_name, _png(np.where(pred == 255, 255, pred)), _png(gt)))
        result = hungarian_scores(preds, gts, num_classes=len(CLASSES), num_clusters=index.num_prototypes,
                                  class_names=[c.name for c in CLASSES])
        result = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in result.items()}
        result.update(protocol="synthetic", baseline="none", checkpoint={"path": str(checkpoint)})
        index.store_eval(result, examples)


@pytest.fixture(scope="session")
def ui_index(synthetic_root: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real index of the synthetic val split (tiny untrained model) with one stored evaluation."""
    from indexer.build import build_index

    indexes = tmp_path_factory.mktemp("indexes")
    index_dir = build_index(tiny_checkpoint, synthetic_root, indexes / "tiny", split="val2017",
                            resize=96, crop=96, batch_size=12)
    store_segmentation_eval(Path(index_dir), synthetic_root, tiny_checkpoint)
    return Path(index_dir)


@pytest.fixture(scope="session")
def live_api(ui_index: Path, synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m server`` on ``ui_index`` (a free port, tmp runs/state dirs); yields its base URL."""
    port = free_port()
    state = tmp_path_factory.mktemp("api-state")
    env = {**os.environ,
           "SLOTCON_INDEX": str(ui_index),
           "SLOTCON_DATA_ROOT": str(synthetic_root),
           "SLOTCON_RUNS_DIR": str(state / "runs"),
           "SLOTCON_INDEXES_DIR": str(ui_index.parent),
           "SLOTCON_STATE_DIR": str(state / "state"),
           "SLOTCON_DEVICE": "cpu",
           "OMP_NUM_THREADS": "1"}
    env.pop("SLOTCON_API_TOKEN", None)
    url = f"http://127.0.0.1:{port}"
    service = serve("API", [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port),
                            "--log-level", "warning"], f"{url}/api/health", state / "api.log", env)
    try:
        yield url
    finally:
        service.stop()


@pytest.fixture(scope="session")
def ui_url(live_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``slotcon ui`` against the live API on a free port; yields the UI's URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service = serve("UI", [sys.executable, "-m", "slotcon", "ui", "--api", live_api, "--port", str(port)],
                    f"{url}/_stcore/health", tmp_path_factory.mktemp("ui") / "ui.log",
                    {**os.environ, "SLOTCON_API_URL": live_api}, timeout_s=60)
    try:
        yield url
    finally:
        service.stop()


@pytest.fixture
def api_env(live_api: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Points the UI (``SLOTCON_API_URL``) at the live API; returns its URL."""
    monkeypatch.setenv("SLOTCON_API_URL", live_api)
    return live_api


@pytest.fixture
def sample_image_bytes(synthetic_root: Path) -> bytes:
    """The bytes of one synthetic val image (an upload as a user would make it)."""
    return sorted((synthetic_root / "val2017").glob("*.jpg"))[0].read_bytes()
