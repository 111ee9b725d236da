"""Fixtures shared by every package's tests: a small synthetic dataset, tiny checkpoints, a worker script run as
gloo ranks; the markers.

Package-specific fixtures live in ``tests/<package>/conftest.py``.

Markers (declared in pyproject.toml):

- ``gpu``: needs a CUDA device; skipped with the reason "needs a CUDA GPU" where torch sees none
  (:func:`pytest_collection_modifyitems`).
- ``slow``: took more than 20 s on a 2-core CPU. Slow tests still run by default (CI runs them);
  ``pytest -m "not slow"`` leaves them out for a quick local pass.
- ``browser``: drives a real Chromium; skipped where Debian's chromium is not installed (scripts/ensure_browser.sh
  installs it; ``make test`` runs that first).
- ``cxx``: compiles with ``torch.compile``; skipped with the reason "torch.compile needs a C++ compiler" where
  no g++, c++ or clang++ is on the PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.checkpoint import save_checkpoint
from core.model import SlotCon, SlotConConfig
from server.processes import free_port

# The repository root on the import path, as `python -m pytest` run from it has it, however pytest was started:
# tests import scripts/ and the conftest helpers (tests.server.conftest) by their package names.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.browser import CHROMIUM  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

# A model small enough that a forward pass takes milliseconds on one CPU core.
TINY_CONFIG = dict(arch="resnet18", width=0.25, stride16=True, dim_hidden=64, dim_out=32, num_prototypes=8)


def tiny_model(seed: int = 0, **overrides) -> SlotCon:
    """A deterministic tiny SlotCon (ResNet-18 at quarter width, stride 16, K=8)."""
    torch.manual_seed(seed)
    return SlotCon(SlotConConfig(**{**TINY_CONFIG, **overrides}))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip, with a stated reason, the ``gpu`` tests where there is no CUDA device, the ``cxx`` tests
    (torch.compile) where there is no C++ compiler and the ``browser`` tests where there is no Chromium."""
    skips = {}
    if not torch.cuda.is_available():
        skips["gpu"] = pytest.mark.skip(reason="needs a CUDA GPU")
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        skips["cxx"] = pytest.mark.skip(reason="torch.compile needs a C++ compiler")
    if not CHROMIUM.exists():
        skips["browser"] = pytest.mark.skip(reason=f"Debian's chromium is not installed at {CHROMIUM}")
    for item in items:
        for marker, skip in skips.items():
            if item.get_closest_marker(marker) is not None:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_config() -> SlotConConfig:
    """The tiny model config used across the suite."""
    return SlotConConfig(**TINY_CONFIG)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real synthetic-scenes dataset (COCO layout): 24 train + 12 val images at 96 px."""
    from core.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, num_train=24, num_val=12, size=96, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An own-format checkpoint of an untrained tiny model (teacher = student at init)."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_checkpoint(path, tiny_model(0), epoch=0, step=0)
    return path


@pytest.fixture(scope="session")
def make_tiny_model():
    """The :func:`tiny_model` factory, for tests that need fresh models (``make_tiny_model(seed=1)``)."""
    return tiny_model


def _training_batch(seed: int, b: int = 4, size: int = 64):
    g = torch.Generator().manual_seed(seed)
    crops = [torch.randn(b, 3, size, size, generator=g) * 1.5 + 0.3 for _ in range(2)]
    lo = torch.rand(b, 2, generator=g) * 0.3
    box = torch.cat([lo, lo + 0.5 + torch.rand(b, 2, generator=g) * 0.2], 1).clamp(max=1)
    return crops, [box, box.flip(0)], [torch.rand(b, generator=g) < 0.5, torch.rand(b, generator=g) < 0.5]


def trained_model(steps: int = 3, seed: int = 0, **overrides) -> SlotCon:
    """A tiny SlotCon after ``steps`` real training steps (loss, SGD, a fast teacher EMA, centre update), so
    the teacher's BatchNorm statistics and affine weights are far from their init (BN folding is exercised)."""
    torch.manual_seed(seed)
    model = SlotCon(SlotConConfig(**{**TINY_CONFIG, **overrides})).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5, momentum=0.9)
    for step in range(steps):
        model.momentum_update(0.5)
        out = model(*_training_batch(step))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        model.update_center(out["center_batch"])
    return model.eval()


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An own-format checkpoint of the tiny model after three real training steps (:func:`trained_model`)."""
    path = tmp_path_factory.mktemp("ckpt") / "trained.pth"
    save_checkpoint(path, trained_model(), epoch=1, step=3)
    return path


@pytest.fixture(scope="session")
def make_trained_model():
    """The :func:`trained_model` factory (``make_trained_model(arch="resnet50", width=0.125)``)."""
    return trained_model


def _run_ranks(args: list[str], tmp_path: Path, world: int = 2, timeout: float = 240) -> list[dict]:
    """Runs ``python ARGS`` as ``world`` gloo ranks (RANK, WORLD_SIZE, MASTER_ADDR/PORT set); asserts each exits 0
    within ``timeout`` s; returns what each saved to ``tmp_path/rank{r}.pt``."""
    env = {
        **os.environ,
        "WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        "LOCAL_RANK": "0",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, *args], env={**env, "RANK": str(r)}, cwd=ROOT, stderr=subprocess.PIPE, text=True
        )
        for r in range(world)
    ]
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [0] * world, [p.stderr.read()[-3000:] for p in procs]
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]


@pytest.fixture(scope="session")
def run_ranks():
    """A function: ``run_ranks(args, tmp_path, world=2)`` runs a worker script as gloo ranks (see _run_ranks)."""
    return _run_ranks
