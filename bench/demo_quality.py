"""Demo quality for a training budget: train the cpu-demo preset, score it on the synthetic val split.

For each budget (minutes) or fixed step count, trains ``python -m trainer --preset cpu-demo`` in a fresh
run directory, then runs ``slotcon eval --protocol synthetic`` (Hungarian matching, K = classes, 320 px),
and prints one JSON line: mIoU, pixel accuracy, per-class IoU (percent), training seconds, the steps the
budget resolved to, the precision and the machine (CPU model, capability, threads). ``--kmeans`` also
scores the RGB k-means baseline once and reports each run's ratio to it.

    python bench/demo_quality.py --budgets 2,4,6,8,10 --kmeans      # the mIoU-vs-minutes curve
    python bench/demo_quality.py --steps 200 -- --seed 1             # a fixed length; trainer flags after --
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Returns the benchmark's arguments and the extra trainer flags (everything after ``--``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", default="", help="comma-separated training budgets in minutes")
    p.add_argument("--steps", default="", help="comma-separated fixed step counts (instead of budgets)")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "synthetic", help="scenes (generated if missing)")
    p.add_argument("--work", type=Path, default=Path("/tmp/demo-quality"), help="run directories and logs")
    p.add_argument("--resolution", type=int, default=320)
    p.add_argument("--kmeans", action="store_true", help="also score the RGB k-means baseline (K = classes)")
    p.add_argument(
        "--step-seconds",
        type=float,
        default=0.0,
        help="with --budgets: train each budget as the fixed step count the trainer's budget resolves to "
        "at this many seconds per step (measured on a quiet machine, e.g. by a cold demo's budget "
        "line), so a curve can be run at one thread per run, several at a time, on a loaded machine",
    )
    a = p.parse_args(argv)
    if bool(a.budgets) == bool(a.steps):
        p.error("give --budgets or --steps")
    if a.step_seconds and not a.budgets:
        p.error("--step-seconds converts --budgets into steps")
    return a, extra


def _evaluate(args: list[str], out: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "indexer.eval_cli",
        *args,
        "--protocol",
        "synthetic",
        "--out",
        str(out),
        "--no-progress",
    ]
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    r = json.loads(out.read_text())
    return {
        "miou": round(100 * r["miou"], 2),
        "pixel_accuracy": round(100 * r["pixel_accuracy"], 2),
        "per_class_iou": {k: None if v is None else round(100 * v, 2) for k, v in r["per_class_iou_named"].items()},
    }


def budget_steps(minutes: float, step_seconds: float, full_steps: int) -> int:
    """The total a ``--budget-minutes`` run fixes at ``step_seconds`` per step (``trainer.loop.budget_total``),
    its probe (the untimed and the timed first steps) taken as run at that speed too."""
    from trainer import loop

    probe = loop.BUDGET_WARMUP_STEPS + max(
        loop.BUDGET_MIN_TIMED_STEPS,
        min(loop.BUDGET_MAX_TIMED_STEPS, math.ceil(loop.BUDGET_MIN_TIMED_S / step_seconds)),
    )
    remaining = 60 * minutes - probe * step_seconds - loop.BUDGET_RESERVE_S
    return loop.budget_total(probe, remaining, step_seconds, full_steps)


def run_one(a: argparse.Namespace, extra: list[str], *, budget: float | None, steps: int | None) -> dict:
    """Trains one run and scores it; returns the JSON record."""
    name = f"budget-{budget:g}" if budget is not None else f"steps-{steps}"
    run = a.work / name
    subprocess.run(["rm", "-rf", str(run)], check=True)
    length = (
        ["--budget-minutes", str(budget)] if budget is not None else ["--total-steps", str(steps), "--epochs", "1000"]
    )
    from server.commands import train_argv

    cmd = train_argv("cpu-demo", a.data, run, ["--progress", "log", *length, *extra])
    start = time.perf_counter()
    with open(a.work / f"{name}.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    wall = time.perf_counter() - start
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    finished = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines() if '"finished"' in s]
    scores = _evaluate(
        ["--checkpoint", str(run / "final.pth"), "--data", str(a.data), "--resolution", str(a.resolution)],
        a.work / f"{name}.json",
    )
    return {
        "run": name,
        "budget_minutes": budget,
        "total_steps": cfg["total_steps"] or steps,
        "train_seconds": finished[-1]["seconds"] if finished else None,
        "process_seconds": round(wall, 1),
        "precision": cfg["precision"],
        "precision_reason": cfg["precision_reason"],
        "train_threads": cfg["threads"],
        **scores,
        "extra_flags": extra,
    }


def _num_train(data: Path) -> int:
    return sum(1 for _ in (data / "train2017").glob("*.jpg"))


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; prints one JSON line per run (and one for k-means with ``--kmeans``)."""
    a, extra = parse_args(argv)
    from trainer.precision import describe_machine

    a.work.mkdir(parents=True, exist_ok=True)
    if not (a.data / "val2017").is_dir():
        subprocess.run(
            [sys.executable, "-m", "slotcon", "synth", "--out", str(a.data)], check=True, capture_output=True, cwd=ROOT
        )
    machine = describe_machine()
    kmeans = None
    if a.kmeans:
        kmeans = _evaluate(
            ["--baseline", "kmeans-rgb", "--data", str(a.data), "--resolution", str(a.resolution)],
            a.work / "kmeans.json",
        )
        print(json.dumps({"run": "kmeans-rgb", **kmeans, "machine": machine}), flush=True)
    lengths = [(float(b), None) for b in a.budgets.split(",") if b] + [(None, int(s)) for s in a.steps.split(",") if s]
    if a.step_seconds:
        from trainer.config import PRESETS

        full = PRESETS["cpu-demo"]["epochs"] * (_num_train(a.data) // PRESETS["cpu-demo"]["batch_size"])
        lengths = [(b, budget_steps(b, a.step_seconds, full)) for b, _ in lengths]
    trained: dict[int, dict] = {}  # budgets that resolve to one step count (the epochs' cap) train it once
    for budget, steps in lengths:
        if a.step_seconds:
            if steps not in trained:
                trained[steps] = run_one(a, extra, budget=None, steps=steps)
            record = {
                **trained[steps],
                "run": f"budget-{budget:g}-as-steps",
                "budget_minutes": budget,
                "step_seconds": a.step_seconds,
            }
        else:
            record = run_one(a, extra, budget=budget, steps=steps)
        if kmeans is not None:
            record["x_kmeans"] = round(record["miou"] / kmeans["miou"], 2)
        print(json.dumps({**record, "machine": machine}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
