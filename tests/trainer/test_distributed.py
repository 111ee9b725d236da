"""Cross-rank behaviour on CPU with gloo: gathered keys, labels and centre all-reduce; torchrun training."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.checkpoint import read_checkpoint
from core.losses import batch_center, presence_mask, slot_contrastive_loss

REPO = Path(__file__).resolve().parents[2]
WORLD, B, K, D, H = 2, 3, 5, 8, 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    return {
        "ss": torch.randn(WORLD, B, K, D, generator=g),
        "ts": torch.randn(WORLD, B, K, D, generator=g),
        "sd": torch.randn(WORLD, B, K, H, H, generator=g),
        "td": torch.randn(WORLD, B, K, H, H, generator=g),
        "td2": torch.randn(WORLD, B, K, H, H, generator=g),
        "predictor": nn.Linear(D, D).state_dict(),
    }


def _by_hand_rank_loss(data: dict, predictor: nn.Module, rank: int, tau: float = 0.2) -> torch.Tensor:
    """Rank ``rank``'s loss written out: its queries against the keys of every rank, labels by position."""
    keys, key_ids = [], []
    for r in range(WORLD):
        mk = presence_mask(data["td"][r])  # (B, K)
        for i in range(B):
            for k in range(K):
                if mk[i, k]:
                    keys.append(F.normalize(data["ts"][r, i, k], dim=0))
                    key_ids.append((r, i, k))
    keys_t = torch.stack(keys)  # (Nk, D)
    mq = presence_mask(data["sd"][rank]) & presence_mask(data["td"][rank])
    queries, labels = [], []
    for i in range(B):
        for k in range(K):
            if mq[i, k]:
                queries.append(F.normalize(predictor(data["ss"][rank, i, k]), dim=0))
                labels.append(key_ids.index((rank, i, k)))
    logits = torch.stack(queries) @ keys_t.t() / tau
    return F.cross_entropy(logits, torch.tensor(labels)) * 2 * tau


def test_two_rank_slot_loss_and_center_equal_single_process(tmp_path: Path, run_ranks) -> None:
    data = _inputs()
    torch.save(data, tmp_path / "inputs.pt")
    worker = str(Path(__file__).parent / "dist_worker.py")
    results = run_ranks([worker, str(tmp_path / "inputs.pt"), str(tmp_path)], tmp_path, world=WORLD)

    predictor = nn.Linear(D, D)
    predictor.load_state_dict(data["predictor"])
    for r in range(WORLD):
        torch.testing.assert_close(results[r]["loss"], _by_hand_rank_loss(data, predictor, r).detach())

    # one process on the gathered batch: mean over all queries = query-weighted mean of the ranks' losses
    cat = {k: data[k].flatten(0, 1) for k in ("ss", "ts", "sd", "td", "td2")}
    single = slot_contrastive_loss(cat["ss"], cat["ts"], cat["sd"], cat["td"], predictor, 0.2)
    n_q = [int((presence_mask(data["sd"][r]) & presence_mask(data["td"][r])).sum()) for r in range(WORLD)]
    weighted = sum(n * res["loss"] for n, res in zip(n_q, results, strict=True)) / sum(n_q)
    torch.testing.assert_close(weighted, single.detach())
    single.backward()
    ddp_grad = sum(n * res["grad"] for n, res in zip(n_q, results, strict=True)) / sum(n_q)
    torch.testing.assert_close(ddp_grad, predictor.weight.grad, rtol=1e-4, atol=1e-6)

    # the centre: every rank gets the mean over all ranks' pixels
    want = batch_center(cat["td"], cat["td2"])
    for res in results:
        torch.testing.assert_close(res["center"], want)


