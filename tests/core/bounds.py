"""The values on both sides of a rule's bounds, for the tests that try every bound of the training fields
(tests/core/test_train_fields.py on the trainer and the model, tests/server/test_train_overrides.py over HTTP)."""

from __future__ import annotations

import math

from core.train_fields import Rule


def _past(value: float, kind: type, direction: float) -> float:
    """The next value of type ``kind`` beyond ``value`` towards ``direction`` (±inf)."""
    if kind is int:
        return int(value) + (1 if direction > 0 else -1)
    return math.nextafter(float(value), direction)


def edges(rule: Rule, kind: type) -> tuple[list[float], list[float]]:
    """(values at the bounds of ``rule`` that it accepts, the values just past them that it refuses): a closed
    bound itself and the value beyond it; for an open bound, the nearest value inside it and the bound."""
    accepted: list[float] = []
    refused: list[float] = []
    for bound, is_open, outward in ((rule.lo, rule.lo_open, -math.inf), (rule.hi, rule.hi_open, math.inf)):
        if bound is None:
            continue
        at = kind(bound)
        if is_open:
            accepted.append(_past(at, kind, -outward))
            refused.append(at)
        else:
            accepted.append(at)
            refused.append(_past(at, kind, outward))
    return accepted, refused
