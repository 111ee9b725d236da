"""Training throughput of one process: images/s (median over timed steps), data-wait fraction, peak memory.

Prints one JSON object. Examples (CPU, 2 cores)::

    python bench/train_throughput.py --preset cpu-demo --threads 2 --workers 1   # precision auto
    python bench/train_throughput.py --arch resnet18 --image-size 224 --batch-size 8 --precision fp32
    python bench/train_throughput.py --arch resnet50 --image-size 224 --batch-size 8 --precision bf16 \\
        --channels-last --fast-augment

``--baseline`` times the release-style step instead: the same model and loss, but LARS and the teacher
EMA as per-parameter Python loops (how the public release implements them), for a side-by-side figure.
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
    p.add_argument("--data", default=None)
    p.add_argument("--synth-size", type=int, default=128)
    return p.parse_args(argv)


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
    values.update(
        data=a.data,
        precision=a.precision,
        device=a.device,
        compile=a.compile,
        fast_augment=a.fast_augment,
        threads=a.threads,
        epochs=1000,
        output_dir=tempfile.mkdtemp(),
        log_every=10**9,
        save_minutes=1e9,
        progress="log",
    )
    cfg = TrainConfig.from_dict(values)
    trainer = Trainer(cfg)
    if a.baseline:
        trainer.optimizer = (
            LARS(
                trainer.optimizer.param_groups[0]["params"],
                lr=cfg.scaled_lr(),
                weight_decay=cfg.weight_decay,
                foreach=False,
            )
            if cfg.optimizer == "lars"
            else trainer.optimizer
        )
        trainer.model.momentum_update = lambda m: _loop_momentum_update(trainer.model, m)  # type: ignore[method-assign]
    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times, waits = [], []
    it = iter(trainer.loader)
    trainer.sampler.set_epoch(0)
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(trainer.loader)
            batch = next(it)
        t1 = time.perf_counter()
        trainer.train_step(batch)
        trainer.step += 1
        if cuda:
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if i >= a.warmup:
            times.append(t2 - t0)
            waits.append(t1 - t0)
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
