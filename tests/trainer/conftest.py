"""Trainer fixtures: CLI arguments for a tiny, fast training run on the shared synthetic dataset, and a reader of
a run's metrics. (Running a worker script as gloo ranks, ``run_ranks``, is in tests/conftest.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY_CONFIG


def model_flags(config: dict) -> list[str]:
    """``python -m trainer`` flags that give the model ``config``: ``--kebab-case`` per field, a true boolean as
    the bare flag."""
    flags = []
    for name, value in config.items():
        flag = "--" + name.replace("_", "-")
        flags += [flag] if value is True else [flag, str(value)]
    return flags


#: The tiny model of tests/conftest.py (TINY_CONFIG) as trainer flags.
TINY_MODEL_ARGS = model_flags(TINY_CONFIG)


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
