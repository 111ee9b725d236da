"""Training throughput of one process: images/s (median over timed steps), data-wait fraction, peak memory.

Prints one JSON object. Examples (CPU, 2 cores)::

    python bench/train_throughput.py --preset cpu-demo --threads 2 --workers 1   # precision auto
    python bench/train_throughput.py --arch resnet18 --image-size 224 --batch-size 8 --precision fp32
    python bench/train_throughput.py --arch resnet50 --image-size 224 --batch-size 8 --precision bf16 \\
        --channels-last --fast-augment

``--baseline`` times the release-style step instead: the same model and loss, but LARS and the teacher
EMA as per-parameter Python loops (how the public release implements them), for a side-by-side figure.
``--against-release`` times, alternately in one process (same data, threads and load), the release's step
on this machine (fp32, NCHW, the PIL augmentation, per-parameter loops), the trainer's default step and
its ``--fast`` mode (``trainer.config.fast_mode``: the precision ``auto`` resolves to, channels_last, the
tensor augmentation), and prints each one's median with the ratio to the release::

    python bench/train_throughput.py --against-release --rounds 3 --steps 6 --threads 2 --workers 1
    python bench/train_throughput.py --against-release --arch resnet50 --width 1 --image-size 224 \\
        --batch-size 8 --dim-hidden 4096 --rounds 3 --steps 4
Data: ``--data ROOT`` (default: synthetic scenes generated into a temporary folder at ``--synth-size``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.config import PRESETS, TrainConfig  # noqa: E402
from trainer.engine import Trainer  # noqa: E402
from trainer.lars import LARS  # noqa: E402
from trainer.precision import describe_machine  # noqa: E402


def _loop_momentum_update(model: torch.nn.Module, m: float) -> None:
    qs, ks = model.student_teacher_pairs()
    with torch.no_grad():
        for q, k in zip(qs, ks, strict=True):
            k.data = k.data * m + q.data * (1.0 - m)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Returns the benchmark's arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu-demo", choices=sorted(PRESETS))
    p.add_argument("--arch", default=None)
    p.add_argument("--width", type=float, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--num-prototypes", type=int, default=None)
    p.add_argument("--dim-hidden", type=int, default=None)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels_last memory format (default: the preset's)",
    )
    p.add_argument("--compile", action="store_true")
    p.add_argument("--fast-augment", action="store_true")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--baseline", action="store_true", help="release-style per-parameter LARS and EMA loops")
    p.add_argument(
        "--against-release",
        action="store_true",
        help="alternate the release's step, the default step and the --fast step; print each and the ratios",
    )
    p.add_argument("--rounds", type=int, default=3, help="with --against-release: rounds of --steps per variant")
    p.add_argument("--data", default=None)
    p.add_argument("--synth-size", type=int, default=128)
    return p.parse_args(argv)


def _make_trainer(values: dict, *, baseline: bool) -> Trainer:
    """A Trainer for ``values``; ``baseline``: LARS and the teacher EMA as the release's per-parameter loops."""
    cfg = TrainConfig.from_dict(values)
    trainer = Trainer(cfg)
    if baseline:
        if cfg.optimizer == "lars":
            trainer.optimizer = LARS(
                trainer.optimizer.param_groups[0]["params"],
                lr=cfg.scaled_lr(),
                weight_decay=cfg.weight_decay,
                foreach=False,
            )
        trainer.model.momentum_update = lambda m: _loop_momentum_update(trainer.model, m)  # type: ignore[method-assign]
    trainer.sampler.set_epoch(0)
    trainer._bench_iter = iter(trainer.loader)  # type: ignore[attr-defined]
    return trainer


def _time_steps(trainer: Trainer, n: int) -> tuple[list[float], list[float]]:
    """Runs ``n`` training steps; returns each step's seconds (data included) and its data-wait seconds."""
    cuda = trainer.device.type == "cuda"
    times, waits = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            batch = next(trainer._bench_iter)  # type: ignore[attr-defined]
        except StopIteration:
            trainer._bench_iter = iter(trainer.loader)  # type: ignore[attr-defined]
            batch = next(trainer._bench_iter)  # type: ignore[attr-defined]
        t1 = time.perf_counter()
        trainer.train_step(batch)
        trainer.step += 1
        if cuda:
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        times.append(t2 - t0)
        waits.append(t1 - t0)
    return times, waits


