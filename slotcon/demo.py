"""``slotcon demo``: one command from a fresh checkout to a running explorer.

Steps, each skipped when its output already exists (so a second run starts in seconds)::

    1. synthetic scenes   python -m slotcon synth --out data/synthetic
    2. training           python -m trainer --preset cpu-demo --data data/synthetic --output-dir runs/cpu-demo
    3. index              python -m indexer --checkpoint runs/cpu-demo/final.pth --data data/synthetic ...
    4. evaluation         python -m indexer.eval_cli ... --protocol synthetic (+ the two baselines)
    5. API                python -m server --index indexes/cpu-demo --port 8000
    6. UI                 python -m slotcon ui --api http://127.0.0.1:8000 --port 8501

then prints the URLs and waits; Ctrl-C (or SIGTERM) stops the UI and the API (SIGTERM, then SIGKILL
after a grace period) and exits 0. Every step runs with this interpreter (``sys.executable``), so the
demo uses the environment it was started from. The preset, the baselines and the command lines are the
ones the server's jobs use (:mod:`core.recipes`, :mod:`server.commands`); the services are supervised by
:mod:`server.processes`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import webbrowser
from collections.abc import Sequence
from pathlib import Path

from core.recipes import BASELINES, DEFAULT_PRESET
from server import processes
from server.commands import eval_argv, index_argv, python_argv, train_argv
from server.processes import Service

PRESET = DEFAULT_PRESET
HEALTH_TIMEOUT_S = 120.0


def get_args_parser() -> argparse.ArgumentParser:
    """The options of ``slotcon demo``."""
    p = argparse.ArgumentParser(prog="slotcon demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=Path("data/synthetic"), help="synthetic scenes root")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="training runs (run: <runs-dir>/cpu-demo)")
    p.add_argument("--indexes-dir", type=Path, default=Path("indexes"), help="indexes (<indexes-dir>/cpu-demo)")
    p.add_argument("--state-dir", type=Path, default=Path("state"), help="the API's jobs database and logs")
    p.add_argument("--host", default="127.0.0.1", help="address of both services (default: loopback)")
    p.add_argument("--port", type=int, default=8000, help="API port (default: 8000)")
    p.add_argument("--ui-port", type=int, default=8501, help="UI port (default: 8501)")
    p.add_argument("--checkpoint", type=Path, default=None, help="explore this checkpoint instead of training")
    p.add_argument(
        "--skip-train",
        action="store_true",
        help="do not train: use the run's final.pth or current.pth, whichever exists",
    )
    p.add_argument("--skip-eval", action="store_true", help="do not run the segmentation evaluations")
    p.add_argument("--no-serve", action="store_true", help="build everything, start nothing")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    p.add_argument(
        "--scores-json",
        action="store_true",
        help="print the evaluations' full results as one JSON object (baseline → result) instead of the table",
    )
    return p


def say(message: str) -> None:
    """A progress line of the demo."""
    print(f"[demo] {message}", flush=True)


def run_step(
    number: int, title: str, output: Path, command: list[str], *, force: bool = False, stdout: Path | None = None
) -> None:
    """Runs step ``number`` unless ``output`` exists; the command inherits the terminal, except its standard
    output when ``stdout`` names a file to keep it in (the evaluations' JSON, summed up by :func:`say_scores`)."""
    if output.exists() and not force:
        say(f"{number}/6 {title}: done already ({output})")
        return
    say(f"{number}/6 {title} …")
    start = time.monotonic()
    sink = open(stdout, "w") if stdout is not None else None  # noqa: SIM115 - closed below
    try:
        proc = subprocess.Popen(command, stdout=sink)
    finally:
        if sink is not None:
            sink.close()
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached the step too (same process group); let it save and exit (the trainer writes
        # current.pth), then make sure it is gone.
        processes.stop(proc, grace_s=60, sig=signal.SIGINT)
        raise
    if code != 0:
        raise SystemExit(f"[demo] step {number} ({title}) failed with exit code {code}: {' '.join(command)}")
    say(f"{number}/6 {title}: done in {time.monotonic() - start:.0f} s")


def index_format_outdated(manifest: Path) -> bool:
    """True when the index at ``manifest`` is in another format version than the indexer writes."""
    from indexer.schema import INDEX_VERSION

    try:
        built = json.loads(manifest.read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        return True
    return built != INDEX_VERSION


def start_service(name: str, command: list[str], env: dict[str, str], log_dir: Path) -> Service:
    """Starts a service in its own session (so the terminal's Ctrl-C reaches only the demo, which
    then stops the services in order), logging to ``log_dir/<name>.log`` (lower case)."""
    return Service.start(name, command, log_dir / f"{name.lower()}.log", env=env)


def wait_healthy(service: Service, url: str, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
    """Waits for ``url`` to answer 200; ``SystemExit`` with the log tail if the service dies or is late."""
    try:
        service.wait_healthy(url, timeout_s)
    except processes.ServiceError as e:
        raise SystemExit(f"[demo] {e}") from None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def resolve_checkpoint(args: argparse.Namespace, run_dir: Path) -> Path:
    """The checkpoint to explore: ``--checkpoint``, else the run's (training it unless skipped)."""
    if args.checkpoint is not None:
        if not args.checkpoint.is_file():
            raise SystemExit(f"[demo] --checkpoint {args.checkpoint} does not exist")
        say(f"2/6 training: skipped, exploring {args.checkpoint}")
        return args.checkpoint
    final = run_dir / "final.pth"
    if args.skip_train:
        for ckpt in (final, run_dir / "current.pth"):
            if ckpt.is_file():
                say(f"2/6 training: skipped (--skip-train), using {ckpt}")
                return ckpt
        raise SystemExit(f"[demo] --skip-train, but {run_dir} holds no final.pth or current.pth")
    command = train_argv(PRESET, args.data_dir, run_dir)
    if not final.exists() and (run_dir / "current.pth").exists():
        command.append("--auto-resume")  # an interrupted demo run continues where it stopped
    if not final.exists():
        say_training_plan(command)
    run_step(2, f"training the {PRESET} preset", final, command)
    if not final.is_file():  # the trainer saves current.pth and exits 0 when it is stopped
        raise SystemExit(
            f"[demo] training stopped before it finished ({run_dir / 'current.pth'} saved); "
            "run the demo again to resume it"
        )
    return final


def describe_plan(plan: dict) -> str:
    """One line from ``python -m trainer --print-plan``'s JSON: the CPU, the precision and the expected time."""
    where = f"{plan['cpu_model']}, capability {plan['cpu_capability']}, {plan['threads']} threads"
    if plan.get("gpu"):
        where = f"{plan['gpu']} ({where})"
    if plan["budget_minutes"] > 0:
        when = (
            f"training takes at most {plan['budget_minutes']:g} min (a time budget: the trainer times its first "
            f"steps, then fixes the step count, at most {plan['epochs']} epochs)"
        )
    else:
        when = f"training runs {plan['epochs']} epochs"
    return f"2/6 {where}: precision {plan['precision_reason']}; {when}"


def say_training_plan(command: list[str]) -> None:
    """Prints the training plan (the trainer resolves it for this machine without training)."""
    result = subprocess.run([*command, "--print-plan"], capture_output=True, text=True)
    if result.returncode == 0:
        say(describe_plan(json.loads(result.stdout)))


def stale_scenes_version(data_dir: Path) -> str | None:
    """The generator version of ``data_dir``'s scenes when it is not this code's, else None."""
    try:
        version = json.loads((data_dir / "synthetic.json").read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        version = None  # missing (step 1 makes it) or not ours to judge
    if version is None:
        return None
    from core.synthetic import GENERATOR_VERSION

    return None if str(version) == GENERATOR_VERSION else str(version)


def set_aside_stale_run(args: argparse.Namespace, run_dir: Path) -> None:
    """Moves a demo run trained before the scenes were (re)generated out of the way, so it is retrained."""
    scenes = args.data_dir / "synthetic.json"
    if args.checkpoint is not None or args.skip_train or not scenes.is_file():
        return
    newest = max((p.stat().st_mtime for p in run_dir.glob("*.pth")), default=None)
    if newest is not None and newest < scenes.stat().st_mtime:
        aside = run_dir.with_name(f"{run_dir.name}-stale-{time.strftime('%Y%m%d-%H%M%S')}")
        say(f"2/6 {run_dir} was trained on older scenes: moved to {aside}, training again")
        run_dir.rename(aside)


def build(args: argparse.Namespace) -> Path:
    """Steps 1-4; returns the index directory."""
    old = stale_scenes_version(args.data_dir)
    if old is not None:
        say(f"1/6 {args.data_dir} holds scenes of generator version {old}: generating the current ones")
    run_step(
        1,
        "generating the synthetic scenes",
        args.data_dir / "synthetic.json",
        python_argv("core.synthetic", "--out", args.data_dir),
        force=old is not None,
        stdout=Path(os.devnull),
    )
    run_dir = args.runs_dir / PRESET
    set_aside_stale_run(args, run_dir)
    checkpoint = resolve_checkpoint(args, run_dir)
    index_dir = args.indexes_dir / (PRESET if args.checkpoint is None else args.checkpoint.stem)
    manifest = index_dir / "manifest.json"
    stale = manifest.exists() and checkpoint.stat().st_mtime > manifest.stat().st_mtime
    if stale:
        say(f"3/6 the index in {index_dir} predates {checkpoint}: rebuilding it")
        shutil.rmtree(index_dir)
    elif manifest.exists() and index_format_outdated(manifest):
        stale = True
        say(f"3/6 the index in {index_dir} is in an older format: rebuilding it")
        shutil.rmtree(index_dir)
    run_step(
        3,
        "building the concept index (val2017)",
        manifest,
        index_argv(checkpoint, args.data_dir, index_dir, split="val2017"),
    )
    if args.skip_eval:
        say("4/6 evaluation: skipped (--skip-eval)")
        return index_dir
    for baseline in BASELINES:
        out = index_dir / f"eval-synthetic-{baseline}.json"
        what = "SlotCon" if baseline == "none" else f"baseline {baseline}"
        run_step(
            4,
            f"unsupervised segmentation, {what}",
            out,
            # one k-means seed keeps the demo's time (the CLI's default runs five and reports mean ± std)
            eval_argv(
                checkpoint, args.data_dir, protocol="synthetic", baseline=baseline, index=index_dir, out=out, seeds=1
            ),
            force=stale,
            stdout=index_dir / f"eval-synthetic-{baseline}.log",
        )
    say_scores(index_dir, full=args.scores_json)
    return index_dir


def score_table(results: dict[str, dict]) -> str:
    """A one-screen table of evaluation results (baseline name → stored result): mIoU and pixel accuracy, then
    each class's IoU, one column per model, in percent."""
    names = list(results)
    heads = ["SlotCon" if n == "none" else n for n in names]
    width = max(12, *(len(h) for h in heads))
    classes = list(next(iter(results.values())).get("per_class_iou_named", {}))
    label = max(16, *(len(c) for c in classes)) if classes else 16

    def pct(value: float | None) -> str:
        return f"{100 * value:{width}.1f}" if isinstance(value, (int, float)) else f"{'–':>{width}}"

    rows = [f"{'':{label}} " + " ".join(f"{h:>{width}}" for h in heads)]
    rows.append(f"{'mIoU':{label}} " + " ".join(pct(results[n].get("miou")) for n in names))
    rows.append(f"{'pixel accuracy':{label}} " + " ".join(pct(results[n].get("pixel_accuracy")) for n in names))
    for c in classes:
        rows.append(f"{c:{label}} " + " ".join(pct(results[n]["per_class_iou_named"].get(c)) for n in names))
    return "\n".join(rows)


def say_scores(index_dir: Path, full: bool = False) -> None:
    """Prints the demo's unsupervised-segmentation scores against the baselines as one table, with where the
    full results are (JSON beside the index, and the UI's Unsupervised segmentation page); ``full``: the
    stored results themselves, as one JSON object keyed by baseline."""
    results = {}
    for baseline in BASELINES:
        path = index_dir / f"eval-synthetic-{baseline}.json"
        if path.is_file():
            results[baseline] = json.loads(path.read_text())
    if not results:
        return
    if full:
        print(json.dumps(results, indent=2), flush=True)
        return
    say("4/6 unsupervised segmentation of the val2017 scenes (%, Hungarian-matched; per-class IoU below):")
    print("\n".join("    " + row for row in score_table(results).splitlines()), flush=True)
    say(f"    full results: {index_dir}/eval-synthetic-*.json, and the UI's 'Unsupervised segmentation' page")


def serve(args: argparse.Namespace, index_dir: Path) -> int:
    """Steps 5-6: starts the API and the UI, prints the URLs and waits for Ctrl-C."""
    for port, what in ((args.port, "API (--port)"), (args.ui_port, "UI (--ui-port)")):
        if not processes.port_free(args.host, port):
            raise SystemExit(f"[demo] port {port} on {args.host} is in use: choose another for the {what}")
    api_url = f"http://{args.host}:{args.port}"
    ui_url = f"http://{args.host}:{args.ui_port}"
    env = {
        **os.environ,
        "SLOTCON_DATA_ROOT": str(args.data_dir.resolve()),
        "SLOTCON_RUNS_DIR": str(args.runs_dir.resolve()),
        "SLOTCON_INDEXES_DIR": str(args.indexes_dir.resolve()),
        "SLOTCON_STATE_DIR": str(args.state_dir.resolve()),
        "SLOTCON_UI_ORIGIN": ui_url,
        "SLOTCON_API_URL": api_url,
    }
    log_dir = args.state_dir / "logs"
    services: list[Service] = []
    try:
        say(f"5/6 starting the API on {api_url} (log: {log_dir / 'api.log'})")
        services.append(
            start_service(
                "API",
                python_argv("server", "--index", index_dir, "--host", args.host, "--port", args.port),
                env,
                log_dir,
            )
        )
        say(f"6/6 starting the UI on {ui_url} (log: {log_dir / 'ui.log'})")
        services.append(
            start_service(
                "UI",
                python_argv("slotcon", "ui", "--api", api_url, "--host", args.host, "--port", args.ui_port),
                env,
                log_dir,
            )
        )
        wait_healthy(services[0], f"{api_url}/api/health")
        wait_healthy(services[1], f"{ui_url}/_stcore/health")
        print(
            f"\n  SlotCon Explorer is running:\n    UI   {ui_url}\n    API  {api_url}/docs\n\n"
            "  Press Ctrl-C to stop both.\n",
            flush=True,
        )
        if not args.no_browser and (os.environ.get("DISPLAY") or sys.platform in ("darwin", "win32")):
            webbrowser.open(ui_url)
        while all(s.running() for s in services):
            time.sleep(0.5)
        dead = next(s for s in services if not s.running())
        say(f"the {dead.name} stopped unexpectedly (code {dead.proc.returncode}); its log:\n{dead.tail()}")
        return 1
    except KeyboardInterrupt:
        say("stopping the UI and the API …")
        return 0
    finally:
        for service in reversed(services):
            service.stop()
        if services:
            say("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the demo; returns 0 after a clean Ctrl-C, non-zero when a step fails."""
    args = get_args_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    # A shell starts background jobs with SIGINT ignored, and Python then installs no handler: restore
    # it, so that Ctrl-C (SIGINT to the process group) always stops the demo and its services.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    start = time.monotonic()
    try:
        index_dir = build(args)
    except KeyboardInterrupt:
        say("interrupted; run the demo again to continue where it stopped")
        return 130
    say(f"ready in {time.monotonic() - start:.0f} s")
    if args.no_serve:
        return 0
    return serve(args, index_dir)


if __name__ == "__main__":
    sys.exit(main())
