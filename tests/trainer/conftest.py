"""Trainer fixtures: CLI arguments for a tiny, fast training run on the shared synthetic dataset."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

TINY_MODEL_ARGS = [
    "--arch",
    "resnet18",
    "--width",
    "0.25",
    "--stride16",
    "--dim-hidden",
    "64",
    "--dim-out",
    "32",
    "--num-prototypes",
    "8",
]


@pytest.fixture
def tiny_train_args(synthetic_root: Path, tmp_path: Path) -> list[str]:
    """``python -m trainer`` flags: 24 images, 64 px crops, batch 8 (3 steps/epoch), fp32 CPU, log every step; no
    time budget (the budget tests add theirs), so the run's length is its epochs."""
    return [
        "--preset",
        "cpu-demo",
        "--data",
        str(synthetic_root),
        "--output-dir",
        str(tmp_path / "run"),
        *TINY_MODEL_ARGS,
        "--image-size",
        "64",
        "--batch-size",
        "8",
        "--epochs",
        "2",
        "--workers",
        "0",
        "--threads",
        "2",
        "--log-every",
        "1",
        "--save-every",
        "1",
        "--progress",
        "log",
        "--seed",
        "3",
        "--precision",
        "fp32",
        "--no-channels-last",
        "--budget-minutes",
        "0",
    ]


def _read_metrics(run_dir: Path) -> tuple[list[dict], list[dict]]:
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines() if s.strip()]
    return [r for r in lines if "event" not in r], [r for r in lines if "event" in r]


@pytest.fixture(scope="session")
def read_metrics():
    """A function: run directory → (step records, event records) of its ``metrics.jsonl``."""
    return _read_metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(args: list[str], tmp_path: Path, world: int = 2, timeout: float = 240) -> list[dict]:
    """Runs ``python ARGS`` as ``world`` gloo ranks (RANK, WORLD_SIZE, MASTER_ADDR/PORT set); asserts each exits 0
    within ``timeout`` s; returns what each saved to ``tmp_path/rank{r}.pt``."""
    env = {
        **os.environ,
        "WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        "LOCAL_RANK": "0",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, *args], env={**env, "RANK": str(r)}, cwd=REPO, stderr=subprocess.PIPE, text=True
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