def _against_release(a: argparse.Namespace, values: dict) -> dict:
    """The release's step, the default step and the fast mode's, alternated round by round."""
    from trainer.config import fast_mode

    device_type = "cuda" if (a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available())) else "cpu"
    fast = fast_mode()
    variants = {
        "release": (
            {
                **values,
                "precision": "fp32" if device_type == "cpu" else "fp16",
                "channels_last": False,
                "fast_augment": False,
            },
            True,
        ),  # fmt: skip
        "default": ({**values}, False),
        "fast": ({**values, **fast}, False),
    }
    trainers = {name: _make_trainer(v, baseline=b) for name, (v, b) in variants.items()}
    for t in trainers.values():
        _time_steps(t, a.warmup)
    times: dict[str, list[float]] = {name: [] for name in trainers}
    per_round: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(a.rounds):
        for name, t in trainers.items():
            ts, _ = _time_steps(t, a.steps)
            times[name] += ts
            per_round[name].append(round(statistics.median(ts), 4))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    batch = values["batch_size"]
    return {
        "mode": "against-release",
        "arch": values["arch"],
        "width": values["width"],
        "image_size": values["image_size"],
        "batch_size": batch,
        "threads": torch.get_num_threads(),
        "workers": values["workers"],
        "variants": {
            name: {
                "precision": t.cfg.precision,
                "channels_last": t.cfg.channels_last,
                "fast_augment": t.cfg.fast_augment,
                "per_parameter_loops": variants[name][1],
                "step_s_median": round(med[name], 4),
                "step_s_per_round": per_round[name],
                "images_per_sec": round(batch / med[name], 2),
            }
            for name, t in trainers.items()
        },
        "fast_mode": fast,
        "speedup_default_vs_release": round(med["release"] / med["default"], 3),
        "speedup_fast_vs_release": round(med["release"] / med["fast"], 3),
        "rounds": a.rounds,
        "steps_per_round": a.steps,
        "warmup": a.warmup,
        "machine": describe_machine(),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its JSON; returns 0."""
    a = parse_args(argv)
    values = {**TrainConfig().to_dict(), **PRESETS[a.preset]}
    for name in ("arch", "width", "image_size", "batch_size", "num_prototypes", "dim_hidden", "workers"):
        if getattr(a, name) is not None:
            values[name] = getattr(a, name)
    tmp = None
    if a.data is None:
        from core.synthetic import generate

        tmp = tempfile.TemporaryDirectory()
        n = max(2 * values["batch_size"] * (a.steps + a.warmup + 2), 64)
        generate(tmp.name, num_train=min(n, 2000), num_val=0, size=a.synth_size, seed=0)
        a.data = tmp.name
    if a.channels_last is not None:
        values["channels_last"] = a.channels_last
    for name in ("data", "precision", "device", "compile", "fast_augment", "threads"):
        values[name] = getattr(a, name)
    # no epoch end, log line or checkpoint save falls inside the timed steps
    values.update(epochs=1000, output_dir=tempfile.mkdtemp(), log_every=10**9, save_minutes=1e9, progress="log")
    if a.against_release:
        print(json.dumps(_against_release(a, values)))
        if tmp is not None:
            tmp.cleanup()
        return 0
    trainer = _make_trainer(values, baseline=a.baseline)
    cfg = trainer.cfg
    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    _time_steps(trainer, a.warmup)
    times, waits = _time_steps(trainer, a.steps)
    med = statistics.median(times)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        json.dumps(
            {
                "arch": cfg.arch,
                "width": cfg.width,
                "image_size": cfg.image_size,
                "batch_size": cfg.batch_size,
                "precision": trainer.cfg.precision,
                "device": str(trainer.device),
                "channels_last": cfg.channels_last,
                "compile": cfg.compile,
                "fast_augment": cfg.fast_augment,
                "baseline": a.baseline,
                "threads": torch.get_num_threads(),
                "workers": cfg.workers,
                "images_per_sec": round(cfg.batch_size / med, 2),
                "step_s_median": round(med, 4),
                "data_wait_fraction": round(sum(waits) / sum(times), 4),
                "peak_memory_mib": round(peak, 1),
                "steps": a.steps,
                "warmup": a.warmup,
                "precision_reason": trainer.cfg.precision_reason,
                "machine": describe_machine(),
            }
        )
    )
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
