"""``--fast``: the fields it sets, explicit flags over it, and a real fast-mode run."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from trainer.__main__ import main
from trainer.config import fast_mode, get_args_parser, resolve_config
from trainer.precision import resolve_precision


def test_fast_mode_fields_and_precedence(tmp_path: Path) -> None:
    parser = get_args_parser()
    plain = resolve_config(parser.parse_args(["--preset", "coco-r50-800ep"]))
    fast = resolve_config(parser.parse_args(["--preset", "coco-r50-800ep", "--fast"]))
    assert (plain.channels_last, plain.fast_augment) == (False, False)
    assert (fast.precision, fast.channels_last, fast.fast_augment) == ("auto", True, True)
    # only those fields change: the method stays the preset's
    changed = {k for k, v in fast.to_dict().items() if plain.to_dict()[k] != v}
    assert changed == {"channels_last", "fast_augment"} | ({"precision"} if plain.precision != "auto" else set())
    # explicit flags win over --fast, and --fast over a YAML file
    (tmp_path / "c.yaml").write_text("fast_augment: false\nchannels_last: false\n")
    mixed = resolve_config(
        parser.parse_args(["--fast", "--config", str(tmp_path / "c.yaml"), "--no-channels-last", "--precision", "fp32"])
    )
    assert (mixed.precision, mixed.channels_last, mixed.fast_augment) == ("fp32", False, True)
    assert fast_mode() == {"precision": "auto", "channels_last": True, "fast_augment": True}


def test_fast_mode_trains_and_records_what_auto_chose(tiny_train_args: list[str], tmp_path: Path, read_metrics) -> None:
    # the tiny args pin fp32 and NCHW; drop those so --fast decides them
    args = list(tiny_train_args)
    for flag in ("--precision", "--no-channels-last"):
        i = args.index(flag)
        del args[i : i + (2 if flag == "--precision" else 1)]
    assert main([*args, "--fast", "--epochs", "1"]) == 0
    run = tmp_path / "run"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    expected, why = resolve_precision("auto", torch.device("cpu"))
    assert cfg["precision"] == expected and cfg["precision_reason"] == why
    assert cfg["channels_last"] is True and cfg["fast_augment"] is True
    steps, events = read_metrics(run)
    assert len(steps) == 3 and all(r["loss"] is not None and r["loss"] > 0 for r in steps)
    assert events[-1]["event"] == "finished"
