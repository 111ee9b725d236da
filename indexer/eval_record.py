"""An evaluation result read from its JSON form, whichever version of the indexer wrote it."""

from __future__ import annotations

from typing import Any

from indexer.evaluate_tag import with_tags
from indexer.types import EvalResult
from indexer.unsupervised import class_table, matched_confusion


def read_eval_result(data: dict[str, Any]) -> EvalResult:
    """The :class:`indexer.types.EvalResult` of ``data``. A result stored before the indexer computed the
    matched confusion and the per-class table gets them computed from its confusion and matching, one stored
    before scores were tagged gets its tags from its protocol, and every score's check against the paper's row
    is made anew (:func:`indexer.evaluate_tag.with_tags`), so it follows the row as the code states it."""
    data = with_tags(data)
    if "matched_confusion" not in data or "per_class" not in data:
        names = data.get("class_names") or [f"class {c}" for c in range(len(data["per_class_iou"]))]
        data = {
            **data,
            "class_names": names,
            "matched_confusion": matched_confusion(data["confusion"], data["matching"], len(names)),
            "per_class": class_table(names, data["per_class_iou"], data["counts"]["class_pixels"]),
        }
    if "per_class_iou_named" not in data:
        data = {**data, "per_class_iou_named": dict(zip(data["class_names"], data["per_class_iou"], strict=True))}
    return EvalResult.from_dict(data)
