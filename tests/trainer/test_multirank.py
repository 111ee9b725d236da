"""Ranks that see different things still issue the same collectives: real ``torchrun`` runs of the trainer on
gloo ranks with faults injected on one rank (``faulty_trainer.py``), every collective recorded.

Each run must finish (or fail on every rank alike), with identical collective records on every rank and
identical parameters at the end. The negative control reintroduces a log decided on one rank's own clock and
must be caught.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.checkpoint import read_checkpoint
from trainer.collectives import compare_ranks, read_record

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = Path(__file__).parent / "faulty_trainer.py"


def _torchrun(
    args: list[str],
    out: Path,
    faults: dict,
    nproc: int = 2,
    timeout: float = 150,
    dist_timeout_s: float = 30,
    restarts: int = 0,
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        "SLOTCON_TEST_FAULTS": json.dumps(faults),
        "SLOTCON_TEST_OUT": str(out),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        f"--max-restarts={restarts}",
        str(LAUNCHER),
        *args,
        "--threads",
        "1",
        "--record-collectives",
        str(out / "collectives"),
        "--dist-timeout-minutes",
        str(dist_timeout_s / 60),
    ]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _records(out: Path, nproc: int = 2) -> list:
    return [read_record(out / "collectives" / f"collectives-rank{r}.jsonl") for r in range(nproc)]


def _params(out: Path, nproc: int = 2) -> list[dict]:
    return [torch.load(out / f"params-rank{r}.pt", weights_only=True) for r in range(nproc)]


def _assert_same_params(results: list[dict]) -> None:
    ref = results[0]["params"]
    for other in results[1:]:
        assert other["step"] == results[0]["step"]
        for name, value in ref.items():
            torch.testing.assert_close(other["params"][name], value, rtol=0, atol=0, msg=name)


@pytest.fixture
def run_args(tiny_train_args: list[str]) -> list[str]:
    """The tiny run of the trainer tests: 24 images, batch 8 (4 per rank) → 3 steps an epoch."""
    return [*tiny_train_args, "--log-every", "1000", "--save-every", "0"]


def test_skew_slow_loader_and_a_nan_on_one_rank_keep_the_ranks_in_step(
    run_args: list[str], tmp_path: Path, read_metrics
) -> None:
    """Rank 1's clock runs 50× fast (a log line is due on it after every step, on rank 0 only every second), its
    loader is slow and its batch of step 4 has a NaN pixel. Every rank logs, skips and stops at the same steps:
    identical records and identical parameters; the NaN step is skipped on both."""
    faults = {"clock_rate": {"1": 50.0}, "slow_loader": {"1": 0.02}, "nan_at": {"1": 4}}
    done = _torchrun([*run_args, "--epochs", "3", "--log-seconds", "1"], tmp_path, faults)
    assert done.returncode == 0, done.stderr[-4000:]
    records = _records(tmp_path)
    assert compare_ranks(records) is None
    phases = [e.phase for e in records[0]]
    assert phases.count("agree") == 9 + 1 and phases.count("log") >= 2  # 9 steps, the first batch, log lines
    assert {"forward", "backward"} <= set(phases)  # SyncBatchNorm's and DDP's collectives are seen too
    assert {e.op for e in records[0] if e.phase == "backward"} == {"ALLREDUCE"}
    _assert_same_params(_params(tmp_path))
    steps, events = read_metrics(tmp_path / "run")
    assert [e["step"] for e in events if e["event"] == "skipped_step"] == [5]
    assert events[-1]["event"] == "finished" and read_checkpoint(tmp_path / "run" / "final.pth")["step"] == 9


def test_an_unreadable_image_on_one_rank_is_reported_by_every_rank(run_args: list[str], tmp_path: Path) -> None:
    done = _torchrun([*run_args, "--epochs", "3"], tmp_path, {"unreadable_at": {"1": 4}})
    assert done.returncode != 0
    results = _params(tmp_path)
    assert [r["code"] for r in results] == [2, 2]
    for rank in (0, 1):  # each rank reports rank 1's file
        line = next(s for s in done.stderr.splitlines() if s.split(" ERROR")[0].endswith(f"[rank {rank}]"))
        assert "rank 1: unreadable image" in line and "broken-rank1.jpg" in line and "before step 5" in line, line
    assert compare_ranks(_records(tmp_path)) is None
    _assert_same_params(results)


def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(
    run_args: list[str], tmp_path: Path, read_metrics
) -> None:
    done = _torchrun([*run_args, "--epochs", "3"], tmp_path, {"sigterm_at": {"1": 3}})
    assert done.returncode == 0, done.stderr[-4000:]
    results = _params(tmp_path)
    assert [r["step"] for r in results] == [4, 4] and [r["code"] for r in results] == [0, 0]
    _, events = read_metrics(tmp_path / "run")
    assert events[-1]["event"] == "stopped" and events[-1]["reason"] == "signal SIGTERM" and events[-1]["step"] == 4
    assert read_checkpoint(tmp_path / "run" / "current.pth")["step"] == 4
    assert compare_ranks(_records(tmp_path)) is None
    _assert_same_params(results)


def test_ranks_that_would_start_differently_are_stopped_before_training(
    run_args: list[str], tmp_path: Path, synthetic_root: Path
) -> None:
    """Rank 1 sees other training images (a node whose data folder differs), then none at all: every rank stops
    at set-up with the same message instead of waiting in different collectives."""
    other = tmp_path / "other"
    other.mkdir()
    for p in sorted((synthetic_root / "train2017").iterdir())[:16]:
        (other / p.name).write_bytes(p.read_bytes())
    for extra, words in (
        (["--data", str(other), "--split", ""], "the ranks would not start alike: rank 0 {'images': 24"),
        (["--data", str(tmp_path / "missing")], "rank 1: dataset path"),
    ):
        done = _torchrun([*run_args, "--epochs", "3"], tmp_path, {"extra_args": {"1": extra}})
        assert done.returncode != 0
        for rank in (0, 1):
            line = next(s for s in done.stderr.splitlines() if f"[rank {rank}] ERROR" in s)
            assert words in line, line


def test_negative_control_a_log_timed_on_one_rank_is_caught(run_args: list[str], tmp_path: Path) -> None:
    """The fault the trainer once had: each rank decides a timed log line on its own clock. With rank 1's clock
    1000× fast (a line due on it after every step, on rank 0 never) the ranks issue different collectives: the
    records differ and the run does not end cleanly; each rank names the collective and the step it was in."""
    faults = {"clock_rate": {"1": 1000.0}, "log_alone": {"0": 1, "1": 1}}
    args = [*run_args, "--epochs", "3", "--log-seconds", "30"]
    done = _torchrun(args, tmp_path, faults, dist_timeout_s=8)
    difference = compare_ranks(_records(tmp_path))
    assert difference is not None and " in log at step " in difference, difference
    assert done.returncode != 0
    for rank in (0, 1):  # each rank fails loudly, naming the step and its last collective
        line = next(s for s in done.stderr.splitlines() if f"[rank {rank}] ERROR trainer: rank {rank}:" in s)
        assert "at step " in line and "last collective issued: " in line, line


@pytest.mark.slow
def test_the_release_recipe_runs_on_two_ranks_in_step(synthetic_root: Path, tmp_path: Path, read_metrics) -> None:
    """coco-r50-800ep as it is (ResNet-50, the 4096/256 heads, K = 256, LARS and the release's schedules) with
    SyncBatchNorm on CPU ranks, 96 px crops, batch 4 (2 a rank), 20 steps in fp32: the records and the final
    parameters are identical on both ranks."""
    args = [
        *("--preset", "coco-r50-800ep", "--data", str(synthetic_root), "--output-dir", str(tmp_path / "run")),
        *("--split", "train2017", "--image-size", "96", "--batch-size", "4", "--epochs", "4", "--total-steps", "20"),
        *("--warmup-epochs", "1", "--precision", "fp32", "--workers", "0", "--progress", "log", "--log-every", "5"),
        *("--device", "cpu", "--no-channels-last", "--log-seconds", "0.5"),
    ]
    done = _torchrun(args, tmp_path, {"clock_rate": {"1": 3.0}}, timeout=600, dist_timeout_s=120)
    assert done.returncode == 0, done.stderr[-4000:]
    records = _records(tmp_path)
    assert compare_ranks(records) is None
    assert sum(e.phase == "agree" for e in records[0]) == 21
    assert sum(e.phase == "backward" and e.op == "ALLREDUCE" for e in records[0]) > 20 * 50  # SyncBN + buckets
    _assert_same_params(_params(tmp_path))
    steps, events = read_metrics(tmp_path / "run")
    assert events[-1]["event"] == "finished" and steps[-1]["step"] == 20
    cfg = read_checkpoint(tmp_path / "run" / "final.pth")["train_config"]
    assert (cfg["arch"], cfg["num_prototypes"], cfg["optimizer"], cfg["dim_hidden"]) == ("resnet50", 256, "lars", 4096)


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run / "final.pth")["model"]


@pytest.mark.slow
def test_elastic_restart_after_a_killed_rank_equals_an_uninterrupted_run(run_args: list[str], tmp_path: Path) -> None:
    """``torchrun --max-restarts=1 ... --auto-resume``: rank 1 is killed (SIGKILL) at step 5; torchrun restarts
    both ranks, which resume from the epoch-1 checkpoint (step 3) and finish. The final weights equal those of an
    uninterrupted run of the same seed (fp32). (The restarted group connects through keys of its own attempt:
    with the attempts sharing torchrun's store, about one restart in two failed to connect.)"""
    common = [*run_args, "--epochs", "3", "--save-every", "1", "--auto-resume"]
    straight = tmp_path / "straight"
    straight.mkdir()
    done = _torchrun([*common, "--output-dir", str(straight / "run")], straight, {})
    assert done.returncode == 0, done.stderr[-3000:]
    killed = tmp_path / "killed"
    killed.mkdir()
    done = _torchrun([*common, "--output-dir", str(killed / "run")], killed, {"sigkill_at": {"1": 5}}, restarts=1)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stderr and "at epoch 1, step 3" in done.stderr
    a, b = _final_weights(straight / "run"), _final_weights(killed / "run")
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-5, msg=name)


@pytest.mark.slow
def test_a_run_resumes_on_another_world_size(run_args: list[str], tmp_path: Path, read_metrics) -> None:
    """A checkpoint of two ranks resumes in one process (and the reverse): the total batch stays, the step
    count goes on, the schedules are recomputed and the change is logged."""
    out = tmp_path / "run"
    done = _torchrun([*run_args, "--epochs", "2", "--max-steps", "2", "--output-dir", str(out)], tmp_path, {})
    assert done.returncode == 0, done.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, "-m", "trainer", *run_args, "--epochs", "2", "--max-steps", "4", "--auto-resume"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
    )
    assert one.returncode == 0, one.stderr[-3000:]
    assert "resuming a run of 2 processes on 1: the total batch stays 8 (8 a process)" in one.stderr
    done = _torchrun([*run_args, "--epochs", "2", "--auto-resume", "--output-dir", str(out)], tmp_path, {})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming a run of 1 processes on 2" in done.stderr
    steps, events = read_metrics(out)
    assert [r["step"] for r in steps if r["step"] in (2, 4, 6)] == [2, 4, 6] and events[-1]["event"] == "finished"
