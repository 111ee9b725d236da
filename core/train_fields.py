"""The training fields that need validation or that a client may set, defined once.

Pure data (no torch, no pydantic): for each field its type, the values the trainer accepts (a :class:`Rule`),
its description, whether the HTTP API lets a client override it, and the API's own range where the API is
stricter than the trainer (an upper cap: the largest values cover the release's recipes several times over).
:mod:`trainer.config` checks every resolved config against :func:`trainer_rules`; ``server.schemas`` builds
``TrainOverrides`` (the request's ``overrides``) from :func:`client_fields`, so neither restates a bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from core.recipes import PRECISIONS

#: The encoders (``core.encoder.ARCHS``'s keys, in its order; tests/core/test_train_fields.py compares them).
ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")
OPTIMIZERS = ("lars", "sgd")
LR_SCALINGS = ("linear", "none")
DEVICES = ("auto", "cpu", "cuda")
PROGRESS = ("auto", "bar", "log")


@dataclass(frozen=True)
class Rule:
    """The values a field accepts: a range (``lo``/``hi``, open where ``*_open``) or a set of ``choices``."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        """The valid values in words: ``one of a, b`` or ``>= 1``, ``in (0, 1]``."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return f"{'<' if self.hi_open else '<='} {self.hi:g}"

    def check(self, name: str, value: Any) -> None:
        """Raises ValueError naming ``name``, ``value`` and :meth:`describe` when ``value`` is not accepted."""
        bad = f"{name}={value!r}: must be {self.describe()}"
        if self.choices:
            if value not in self.choices:
                raise ValueError(bad)
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(bad)
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            raise ValueError(bad)
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            raise ValueError(bad)


@dataclass(frozen=True)
class TrainField:
    """One training field: its Python type, the trainer's :class:`Rule` (None: any value of the type, as for
    the booleans), its description, and whether a client may override it through the API (``client``).

    The API accepts the trainer's values capped at ``api_max`` (inclusive); ``api`` replaces the trainer's
    rule for the API where the API differs otherwise (an open cap, a stricter lower bound, choices in
    another order)."""

    kind: type
    rule: Rule | None = None
    description: str = ""
    client: bool = False
    api_max: float | None = None
    api: Rule | None = None

    @property
    def api_rule(self) -> Rule | None:
        """The values the API accepts for this field."""
        if self.api is not None:
            return self.api
        if self.api_max is not None and self.rule is not None:
            return replace(self.rule, hi=self.api_max, hi_open=False)
        return self.rule


_UNIT, _POSITIVE, _NATURAL, _COUNT = Rule(0, 1), Rule(0, lo_open=True), Rule(0), Rule(1)


def _client(kind: type, rule: Rule | None = None, api_max: float | None = None, **more: Any) -> TrainField:
    """A field the API lets a client override."""
    return TrainField(kind, rule, client=True, api_max=api_max, **more)


#: Every training field that is checked or that a client may set (the paths, texts and the values the trainer
#: derives while it runs are not), in the order the API lists the client's fields.
TRAIN_FIELDS: dict[str, TrainField] = {
    # the run's length
    "epochs": _client(int, _COUNT, 10_000),
    "total_steps": _client(int, _NATURAL, 10_000_000),
    "budget_minutes": _client(float, _NATURAL, 100_000),
    "max_steps": _client(int, _NATURAL, 10_000_000),
    # optimisation
    "batch_size": _client(int, _COUNT, 4096, description="total over all processes"),
    "lr": _client(float, _POSITIVE, 100),
    "weight_decay": _client(float, _NATURAL, 1),
    "momentum": _client(float, Rule(0, 1, hi_open=True)),
    "lars_eta": TrainField(float, _NATURAL),
    "warmup_epochs": _client(float, _NATURAL, 1000),
    "warmup_multiplier": TrainField(float, Rule(1)),
    "final_lr": _client(float, _NATURAL, 100),
    "teacher_momentum": _client(float, _UNIT),
    # data
    "image_size": _client(int, Rule(32), 1024),
    "min_scale": _client(float, Rule(0, 1, lo_open=True)),
    # the model (core.model.SlotConConfig)
    "arch": _client(str, Rule(choices=tuple(sorted(ARCHS))), api=Rule(choices=ARCHS)),
    "width": _client(float, _POSITIVE, 4),
    "stride16": _client(bool),
    "dim_hidden": _client(int, _COUNT, 8192),
    "dim_out": _client(int, _COUNT, 1024),
    "num_prototypes": _client(int, Rule(2), 8192),
    "teacher_temp": _client(float, _POSITIVE, 10),
    "student_temp": _client(float, _POSITIVE, 10),
    "group_loss_weight": _client(float, _UNIT),
    "center_momentum": TrainField(float, _UNIT),
    "slot_temp": TrainField(float, _POSITIVE),
    # choices
    "optimizer": _client(str, Rule(choices=OPTIMIZERS)),
    "lr_scaling": _client(str, Rule(choices=LR_SCALINGS)),
    "precision": _client(str, Rule(choices=PRECISIONS)),
    "device": _client(str, Rule(choices=DEVICES)),
    "fast_augment": _client(bool),
    # the machine
    "workers": _client(int, _NATURAL, 64),
    "threads": _client(int, _NATURAL, 256),
    "dist_timeout_minutes": TrainField(float, _POSITIVE),
    "seed": _client(int, Rule(0, 2**63 - 1), api=Rule(0, 2**32, hi_open=True)),
    # logging and checkpoints
    "log_every": _client(int, _COUNT, 1_000_000),
    # the API asks for a checkpoint every few epochs (the trainer's 0, the last epoch's only, is not offered)
    "save_every": _client(int, _NATURAL, api=Rule(1, 10_000)),
    "save_minutes": _client(float, _POSITIVE, 100_000),
    "max_minutes": _client(float, _NATURAL, 1_000_000),
    "log_seconds": TrainField(float, _NATURAL),
    "progress": TrainField(str, Rule(choices=PROGRESS)),
}


def trainer_rules() -> dict[str, Rule]:
    """The trainer's rule of every field that has one (``trainer.config.RULES``)."""
    return {name: f.rule for name, f in TRAIN_FIELDS.items() if f.rule is not None}


def client_fields() -> dict[str, TrainField]:
    """The fields a client may override through the API, in the order it lists them."""
    return {name: f for name, f in TRAIN_FIELDS.items() if f.client}
