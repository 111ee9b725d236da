"""``--precision auto``: the decision as a function of the hardware facts, and its use by the trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trainer.precision import (
    PROBE_MAX_RATIO,
    bf16_probe_ratio,
    choose_precision,
    read_cpu_flags,
    resolve_precision,
)


@pytest.mark.parametrize("capability", ["AVX2", "DEFAULT", "NO AVX"])
def test_cpu_without_native_bf16_is_fp32(capability: str) -> None:
    # conclusive from the capability alone: no flags and no probe are needed (even flags claiming bf16 lose)
    precision, why = choose_precision("cpu", capability=capability)
    assert precision == "fp32" and capability in why and "no native bf16" in why
    assert choose_precision("cpu", capability=capability, cpu_flags=frozenset({"avx512_bf16"}))[0] == "fp32"


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_avx512_with_bf16_flags_is_bf16(flag: str) -> None:
    precision, why = choose_precision("cpu", capability="AVX512", cpu_flags=frozenset({"avx512f", flag}))
    assert precision == "bf16" and flag in why


def test_avx512_without_bf16_flags_is_fp32() -> None:
    precision, why = choose_precision("cpu", capability="AVX512", cpu_flags=frozenset({"avx512f", "avx512bw"}))
    assert precision == "fp32" and "no native bf16" in why


def test_inconclusive_cpu_needs_the_probe() -> None:
    with pytest.raises(ValueError, match="probe"):
        choose_precision("cpu", capability="SVE256", cpu_flags=None)
    assert choose_precision("cpu", capability="SVE256", probe_ratio=0.4)[0] == "bf16"
    assert choose_precision("cpu", capability="SVE256", probe_ratio=PROBE_MAX_RATIO + 0.01)[0] == "fp32"
    precision, why = choose_precision("cpu", capability="AVX512", probe_ratio=95.0)
    assert precision == "fp32" and "emulated" in why


@pytest.mark.parametrize("cuda_bf16", [True, False])
def test_cuda_trains_in_fp16_with_the_scaler_as_the_release(cuda_bf16: bool) -> None:
    """Every preset says ``auto``; on any CUDA capability that is the release's fp16 with a grad scaler (bf16 only
    when asked), and the reason says so."""
    precision, why = choose_precision("cuda", cuda_bf16=cuda_bf16)
    assert precision == "fp16" and "grad scaler" in why and "release" in why
    assert ("--precision bf16" in why) == cuda_bf16


def test_explicit_precision_wins() -> None:
    for p in ("fp32", "fp16", "bf16"):
        assert resolve_precision(p, "cpu") == (p, f"{p} (explicit)")
    with pytest.raises(ValueError, match="auto"):
        resolve_precision("fp8", "cpu")


def test_auto_on_this_machine_names_its_reason() -> None:
    precision, why = resolve_precision("auto", "cpu")
    assert precision in ("fp32", "bf16") and why.startswith(f"auto → {precision} (CPU capability ")


def test_probe_and_cpu_flags(tmp_path: Path) -> None:
    ratio = bf16_probe_ratio(64, 0.01)
    assert ratio > 0 and bf16_probe_ratio(64, 0.01) == ratio  # cached for the process
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert read_cpu_flags(info) == frozenset({"fpu", "avx2", "avx512f", "avx512_bf16"})
    assert read_cpu_flags(tmp_path / "missing") is None


def test_run_records_the_resolved_precision(tiny_train_args: list[str], tmp_path: Path, caplog) -> None:
    from core.checkpoint import read_checkpoint
    from trainer.__main__ import main

    caplog.set_level("INFO")
    args = [a for a in tiny_train_args if a not in ("--precision", "fp32")]
    assert main([*args, "--precision", "auto", "--max-steps", "1"]) == 0
    run = tmp_path / "run"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["precision"] in ("fp32", "bf16") and cfg["precision_reason"].startswith("auto → ")
    assert read_checkpoint(run / "final.pth")["train_config"]["precision_reason"] == cfg["precision_reason"]
    first = next(r.getMessage() for r in caplog.records if r.name == "trainer")
    assert first == f"precision {cfg['precision_reason']}"


def test_print_plan_names_the_machine_precision_and_budget(capsys) -> None:
    import json

    from trainer.__main__ import main

    assert main(["--preset", "cpu-demo", "--budget-minutes", "7.5", "--print-plan"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["budget_minutes"] == 7.5 and plan["device"] == "cpu" and plan["threads"] >= 1
    assert plan["precision"] in ("fp32", "bf16") and plan["precision_reason"].startswith(f"auto → {plan['precision']}")
    assert plan["cpu_model"] and plan["cpu_capability"] in plan["precision_reason"]
