"""The steps' command lines, as the demo and the server's jobs run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from server.commands import eval_argv, index_argv, train_argv

#: What every evaluation here is of and where it writes.
EVAL = dict(protocol="synthetic", index=Path("i"), out=Path("e.json"))


def test_training_on_one_or_many_processes() -> None:
    one = train_argv("cpu-demo", Path("d"), Path("r"), ["--epochs", "2"])
    assert one == [
        sys.executable,
        "-m",
        "trainer",
        "--preset",
        "cpu-demo",
        "--data",
        "d",
        "--output-dir",
        "r",
        "--epochs",
        "2",
    ]
    many = train_argv("cpu-demo", Path("d"), Path("r"), nproc_per_node=4)
    assert many[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m"]
    assert many[6:9] == ["trainer", "--preset", "cpu-demo"]


def test_optional_flags_are_left_out() -> None:
    argv = index_argv(Path("c.pth"), Path("d"), Path("o"), split="val2017")
    assert argv[2:] == ["indexer", "--checkpoint", "c.pth", "--data", "d", "--split", "val2017", "--out", "o"]
    argv = eval_argv(Path("c.pth"), Path("d"), baseline="kmeans-rgb", resolution=320, **EVAL)
    assert argv[argv.index("--resolution") + 1] == "320" and "--split" not in argv


def test_the_commands_parse() -> None:
    """The flags are the CLIs' own: ``--help`` of each module answers (argparse accepts the names)."""
    for argv in (
        index_argv(
            Path("c.pth"),
            Path("d"),
            Path("o"),
            split="val2017",
            resize=256,
            crop=224,
            batch_size=4,
            progress_file=Path("p.json"),
        ),
        eval_argv(
            Path("c.pth"),
            Path("d"),
            baseline="none",
            split="val2017",
            resolution=320,
            progress_file=Path("p.json"),
            seeds=1,
            all_images=True,
            **EVAL,
        ),
    ):
        module = {"indexer": "indexer.__main__"}.get(argv[2], argv[2])
        code = (
            "import sys, importlib; m = importlib.import_module(sys.argv[1]); "
            "p = m.get_args_parser(); p.parse_args(sys.argv[2:]); print('ok')"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, module, *argv[3:]], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
