"""SIGTERM saves a loadable checkpoint and exits 0; a killed atomic write never leaves a partial file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from core.checkpoint import load_model, read_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _wait_for(predicate, timeout: float = 90.0) -> None:  # noqa: ANN001
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError("condition not met in time")


def test_sigterm_saves_loadable_checkpoint(tiny_train_args: list[str], tmp_path: Path, read_metrics) -> None:
    run = tmp_path / "run"
    args = [*tiny_train_args, "--epochs", "500", "--save-minutes", "100"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer", *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        metrics = run / "metrics.jsonl"
        _wait_for(lambda: metrics.is_file() and metrics.read_text().count("\n") >= 2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    steps, events = read_metrics(run)
    assert events[-1]["event"] == "stopped" and events[-1]["reason"] == "signal SIGTERM"
    ckpt = read_checkpoint(run / "current.pth")
    assert ckpt["step"] == events[-1]["step"] >= 2
    assert load_model(run / "current.pth").config.num_prototypes == 8


def test_killed_atomic_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "current.pth"
    script = textwrap.dedent(f"""
        import sys, torch
        from core.checkpoint import atomic_save
        big = torch.randn(4_000_000)
        i = 0
        while True:
            atomic_save({{"i": i, "w": big}}, {str(target)!r})
            print(i, flush=True)
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "0"  # one complete write exists
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)  # very likely mid-write of a later one
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    ckpt = read_checkpoint(target)
    assert ckpt["w"].numel() == 4_000_000
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "current.pth"]
    assert all(name.startswith(".current.pth.") and name.endswith(".tmp") for name in leftovers), leftovers
    json.dumps(leftovers)
