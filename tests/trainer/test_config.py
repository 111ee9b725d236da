"""Every training field checked before any work starts, one message naming the field, its value and what it
accepts; ``--help`` shows the selected preset's values."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.__main__ import main
from trainer.config import RULES, TrainConfig, get_args_parser, resolve_config


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--batch-size", "0", "batch_size=0: must be >= 1"),
        ("--save-every", "-1", "save_every=-1: must be >= 0"),
        ("--lr", "abc", "lr='abc': expected a float"),
        ("--lr", "nan", "lr=nan: must be > 0"),
        ("--momentum", "1", "momentum=1.0: must be in [0, 1)"),
        ("--min-scale", "0", "min_scale=0.0: must be in (0, 1]"),
        ("--arch", "vgg16", "arch='vgg16': must be one of resnet101, resnet18, resnet34, resnet50"),
        ("--precision", "fp8", "precision='fp8': must be one of auto, fp32, fp16, bf16"),
        ("--epochs", "2.5", "epochs='2.5': expected an integer"),
        ("--dist-timeout-minutes", "0", "dist_timeout_minutes=0.0: must be > 0"),
    ],
)
def test_an_invalid_field_is_refused_before_any_work(
    flag: str, value: str, message: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["--data", str(tmp_path / "no-data"), "--output-dir", str(out), flag, value])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # nothing was created, no data was looked for


def test_yaml_values_are_checked_like_flags(tmp_path: Path) -> None:
    yml = tmp_path / "c.yaml"
    yml.write_text("image_size: 16\n")
    with pytest.raises(ValueError, match=r"image_size=16: must be >= 32"):
        resolve_config(get_args_parser().parse_args(["--config", str(yml)]))
    yml.write_text("batch_size: many\n")
    with pytest.raises(ValueError, match=r"batch_size='many': expected an integer"):
        resolve_config(get_args_parser().parse_args(["--config", str(yml)]))


def test_save_every_zero_keeps_only_the_last_epochs_checkpoint() -> None:
    assert resolve_config(get_args_parser().parse_args(["--save-every", "0"])).save_every == 0


def test_every_numeric_and_choice_field_has_a_rule() -> None:
    for name, value in vars(TrainConfig()).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert name in RULES or name == "schedule_fixed_at", name  # a derived field, never given


def test_help_shows_the_selected_presets_values(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--preset", "coco-r50-800ep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(coco-r50-800ep: 512; >= 1)" in text and "(coco-r50-800ep: 'resnet50';" in text
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(cpu-demo: 16; >= 1)" in text and "(cpu-demo: 'resnet18';" in text
    assert "--max-restarts" in text and "fp16 with the grad scaler" in text
