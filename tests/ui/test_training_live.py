"""The training page's statistics: positive pairs beside active slots, said as the paper says them."""

from __future__ import annotations

from ui.views.training_live import STATS_CAPTION, _num, metrics_frame


def test_the_frame_keeps_positive_pairs_and_drops_notes() -> None:
    records = [
        {"step": 1, "loss": 5.0, "active_slots": 6.5, "positive_pairs": 3.25, "skipped_steps": 0},
        {"event": "skipped_step", "step": 2, "reason": "non-finite loss"},  # a note, not a metrics row
        {"step": 2, "loss": None, "active_slots": 6.0, "positive_pairs": 3.0, "skipped_steps": 1},
    ]
    frame = metrics_frame(records)
    assert list(frame.index) == [1, 2] and list(frame["positive_pairs"]) == [3.25, 3.0]
    assert _num(records[2]["loss"], ".4f") == "–" and _num(3.25, ".2f") == "3.25"


def test_the_caption_places_the_papers_numbers_on_training_crops() -> None:
    assert "training crop" in STATS_CAPTION and "7 active slots" in STATS_CAPTION and "3.6" in STATS_CAPTION
    assert "val2017" not in STATS_CAPTION
