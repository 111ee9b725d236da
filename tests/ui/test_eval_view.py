"""The Unsupervised segmentation page's tables on real evaluations: the paper's row stands beside a score
only when the indexer finds the two tags equal, else it is a reference line naming what differs."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.eval_record import read_eval_result
from indexer.evaluate import EvalConfig, run_eval
from indexer.evaluate_tag import PAPER
from ui.views.eval_view import export_frame, paper_reference, scores_charts, scores_frame


@pytest.fixture(scope="module")
def results(synthetic_root: Path, tiny_checkpoint: Path) -> list[dict]:
    """Two real evaluations as the API serves them (with ids): the tiny model and a 3-seed k-means."""
    model = run_eval(EvalConfig(tiny_checkpoint, synthetic_root, "synthetic", resolution=64, limit=3, seeds=2))
    km = run_eval(EvalConfig(None, synthetic_root, "synthetic", resolution=64, baseline="kmeans-rgb", limit=3, seeds=3))
    return [{**model.to_dict(), "id": 1}, {**km.to_dict(), "id": 2}]


def _as_paper_measured(result: dict) -> dict:
    """``result`` with its one-to-one score re-tagged as the paper's, read back as the server reads a stored
    result (read_eval_result checks every tag against the paper anew)."""
    scores = [dict(s) for s in result["scores"]]
    scores[0]["tag"] = PAPER.tag.to_dict()
    return {**read_eval_result({**result, "scores": scores}).to_dict(), "id": result["id"]}


def test_a_score_measured_another_way_gets_a_reference_line(results: list[dict]) -> None:
    model, km = results
    paper = PAPER.to_dict()
    frame = scores_frame(results, model, paper)
    assert frame["method"].tolist() == [
        "SlotCon (this run) · one-to-one", "SlotCon (this run) · many-to-one", "SlotCon (this run) · cluster probe",
        "baseline kmeans-rgb #2 · one-to-one", "baseline kmeans-rgb #2 · many-to-one",
    ]  # fmt: skip
    assert frame["± mIoU"].iloc[3] == pytest.approx(km["scores"][0]["miou_std"]) and km["scores"][0]["miou_std"]
    assert frame["± mIoU"].isna().iloc[0]  # one run: no std
    line = paper_reference(model, paper)
    assert line is not None and "18.26%" in line and "42.36%" in line and PAPER.tag.label in line
    assert "K 8 (paper 27)" in line and "resolution 64 (paper 320)" in line
    charts = [chart.to_dict() for chart in scores_charts(frame, paper, reference=True)]  # valid Vega-Lite specs
    assert [c["layer"][0]["encoding"]["x"]["title"] for c in charts] == ["mIoU", "pixel accuracy"]
    assert frame["± mIoU"].dtype == float  # an empty cell, not "None", where there is no std


def test_the_paper_row_stands_beside_the_score_with_its_tag(results: list[dict]) -> None:
    model = _as_paper_measured(results[0])
    assert model["scores"][0]["paper"]["comparable"] and not model["scores"][1]["paper"]["comparable"]
    paper = PAPER.to_dict()
    frame = scores_frame(results, model, paper)
    assert frame["method"].iloc[1] == "SlotCon (paper), Table 5"  # right after the one-to-one score
    assert frame["protocol"].iloc[1] == frame["protocol"].iloc[0] == PAPER.tag.label
    assert frame["mIoU"].iloc[1] == 0.1826 and (frame["method"] == "SlotCon (paper), Table 5").sum() == 1
    assert paper_reference(model, paper) is None
    export = export_frame(model, paper)
    assert export["paper comparable"].tolist()[:3] == [True, False, False]
    assert export["K"].iloc[-1] == 27 and export["image list"].iloc[-1] == "cocostuff27-curated-val2017"
    assert {"benchmark", "images used", "images listed", "matching", "resolution", "crop", "CRF", "seeds"} <= set(
        export.columns
    )


def test_evaluations_are_named_by_model_protocol_and_baseline() -> None:
    from ui.views.eval_view import result_name

    base = {"id": 3, "protocol": {"name": "synthetic"}, "checkpoint": {"path": "cpu-demo/final.pth"}}
    assert result_name({**base, "baseline": "none"}) == "evaluation 3 · cpu-demo/final.pth · synthetic"
    assert result_name({**base, "baseline": "kmeans-rgb", "id": 4}) == "evaluation 4 · baseline kmeans-rgb · synthetic"
    assert "random-init" in result_name({**base, "baseline": "random-init"})
    assert not result_name({**base, "baseline": "none"}).startswith("#")  # not a job's number
