"""``--budget-minutes``: the total is fixed from timed steps, every schedule completes, resume is exact."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from core.checkpoint import load_model, read_checkpoint
from trainer import engine, loop
from trainer.__main__ import main
from trainer.schedules import lr_schedule, run_schedules, teacher_momentum_schedule


@pytest.fixture
def quick_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Time 3 steps after 1 untimed one, and keep no reserve, so a budget of seconds binds."""
    monkeypatch.setattr(loop, "BUDGET_WARMUP_STEPS", 1)
    monkeypatch.setattr(loop, "BUDGET_MIN_TIMED_STEPS", 3)
    monkeypatch.setattr(loop, "BUDGET_MIN_TIMED_S", 0.0)
    monkeypatch.setattr(loop, "BUDGET_RESERVE_S", 0.0)


@pytest.fixture
def one_second_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The budget's clock reads the step count: every step takes exactly one second, whatever the load."""
    monkeypatch.setattr(engine.Trainer, "clock", lambda self: float(getattr(self, "step", 0)))


def _budget_note(run: Path) -> dict:
    import json

    notes = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines() if '"budget"' in s]
    assert len(notes) == 1
    return notes[0]


def test_run_schedules_complete_and_keep_the_provisional_head() -> None:
    lrs, moms = run_schedules(0.8, 10, 1e-6, 100.0, 0.95, total_steps=40, provisional_steps=300, fixed_at=6)
    assert lrs.shape == moms.shape == (41,)
    assert lrs[-1] == pytest.approx(1e-6, abs=1e-15) and moms[-1] == 1.0  # both schedules end where they should
    np.testing.assert_array_equal(lrs[:6], lr_schedule(0.8, 300, 10, 1e-6, 100.0)[:6])
    np.testing.assert_array_equal(moms[:6], teacher_momentum_schedule(0.95, 300)[:6])
    np.testing.assert_array_equal(lrs[6:40], lr_schedule(0.8, 40, 10, 1e-6, 100.0)[6:])
    np.testing.assert_array_equal(moms[6:40], teacher_momentum_schedule(0.95, 40)[6:])
    assert np.all(np.diff(moms) >= 0)


@pytest.mark.slow
def test_budget_fixes_the_total_from_the_step_time(
    quick_budget, one_second_steps, tiny_train_args: list[str], tmp_path: Path, read_metrics
) -> None:
    assert main([*tiny_train_args, "--epochs", "400", "--budget-minutes", "0.5", "--save-every", "1000"]) == 0
    run = tmp_path / "run"
    note = _budget_note(run)
    total = note["total_steps"]
    # 1 untimed + 3 timed steps of 1 s: fixed at step 4 with 26 s left, 97 % of which is 25 more steps
    assert (note["step"], note["step_seconds"], note["remaining_s"]) == (4, 1.0, 26.0)
    assert total == note["step"] + math.floor(loop.BUDGET_SAFETY * note["remaining_s"] / note["step_seconds"]) == 29
    assert total < note["full_steps"] == 1200  # the budget, not the epochs, bounds this run
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert (cfg["total_steps"], cfg["schedule_fixed_at"], cfg["budget_minutes"]) == (total, note["step"], 0.5)
    ckpt = read_checkpoint(run / "final.pth")
    assert ckpt["step"] == total and ckpt["train_config"]["total_steps"] == total
    steps, events = read_metrics(run)
    assert events[-1]["event"] == "finished" and steps[-1]["step"] == total and steps[-1]["total_steps"] == total
    lrs, moms = run_schedules(
        cfg["lr"],
        round(cfg["warmup_epochs"] * 3),
        cfg["final_lr"],
        cfg["warmup_multiplier"],
        cfg["teacher_momentum"],
        total,
        1200,
        note["step"],
    )
    assert lrs[total] == pytest.approx(cfg["final_lr"], abs=1e-12) and moms[total] == 1.0
    assert steps[-1]["lr"] == pytest.approx(lrs[total - 1]) and steps[-1]["momentum"] == pytest.approx(moms[total - 1])


