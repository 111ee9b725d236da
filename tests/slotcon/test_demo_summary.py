"""The demo's one-screen summary of its evaluations: scores against the baselines, one column a model."""

from __future__ import annotations

import json
from pathlib import Path

from indexer.evaluate import EvalConfig, run_eval
from slotcon.demo import say_scores, score_table


def test_the_summary_is_a_table_of_the_stored_results(
    synthetic_root: Path, tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    results = {}
    for baseline in ("none", "kmeans-rgb"):
        result = run_eval(
            EvalConfig(tiny_checkpoint, synthetic_root, "synthetic", resolution=64, baseline=baseline, seeds=1)
        ).to_dict()
        (tmp_path / f"eval-synthetic-{baseline}.json").write_text(json.dumps(result))
        results[baseline] = result
    table = score_table(results).splitlines()
    assert table[0].split() == ["SlotCon", "kmeans-rgb"]
    miou = table[1].split()
    assert miou[0] == "mIoU" and [float(v) for v in miou[1:]] == [
        round(100 * results[b]["miou"], 1) for b in ("none", "kmeans-rgb")
    ]
    classes = list(results["none"]["per_class_iou_named"])
    assert len(table) == 3 + len(classes) and all(row.startswith(c) for row, c in zip(table[3:], classes, strict=True))
    say_scores(tmp_path)
    out = capsys.readouterr().out
    assert "pixel accuracy" in out and "eval-synthetic-*.json" in out and "{" not in out
    assert len(out.splitlines()) < 25  # one screen
    say_scores(tmp_path, full=True)
    assert json.loads(capsys.readouterr().out) == results  # the full results on request
