"""The ``gpu`` and ``slow`` markers as tests/conftest.py states them, checked by running pytest itself in a
subprocess: gpu tests are skipped with "needs a CUDA GPU" where there is none, slow tests are collected by
default and left out only by ``-m "not slow"``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FILE = "tests/trainer/test_distributed.py"  # holds slow, gpu and unmarked tests


def _pytest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=ROOT, capture_output=True,
        text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def _collected(*args: str) -> set[str]:
    done = _pytest("--collect-only", "-q", *args, FILE)
    assert done.returncode in (0, 5), done.stdout + done.stderr  # 5: nothing collected
    return {line for line in done.stdout.splitlines() if "::" in line}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the gpu tests run instead")
def test_gpu_tests_are_skipped_with_a_reason_without_cuda() -> None:
    done = _pytest("-q", "-rs", FILE, "-m", "gpu")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 skipped" in done.stdout and "needs a CUDA GPU" in done.stdout
    assert "passed" not in done.stdout


def test_slow_tests_run_by_default_and_only_not_slow_leaves_them_out() -> None:
    everything, quick = _collected(), _collected("-m", "not slow")
    slow = everything - quick  # what the default run has and "not slow" leaves out
    assert quick <= everything
    assert f"{FILE}::test_torchrun_two_process_training_checkpoints_and_resumes" in slow
    assert f"{FILE}::test_two_rank_slot_loss_and_center_equal_single_process" in quick
