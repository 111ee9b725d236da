"""The training form offers exactly what ``POST /api/jobs/train`` accepts: its number inputs take their
bounds from ``GET /api/options``'s ``train_ranges`` (the training fields' table), not from the UI."""

from __future__ import annotations

from pathlib import Path

import httpx
from streamlit.testing.v1 import AppTest

PAGE = Path(__file__).resolve().parents[2] / "ui" / "app_pages" / "training.py"
#: The form's number inputs, in the order they are drawn, and the step that moves in an excluded bound.
INPUTS = (
    ("epochs", 1),
    ("batch_size", 1),
    ("lr", 1e-4),
    ("num_prototypes", 1),
    ("budget_minutes", 0.1),
    ("max_minutes", 1),
)


def test_the_forms_numbers_are_bounded_by_the_api(api_env: str) -> None:
    ranges = httpx.get(f"{api_env}/api/options", timeout=30).raise_for_status().json()["train_ranges"]
    at = AppTest.from_file(str(PAGE), default_timeout=90).run()
    assert [e.value for e in at.exception] == []
    inputs = at.number_input
    assert len(inputs) >= len(INPUTS)
    for widget, (name, step) in zip(inputs, INPUTS, strict=False):
        r = ranges[name]
        lo = r["minimum"] + (step if r["exclusive_minimum"] else 0)
        hi = r["maximum"] - (step if r["exclusive_maximum"] else 0)
        assert (widget.min, widget.max) == (type(widget.value)(lo), type(widget.value)(hi)), (name, widget.label)
    lr = inputs[2]
    assert lr.min > 0  # the API refuses lr = 0: the form does not offer it
