"""Training configuration: one typed dataclass, resolved from a preset, a YAML file and CLI flags.

Resolution order (later wins): dataclass defaults → ``--preset`` → ``--config FILE.yaml`` → explicit
flags. Every field is a ``--kebab-case`` flag (booleans also accept ``--no-<flag>``). The resolved
config is written to ``<output-dir>/config.yaml`` and stored inside every checkpoint.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from core.model import SlotConConfig
from core.recipes import DEFAULT_PRESET, PRESETS
from core.train_fields import Rule, trainer_rules
from trainer.usage import USAGE

#: Field metadata of values the trainer derives while it runs (recorded, never given as flags).
DERIVED = {"derived": True}
__all__ = [
    "PRESETS",
    "RULES",
    "Rule",
    "TrainConfig",
    "fast_mode",
    "get_args_parser",
    "resolve_config",
    "save_config_yaml",
    "parse_splits",
]


def fast_mode() -> dict[str, Any]:
    """The fields ``--fast`` sets: the fastest step measured that keeps the method (the same on every device:
    ``auto`` resolves the precision per device when the run starts).

    ``precision`` ``auto`` (fp16 with the grad scaler on a GPU; on a CPU bf16 only where the hardware computes
    it natively, else fp32, since emulated bf16 is far slower), the tensor augmentation pipeline
    (``core.augment.FastTwoViewAugment``: the same transforms, not bit-exact with the PIL one) and
    channels_last. Measured with ``bench/train_throughput.py --against-release`` (docs/performance.md).
    """
    return {"precision": "auto", "channels_last": True, "fast_augment": True}


@dataclass
class TrainConfig(SlotConConfig):
    """Everything a training run needs; defaults are the release's COCO recipe (R50, 800 epochs).

    The model's fields (arch, width, stride16, dims, prototypes, temperatures, loss weight) are inherited
    from :class:`core.model.SlotConConfig`, so their defaults have one source.
    """

    # data
    data: str = "data/synthetic"
    # the split folders trained on, named explicitly (COCO+: train2017 + unlabeled2017); [] = the folder itself
    split: list[str] = field(default_factory=lambda: ["train2017"])
    image_size: int = 224
    min_scale: float = 0.08
    fast_augment: bool = False  # tensor pipeline (core.augment.FastTwoViewAugment), not bit-exact
    skip_unreadable: bool = False
    workers: int = 8  # DataLoader workers per process
    pin_memory: bool = True
    persistent_workers: bool = True
    # optimisation
    batch_size: int = 512  # total over all processes
    optimizer: str = "lars"
    lr: float = 1.0  # base lr; the used lr is lr × batch_size/256 with lr_scaling=linear
    lr_scaling: str = "linear"
    weight_decay: float = 1e-5
    momentum: float = 0.9  # optimiser momentum
    lars_eta: float = 0.001
    warmup_epochs: float = 5.0
    warmup_multiplier: float = 100.0  # warm-up starts at lr / warmup_multiplier
    final_lr: float = 1e-6
    teacher_momentum: float = 0.99  # m0 of the teacher schedule (docs/method.md §5)
    epochs: int = 800
    total_steps: int = 0  # >0: the schedules span this many steps (at most epochs × steps per epoch)
    budget_minutes: float = 0.0  # >0: time the first steps, then fix total_steps to end within this budget
    max_steps: int = 0  # >0: cap the steps run (schedules still span the total: the run stops mid-schedule)
    # precision and speed
    precision: str = "auto"  # auto: bf16 where the hardware computes it natively (trainer.precision)
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads per process; 0 = leave torch's default
    # several processes (torchrun)
    sync_batchnorm: bool = True  # BatchNorm statistics over every rank's batch, as the release (CPU: core.syncbn)
    dist_timeout_minutes: float = 10.0  # a collective not answered by every rank within this fails, naming itself
    record_collectives: str = ""  # a folder: each rank writes its collectives there (trainer.collectives)
    # run directory, logging, checkpoints
    output_dir: str = "runs/slotcon"
    seed: int = 0
    log_every: int = 10
    save_every: int = 50  # epochs between ckpt_epoch_N.pth; 0 = only the last epoch's
    save_minutes: float = 10.0  # wall minutes between current.pth
    max_minutes: float = 0.0  # >0: stop (saving current.pth) after this much wall time
    resume: str = ""
    auto_resume: bool = False
    init_from: str = ""  # our or a release full checkpoint: initialise weights only
    progress: str = "auto"  # auto (tqdm on a terminal) | bar | log
    log_seconds: float = 10.0  # also log a step when this long has passed since the last line
    # derived while running, recorded in config.yaml and the checkpoints
    precision_reason: str = field(default="", metadata=DERIVED)  # what --precision auto resolved to, and why
    schedule_fixed_at: int = field(default=0, metadata=DERIVED)  # steps run before the budget fixed total_steps

    def __post_init__(self) -> None:
        self.split = parse_splits(self.split)

    def model_config(self) -> SlotConConfig:
        """Returns the :class:`SlotConConfig` part of this config."""
        return SlotConConfig.from_dict(asdict(self))

    def scaled_lr(self) -> float:
        """Returns the peak learning rate: ``lr × batch_size/256`` (linear scaling) or ``lr``."""
        return self.lr * self.batch_size / 256 if self.lr_scaling == "linear" else self.lr

    def validate(self) -> None:
        """Raises ValueError for the first invalid field, naming it, its value and the valid range or choices
        (:data:`RULES`), then for combinations of fields that contradict each other."""
        for f in fields(self):
            rule = RULES.get(f.name)
            if rule is not None:
                rule.check(f.name, getattr(self, f.name))
        if self.budget_minutes > 0 and self.total_steps > 0 and self.schedule_fixed_at == 0:
            raise ValueError("give --budget-minutes or --total-steps, not both (the budget fixes total_steps)")

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (written to config.yaml and checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys raise ValueError listing them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**d)


#: Every field's valid values (the booleans, texts and paths excepted); checked before any work starts. Derived from
#: :data:`core.train_fields.TRAIN_FIELDS`, where the server's ``TrainOverrides`` comes from too.
RULES: dict[str, Rule] = trainer_rules()


def _coerce(name: str, value: Any, kind: type) -> Any:
    """``value`` (from a flag, YAML or a preset) as the field's type; ValueError naming the field otherwise."""
    if kind is bool:
        return value if isinstance(value, bool) else _parse_bool(str(value))
    if kind is list:
        return parse_splits(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return kind(value)
    except (TypeError, ValueError):
        expected = "an integer" if kind is int else f"a {kind.__name__}"
        raise ValueError(f"{name}={value!r}: expected {expected}") from None


def parse_splits(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """The split folders of ``value``: a list, or text with commas (``"train2017,unlabeled2017"``); empty
    names dropped, so ``""`` is ``[]`` (the data folder itself)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return [v.strip() for v in items if v.strip()]


def _parse_bool(text: str) -> bool:
    if isinstance(text, bool):
        return text
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def selected_preset(argv: list[str]) -> str:
    """The ``--preset`` that ``argv`` names (the default one when it names none or an unknown one), so that
    ``--help`` can show that preset's values."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=DEFAULT_PRESET)
    known, _ = pre.parse_known_args(argv)
    return known.preset if known.preset in PRESETS else DEFAULT_PRESET


def get_args_parser(prog: str = "slotcon train", preset: str = DEFAULT_PRESET) -> argparse.ArgumentParser:
    """Returns the parser: ``--preset``, ``--config`` and one flag per :class:`TrainConfig` field.

    Field flags default to ``argparse.SUPPRESS`` so only explicitly given flags override; their help shows the
    value ``preset`` gives them (see :func:`selected_preset`).
    """
    p = argparse.ArgumentParser(prog=prog, description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=DEFAULT_PRESET,
        help=f"starting values (default {DEFAULT_PRESET}; core.recipes): " + "; ".join(sorted(PRESETS)),
    )
    p.add_argument("--config", type=Path, default=None, help="YAML file of field overrides (applied after the preset)")
    p.add_argument(
        "--fast",
        action="store_true",
        help="fast mode (trainer.config.fast_mode): precision auto, channels_last, the tensor augmentation; "
        "applied after the preset and --config, before explicit flags",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument(
        "--print-plan",
        action="store_true",
        help="print, as JSON, the machine, the precision 'auto' resolves to and why, and the budget; exit",
    )
    defaults = TrainConfig(**PRESETS[preset])
    for f in fields(TrainConfig):
        if f.metadata.get("derived"):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        where = f"{preset}: " if f.name in PRESETS[preset] else ""
        if isinstance(default, bool):
            p.add_argument(
                flag,
                type=_parse_bool,
                nargs="?",
                const=True,
                default=argparse.SUPPRESS,
                help=f"(bool, {where}{default})",
            )
            p.add_argument(
                "--no-" + f.name.replace("_", "-"),
                dest=f.name,
                action="store_const",
                const=False,
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
            )
        elif isinstance(default, list):
            p.add_argument(
                flag,
                type=parse_splits,
                default=argparse.SUPPRESS,
                help=f"(comma-separated list, {where}{','.join(default) or 'none'}; '' for none)",
            )
        else:
            rule = RULES.get(f.name)
            allowed = f"; {rule.describe()}" if rule else ""
            p.add_argument(flag, type=str, default=argparse.SUPPRESS, help=f"({where}{default!r}{allowed})")
    return p


def _update_length(values: dict[str, Any], layer: dict[str, Any]) -> None:
    """``values.update(layer)``, where a layer that fixes the run's length one way (``total_steps`` or
    ``budget_minutes``) and not the other replaces the length an earlier layer chose (cpu-demo's budget
    gives way to an explicit ``--total-steps``, and the reverse)."""
    fixed = int(layer.get("schedule_fixed_at", values.get("schedule_fixed_at")) or 0) > 0  # a saved budget's total
    for given, other in (("total_steps", "budget_minutes"), ("budget_minutes", "total_steps")):
        if not fixed and float(layer.get(given) or 0) > 0 and other not in layer:
            values[other] = 0
    values.update(layer)


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Returns the config of parsed ``args``: defaults ← preset ← YAML ← explicit flags; validated."""
    values = asdict(TrainConfig())
    values.update(PRESETS[args.preset])
    if args.config is not None:
        loaded = yaml.safe_load(Path(args.config).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a mapping of config fields")
        _update_length(values, {k.replace("-", "_"): v for k, v in loaded.items()})
    if getattr(args, "fast", False):
        values.update(fast_mode())
    names = {f.name for f in fields(TrainConfig)}
    _update_length(values, {k: v for k, v in vars(args).items() if k in names})
    defaults = TrainConfig()
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(unknown)}")
    typed = {f.name: _coerce(f.name, values[f.name], type(getattr(defaults, f.name))) for f in fields(TrainConfig)}
    cfg = TrainConfig.from_dict(typed)
    cfg.validate()
    return cfg


def save_config_yaml(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (sorted keys)."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=True, allow_unicode=True))
