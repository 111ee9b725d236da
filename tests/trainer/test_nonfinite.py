"""Non-finite steps: skipped in every precision (fp16 with the grad scaler lowering its scale, as the release),
the run stopping after 20 in a row; skipped steps are logged in metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer.__main__ import main
from trainer.config import get_args_parser, resolve_config
from trainer.engine import MAX_CONSECUTIVE_SKIPPED, Trainer


def _state(trainer: Trainer) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(student parameters, buffers: BatchNorm statistics and the centre). The teacher moves by its EMA on
    every step, skipped or not, as in the release."""
    params = [p.detach().clone() for p in trainer.model.parameters() if p.requires_grad]
    buffers = [b.detach().clone() for b in trainer.model.buffers()]
    return params, buffers


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_fp16_skips_non_finite_steps_and_recovers(tiny_train_args: list[str]) -> None:
    """A batch with a NaN pixel (non-finite loss) and an overflowing scale (finite loss, infinite gradients):
    both steps are skipped with the scale lowered and nothing of the model changed; the next step trains."""
    trainer = Trainer(resolve_config(get_args_parser().parse_args([*tiny_train_args, "--precision", "fp16"])))
    assert trainer.scaler is not None
    trainer.sampler.set_epoch(0)
    crops, coords, flags = next(iter(trainer.loader))
    bad = [c.clone() for c in crops]
    bad[0][1, :, 5, 5] = float("nan")
    before, scale = _state(trainer), trainer.scaler.get_scale()
    out = trainer.train_step((bad, coords, flags))
    assert bool(out["skipped"]) and bool(out["nonfinite"]) and not torch.isfinite(out["loss"])
    assert trainer.scaler.get_scale() == scale / 2
    assert _same(before[0], _state(trainer)[0]) and _same(before[1], _state(trainer)[1])  # params, BN stats, centre

    trainer.step += 1
    trainer.scaler.update(new_scale=2.0**100)  # finite loss, but the scaled gradients overflow in fp16
    out = trainer.train_step((crops, coords, flags))
    assert bool(out["skipped"]) and torch.isfinite(out["loss"]) and trainer.scaler.get_scale() == 2.0**99
    assert _same(before[0], _state(trainer)[0])

    trainer.step += 1
    trainer.scaler.update(new_scale=1024.0)
    out = trainer.train_step((crops, coords, flags))
    assert not bool(out["skipped"]) and not bool(out["nonfinite"])
    assert not _same(before[0], _state(trainer)[0])


def test_fp16_run_stops_after_consecutive_skipped_steps(
    tiny_train_args: list[str], read_metrics, tmp_path: Path
) -> None:
    """A diverged run (lr 1e30: every step after the first overflows) in fp16: each step is skipped and logged;
    the run stops after 20 in a row, naming the step, without a final checkpoint."""
    code = main(
        [
            *tiny_train_args,
            "--precision",
            "fp16",
            "--lr",
            "1e30",
            "--optimizer",
            "sgd",
            "--warmup-epochs",
            "0",
            "--epochs",
            "6",
            "--save-every",
            "100",
            "--image-size",
            "32",
            "--batch-size",
            "4",
        ]
    )
    assert code == 3
    steps, events = read_metrics(tmp_path / "run")
    skipped = [e for e in events if e["event"] == "skipped_step"]
    assert [e["skipped_steps"] for e in skipped] == list(range(1, len(skipped) + 1))
    skipped = skipped[-MAX_CONSECUTIVE_SKIPPED:]  # the streak that stopped the run (a step may pass before it)
    assert [e["consecutive"] for e in skipped] == list(range(1, MAX_CONSECUTIVE_SKIPPED + 1))
    first = skipped[0]["step"]
    assert first >= 2 and [e["step"] for e in skipped] == list(range(first, first + MAX_CONSECUTIVE_SKIPPED))
    assert all(e["reason"].startswith("non-finite") for e in skipped)
    assert [e["scale"] for e in skipped] == [skipped[0]["scale"] / 2**i for i in range(MAX_CONSECUTIVE_SKIPPED)]
    assert events[-1]["event"] == "failed"
    assert f"{MAX_CONSECUTIVE_SKIPPED} consecutive fp16 steps skipped" in events[-1]["message"]
    assert f"step {skipped[-1]['step']} " in events[-1]["message"]
    all_skipped = [e["step"] for e in events if e["event"] == "skipped_step"]
    assert all(r["skipped_steps"] == sum(s <= r["step"] for s in all_skipped) for r in steps)
    assert not (tmp_path / "run" / "final.pth").exists()


@pytest.mark.parametrize("precision", [pytest.param("fp32", marks=pytest.mark.slow), "bf16"])
def test_without_a_scaler_non_finite_steps_are_skipped_then_stop(
    precision: str, tiny_train_args: list[str], read_metrics, tmp_path: Path
) -> None:
    """lr 1e30: from step 2 on every loss is non-finite; each step is skipped (no optimiser step, so the model
    stays as it was) until 20 in a row stop the run, naming the precision and the step."""
    code = main(
        [
            *tiny_train_args,
            *("--precision", precision, "--lr", "1e30", "--optimizer", "sgd", "--warmup-epochs", "0"),
            *("--epochs", "8", "--image-size", "32", "--batch-size", "4", "--save-every", "100"),
        ]
    )
    assert code == 3
    steps, events = read_metrics(tmp_path / "run")
    skipped = [e for e in events if e["event"] == "skipped_step"]
    assert [e["step"] for e in skipped] == list(range(2, 2 + MAX_CONSECUTIVE_SKIPPED))
    assert all(e["scale"] is None and e["reason"] == "non-finite loss" for e in skipped)
    assert events[-1]["event"] == "failed"
    message = events[-1]["message"]
    assert f"{MAX_CONSECUTIVE_SKIPPED} consecutive {precision} steps skipped" in message
    assert f"step {1 + MAX_CONSECUTIVE_SKIPPED} " in message
    assert not (tmp_path / "run" / "final.pth").exists()