@pytest.mark.slow
def test_torchrun_two_process_training_checkpoints_and_resumes(
    tiny_train_args: list[str], tmp_path: Path, read_metrics
) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "trainer",
        *tiny_train_args,
        "--threads",
        "1",
    ]
    first = subprocess.run([*base, "--max-steps", "2"], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "run"
    assert read_checkpoint(run / "current.pth")["step"] == 2
    second = subprocess.run([*base, "--auto-resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stderr[-3000:]
    steps, events = read_metrics(run)
    assert [r["step"] for r in steps] == list(range(1, 7))  # 24 images / (2 ranks × 4) = 3 steps per epoch
    assert events[-1]["event"] == "finished"
    assert read_checkpoint(run / "final.pth")["step"] == 6


def test_a_rank_without_shared_prototypes_does_not_hang_ddp(synthetic_root: Path, tmp_path: Path, run_ranks) -> None:
    """One rank's batch shares no prototype between its views (its slot loss is empty); two real DDP training
    steps still finish, every rank takes part in the same collectives, and all ranks end with identical
    parameters. (Before the fix the second step raised: the predictor had no gradient on rank 0.)"""
    worker = str(Path(__file__).parent / "ddp_step_worker.py")
    results = run_ranks([worker, str(synthetic_root), str(tmp_path)], tmp_path)
    assert all(t["loss_slot"] == 0.0 and t["positive_pairs"] == 0.0 for t in results[0]["terms"])  # empty
    assert all(t["loss_slot"] > 0.0 and t["positive_pairs"] > 0.0 for t in results[1]["terms"])  # real
    a, b = results[0]["params"], results[1]["params"]
    assert set(a) == set(b) and any(k.startswith("predictor_slot.") for k in a)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def _empty_loss_steps(device: str, mode: str, tmp_path: Path, run_ranks, *bucket_mb: str) -> None:
    worker = str(Path(__file__).parent / "dist_empty_loss_worker.py")
    results = run_ranks([worker, device, mode, str(tmp_path), *bucket_mb], tmp_path)
    assert results[0]["ops"] == results[1]["ops"]  # the same collectives in the same order
    assert results[0]["losses"] == [0.0, 0.0]
    if mode == "one-empty":
        assert all(v > 0 for v in results[1]["losses"])
    else:
        assert results[1]["losses"] == [0.0, 0.0]
    a, b = results[0]["params"], results[1]["params"]
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["one-empty", "all-empty"])
def test_empty_slot_loss_keeps_ddp_ranks_in_step(mode: str, tmp_path: Path, run_ranks) -> None:
    """Per-rank BatchNorm (CPU DDP): two steps finish and the ranks' predictors stay identical."""
    _empty_loss_steps("cpu", mode, tmp_path, run_ranks)


@pytest.mark.parametrize("mode", ["one-empty", "all-empty"])
def test_empty_slot_loss_under_syncbn_issues_the_same_collectives_on_every_rank(
    mode: str, tmp_path: Path, run_ranks
) -> None:
    """SyncBatchNorm on CPU ranks (core.syncbn), one DDP bucket per parameter, so a gradient that becomes ready
    early on one rank shows: the rank without queries issues the predictor's SyncBatchNorm all-reduce and the
    buckets' all-reduces in the same order as the rank with queries (recorded), and the predictors stay equal.
    (With a second gradient path from the loss straight to the parameters, the empty rank reduced a bucket
    first and gloo failed on the size mismatch.)"""
    _empty_loss_steps("cpu-sync", mode, tmp_path, run_ranks, "0.000001")


@pytest.mark.gpu  # SyncBatchNorm runs only on CUDA tensors
@pytest.mark.parametrize("mode", ["one-empty", "all-empty"])
def test_empty_slot_loss_keeps_syncbn_ranks_in_step(mode: str, tmp_path: Path, run_ranks) -> None:
    """SyncBatchNorm (GPU DDP; two ranks share GPU 0 over gloo): the rank without queries still joins the
    predictor's statistics collectives, so no rank waits for ever; the ranks' predictors stay identical."""
    _empty_loss_steps("cuda", mode, tmp_path, run_ranks)