@pytest.mark.slow
def test_budget_takes_the_median_step_so_one_slow_step_does_not_shrink_the_run(
    quick_budget, monkeypatch: pytest.MonkeyPatch, tiny_train_args: list[str], tmp_path: Path
) -> None:
    # steps take 1 s each, except the third, which takes 30 s (another process's burst of load)
    monkeypatch.setattr(
        engine.Trainer,
        "clock",
        lambda self: float(getattr(self, "step", 0)) + (29.0 if getattr(self, "step", 0) >= 3 else 0.0),
    )
    assert main([*tiny_train_args, "--epochs", "400", "--budget-minutes", "1", "--save-every", "1000"]) == 0
    note = _budget_note(tmp_path / "run")
    assert note["step"] == 4 and note["step_seconds"] == 1.0  # the median of 1, 30, 1 (the mean would be 10.7)
    assert note["remaining_s"] == 60.0 - 33.0
    assert note["total_steps"] == 4 + math.floor(loop.BUDGET_SAFETY * 27.0) == 30
    assert note["cpus"] >= 1 and (note["load_average"] is None or note["load_average"] >= 0)


@pytest.mark.slow
def test_budget_capped_by_the_epochs(quick_budget, tiny_train_args: list[str], tmp_path: Path) -> None:
    """On the real clock: a generous budget is capped by the preset's epochs."""
    assert main([*tiny_train_args, "--epochs", "4", "--budget-minutes", "5"]) == 0
    note = _budget_note(tmp_path / "run")
    assert note["total_steps"] == note["full_steps"] == 12
    assert read_checkpoint(tmp_path / "run" / "final.pth")["step"] == 12


@pytest.mark.slow
def test_budgeted_run_resumes_exactly(
    quick_budget, one_second_steps, tiny_train_args: list[str], tmp_path: Path, read_metrics
) -> None:
    """Stop a budgeted run after its total was fixed, resume it; compare with one straight run of that total."""
    args = [*tiny_train_args, "--epochs", "400", "--budget-minutes", "0.25", "--save-every", "1000"]
    split = tmp_path / "split"
    assert main([*args, "--output-dir", str(split), "--max-steps", "6"]) == 0
    fixed = yaml.safe_load((split / "config.yaml").read_text())
    assert (fixed["schedule_fixed_at"], fixed["total_steps"]) == (4, 4 + math.floor(0.97 * 11)), fixed
    assert read_checkpoint(split / "current.pth")["step"] == 6
    assert main([*args, "--output-dir", str(split), "--auto-resume"]) == 0  # adopts the checkpoint's total
    assert yaml.safe_load((split / "config.yaml").read_text())["total_steps"] == fixed["total_steps"]
    straight = tmp_path / "straight"  # the fixed total and head from the first config.yaml: no timing at all
    assert (
        main(
            [
                *args,
                "--config",
                str(split / "config.yaml"),
                "--output-dir",
                str(straight),
                "--max-steps",
                "0",
                "--resume",
                "",
            ]
        )
        == 0
    )
    a, _ = read_metrics(straight)
    b, _ = read_metrics(split)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, fixed["total_steps"] + 1))
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", "loss_group", "loss_slot", "lr", "momentum"):
            assert rb[key] == pytest.approx(ra[key], abs=1e-5), (ra["step"], key)
    sa, sb = load_model(straight / "final.pth").state_dict(), load_model(split / "final.pth").state_dict()
    for k in sa:
        assert float((sa[k].float() - sb[k].float()).abs().max()) <= 1e-5, k


def test_budget_and_total_steps_exclude_each_other(tiny_train_args: list[str]) -> None:
    with pytest.raises(SystemExit):
        main([*tiny_train_args, "--budget-minutes", "1", "--total-steps", "10"])


def test_an_explicit_length_replaces_the_presets(tmp_path: Path) -> None:
    """cpu-demo's 9-minute budget gives way to an explicit --total-steps (and a YAML budget to a flag's steps)."""
    from trainer.config import get_args_parser, resolve_config

    parser = get_args_parser()
    steps = resolve_config(parser.parse_args(["--preset", "cpu-demo", "--total-steps", "300"]))
    assert (steps.total_steps, steps.budget_minutes) == (300, 0)
    default = resolve_config(parser.parse_args(["--preset", "cpu-demo"]))
    assert (default.total_steps, default.budget_minutes) == (0, 9.0)
    (tmp_path / "steps.yaml").write_text("total_steps: 40\n")
    budget = resolve_config(
        parser.parse_args(["--preset", "cpu-demo", "--config", str(tmp_path / "steps.yaml"), "--budget-minutes", "3"])
    )
    assert (budget.total_steps, budget.budget_minutes) == (0, 3.0)
