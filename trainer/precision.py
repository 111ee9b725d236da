"""``--precision auto``: the precision the hardware runs fastest without changing the method.

- CUDA: fp16 with the grad scaler, as the release trains every recipe (its ``--fp16`` defaults to True). bf16
  only when asked (``--precision bf16``): it needs no scaler but is not what the published checkpoints saw.
- CPU: bf16 autocast only where the CPU computes bf16 natively (AVX-512 BF16 or AMX on x86). Elsewhere
  bf16 is emulated: on an AVX2-only CPU a bf16 matmul runs about 100× slower than fp32, so ``auto`` is fp32.
  The CPU capability torch dispatches to (``torch.backends.cpu.get_cpu_capability()``) settles most
  cases; where it does not (``AVX512`` exists with and without BF16; Arm), the CPU flags are read and, if
  they say nothing, a short bf16-vs-fp32 matmul probe decides (cached for the process).

:func:`choose_precision` is the decision as a pure function of those facts (so every branch is tested on
any machine); :func:`resolve_precision` gathers the facts for this process and returns ``(precision, why)``.
"""

from __future__ import annotations

import functools
import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch

from core.recipes import PRECISIONS

logger = logging.getLogger(__name__)

#: Capabilities with no native bf16 arithmetic: the decision needs no probe.
CAPABILITIES_WITHOUT_BF16 = frozenset({"DEFAULT", "NO AVX", "AVX", "AVX2"})
#: CPU flags (``/proc/cpuinfo``) of native bf16 arithmetic on x86.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
#: bf16 counts as native when a bf16 matmul takes at most this fraction of the fp32 time.
PROBE_MAX_RATIO = 0.8


def choose_precision(
    device_type: str,
    *,
    capability: str | None = None,
    cpu_flags: frozenset[str] | None = None,
    probe_ratio: float | None = None,
    cuda_bf16: bool = False,
) -> tuple[str, str]:
    """Returns ``(precision, reason)`` for ``--precision auto``.

    device_type: ``"cuda"`` or ``"cpu"``; capability: torch's CPU capability string; cpu_flags: the CPU's
    feature flags when known (None: unknown); probe_ratio: bf16 / fp32 matmul time when measured;
    cuda_bf16: the GPU supports bf16 (named in the reason; the choice on CUDA is fp16 either way).
    Raises ValueError when a CPU decision needs a probe it was not given.
    """
    if device_type == "cuda":
        has = "with bf16 support (--precision bf16 to train in it)" if cuda_bf16 else "without bf16"
        return "fp16", f"CUDA device {has}: fp16 with the grad scaler, as the release trains"
    if device_type != "cpu":
        return "fp32", f"device {device_type}"
    cap = capability or "unknown"
    if cap in CAPABILITIES_WITHOUT_BF16:
        return "fp32", f"CPU capability {cap}, no native bf16"
    if cpu_flags is not None and cpu_flags & BF16_CPU_FLAGS:
        found = ", ".join(sorted(cpu_flags & BF16_CPU_FLAGS))
        return "bf16", f"CPU capability {cap} with native bf16 ({found})"
    if cpu_flags is not None and cap.startswith("AVX512"):
        return "fp32", f"CPU capability {cap} without the avx512_bf16/amx_bf16 flags, no native bf16"
    if probe_ratio is None:
        raise ValueError(f"CPU capability {cap}: the bf16 decision needs a matmul probe")
    if probe_ratio <= PROBE_MAX_RATIO:
        return "bf16", f"CPU capability {cap}, bf16 matmul {probe_ratio:.2f}× the fp32 time (native)"
    return "fp32", f"CPU capability {cap}, bf16 matmul {probe_ratio:.2f}× the fp32 time (emulated)"


def read_cpu_flags(path: str | Path = "/proc/cpuinfo") -> frozenset[str] | None:
    """Returns the first CPU's feature flags from ``/proc/cpuinfo`` (Linux), or None where unreadable."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def cpu_model(path: str | Path = "/proc/cpuinfo") -> str:
    """Returns the CPU's model name (``/proc/cpuinfo``, as ``lscpu`` shows it), else the platform's word."""
    try:
        for line in Path(path).read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_machine() -> dict[str, Any]:
    """Returns where a figure was measured: CPU model and torch capability, torch threads, the GPU if any."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "gpu": gpu,
        "torch": torch.__version__,
    }


@functools.cache
def bf16_probe_ratio(size: int = 256, seconds: float = 0.1) -> float:
    """Returns the time of a bf16 ``size``² matmul over that of an fp32 one on this CPU (cached per process).

    Emulated bf16 shows up as a ratio far above 1 (about 100 on AVX2), native bf16 below 1. The probe is
    bounded by ``seconds`` per precision, so it stays short even where bf16 is slow.
    """

    def per_matmul(dtype: torch.dtype) -> float:
        a = torch.randn(size, size).to(dtype)
        b = torch.randn(size, size).to(dtype)
        a @ b  # first call: kernel selection, allocation
        n, start = 0, time.perf_counter()
        while True:
            a @ b
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds or n >= 200:
                return elapsed / n

    return per_matmul(torch.bfloat16) / per_matmul(torch.float32)


def resolve_precision(requested: str, device: torch.device | str) -> tuple[str, str]:
    """Returns ``(precision, reason)``: ``requested`` itself unless it is ``auto``, else :func:`choose_precision`
    on this process's hardware (``reason`` then reads e.g. ``auto → fp32 (CPU capability AVX2, no native bf16)``).
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision={requested!r}; choose one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested, f"{requested} (explicit)"
    device = torch.device(device)
    if device.type == "cuda":
        choice, why = choose_precision("cuda", cuda_bf16=torch.cuda.is_bf16_supported())
    else:
        cap = torch.backends.cpu.get_cpu_capability()
        flags = read_cpu_flags()
        try:
            choice, why = choose_precision(device.type, capability=cap, cpu_flags=flags)
        except ValueError:
            choice, why = choose_precision(device.type, capability=cap, cpu_flags=flags, probe_ratio=bf16_probe_ratio())
    return choice, f"auto → {choice} ({why})"
