"""``slotcon demo`` and ``slotcon ui``: steps are skipped when their outputs exist, the services come
up healthy, and Ctrl-C stops both cleanly with exit code 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from server.processes import free_port
from slotcon import demo, ui_launcher

ROOT = Path(__file__).resolve().parents[2]


def demo_args(data_dir: Path, checkpoint: Path, index: Path, tmp_path: Path) -> list[str]:
    """``slotcon demo`` flags: scenes in ``data_dir``, the model ``checkpoint`` explored in ``index`` (its indexes
    folder: the index's parent), runs and state under ``tmp_path``; no evaluation, no browser."""
    # --checkpoint X explores <indexes-dir>/<X's stem>
    assert index.name == checkpoint.stem
    return [
        "--data-dir",
        str(data_dir),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--indexes-dir",
        str(index.parent),
        "--state-dir",
        str(tmp_path / "state"),
        "--checkpoint",
        str(checkpoint),
        "--skip-eval",
        "--no-browser",
    ]


def test_warm_demo_skips_every_step(
    synthetic_root: Path, tiny_checkpoint: Path, demo_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (synthetic_root / "synthetic.json").touch()
    start = time.monotonic()
    assert demo.main([*demo_args(synthetic_root, tiny_checkpoint, demo_index, tmp_path), "--no-serve"]) == 0
    assert time.monotonic() - start < 5
    out = capsys.readouterr().out
    assert "1/6 generating the synthetic scenes: done already" in out
    assert "2/6 training: skipped" in out and "3/6 building the concept index (val2017): done already" in out


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "synthetic.json").touch()
    with pytest.raises(SystemExit, match="does not exist"):
        demo.main(["--data-dir", str(tmp_path / "data"), "--checkpoint", str(tmp_path / "nope.pth")])


def test_demo_serves_and_ctrl_c_stops_both(
    synthetic_root: Path, tiny_checkpoint: Path, demo_index: Path, tmp_path: Path
) -> None:
    (synthetic_root / "synthetic.json").touch()
    api_port, ui_port = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "slotcon",
        "demo",
        *demo_args(synthetic_root, tiny_checkpoint, demo_index, tmp_path),
        "--port",
        str(api_port),
        "--ui-port",
        str(ui_port),
    ]
    env = {k: v for k, v in os.environ.items() if k != "SLOTCON_API_TOKEN"}
    # Its own process group, as a terminal's foreground job: Ctrl-C is SIGINT to the group.
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        out = "".join(lines)
        assert f"UI   http://127.0.0.1:{ui_port}" in out and f"API  http://127.0.0.1:{api_port}/docs" in out
        assert httpx.get(f"http://127.0.0.1:{api_port}/api/health").json()["index"]["name"] == demo_index.name
        assert httpx.get(f"http://127.0.0.1:{ui_port}/_stcore/health").status_code == 200
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert "stopped" in proc.stdout.read()
        for port in (api_port, ui_port):
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_launch_command_line() -> None:
    args = ui_launcher.get_args_parser().parse_args(["--api", "http://h:1/", "--port", "8600"])
    cmd = ui_launcher.streamlit_command(args)
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"] and cmd[4].endswith("ui/app.py")
    assert cmd[cmd.index("--server.port") + 1] == "8600"
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"


def test_stale_scenes_and_runs_are_detected(tmp_path: Path) -> None:
    import argparse
    import json

    from core.synthetic import GENERATOR_VERSION

    data, runs = tmp_path / "data", tmp_path / "runs"
    data.mkdir()
    (data / "synthetic.json").write_text(json.dumps({"version": GENERATOR_VERSION}))
    assert demo.stale_scenes_version(data) is None
    (data / "synthetic.json").write_text("")  # not parseable: not ours to judge, step 1 decides
    assert demo.stale_scenes_version(data) is None
    (data / "synthetic.json").write_text(json.dumps({"version": "0"}))
    assert demo.stale_scenes_version(data) == "0"

    run_dir = runs / demo.PRESET
    run_dir.mkdir(parents=True)
    (run_dir / "final.pth").write_bytes(b"x")
    args = argparse.Namespace(data_dir=data, checkpoint=None, skip_train=False)
    os.utime(run_dir / "final.pth", (time.time() - 100, time.time() - 100))
    demo.set_aside_stale_run(argparse.Namespace(**{**vars(args), "skip_train": True}), run_dir)
    assert run_dir.is_dir()  # --skip-train keeps what is there
    demo.set_aside_stale_run(args, run_dir)
    assert not run_dir.exists()
    (aside,) = runs.glob(f"{demo.PRESET}-stale-*")
    assert (aside / "final.pth").read_bytes() == b"x"
    run_dir.mkdir()
    (run_dir / "final.pth").write_bytes(b"y")  # newer than the scenes: kept
    demo.set_aside_stale_run(args, run_dir)
    assert (run_dir / "final.pth").read_bytes() == b"y"


def test_demo_regenerates_scenes_of_an_older_generator(
    tiny_checkpoint: Path, demo_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from core.synthetic import GENERATOR_VERSION

    data = tmp_path / "data"
    data.mkdir()
    (data / "synthetic.json").write_text(json.dumps({"version": "0"}))
    assert demo.main([*demo_args(data, tiny_checkpoint, demo_index, tmp_path), "--no-serve"]) == 0
    assert "holds scenes of generator version 0: generating the current ones" in capsys.readouterr().out
    assert json.loads((data / "synthetic.json").read_text())["version"] == GENERATOR_VERSION
    assert len(list((data / "val2017").glob("*.jpg"))) == 200
