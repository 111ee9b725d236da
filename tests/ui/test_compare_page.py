"""The Compare page against the live API: two indexes under its indexes directory, picked from the
page or from the link (``?a=&b=``), matched pairs side by side."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

PAGE = Path(__file__).resolve().parents[2] / "ui" / "app_pages" / "compare.py"


@pytest.fixture
def second_index(ui_index: Path):
    from ui.client import fetch_indexes

    copy = ui_index.parent / "tiny-copy"
    shutil.copytree(ui_index, copy)
    fetch_indexes.clear()  # the listing is cached (15 s) across the pages run in this process
    yield copy
    fetch_indexes.clear()
    shutil.rmtree(copy, ignore_errors=True)


def test_compare_page_with_one_index_explains_what_it_needs(api_env: str) -> None:
    at = AppTest.from_file(str(PAGE), default_timeout=90).run()
    assert [e.value for e in at.exception] == []
    assert any("needs two indexes" in i.value for i in at.info)


def test_compare_page_shows_matched_pairs(api_env: str, second_index: Path) -> None:
    at = AppTest.from_file(str(PAGE), default_timeout=90)
    at.query_params["a"] = "tiny-copy"
    at.query_params["b"] = "tiny"
    at.run()
    assert [e.value for e in at.exception] == [], [i.value for i in at.info] + [e.value for e in at.error]
    assert at.selectbox(key="compare_a").value == "tiny-copy" and at.selectbox(key="compare_b").value == "tiny"
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Matched pairs"]) > 0 and metrics["Mean IoU"] == "1.000"  # an index against its copy
    assert int(metrics["Splits"]) == int(metrics["Merges"]) == 0
    assert len(at.image) == 2 * min(12, int(metrics["Matched pairs"]))  # each pair's two tiles


def test_a_concepts_figure_is_made_from_its_page(api_env: str) -> None:
    import httpx

    protos = httpx.get(f"{api_env}/api/prototypes", timeout=30).json()["items"]
    k = max(protos, key=lambda p: p["num_segments"])["id"]
    at = AppTest.from_file(str(PAGE.parent / "concepts.py"), default_timeout=90)
    at.query_params["prototype"] = str(k)
    at.run()
    at.button(key=f"fig_make_{k}").click().run()
    assert [e.value for e in at.exception] == []
    assert at.session_state[f"fig_{k}"][2].startswith(b"\x89PNG")


def test_names_are_carried_over_from_the_compare_page(api_env: str, second_index: Path) -> None:
    at = AppTest.from_file(str(PAGE), default_timeout=90)
    at.query_params["a"] = "tiny"
    at.query_params["b"] = "tiny-copy"
    at.run()
    at.button(key="carry_names").click().run()
    assert [e.value for e in at.exception] == [] and [e.value for e in at.error] == []
    assert any("names carried over to tiny-copy" in s.value for s in at.success)


def test_indexes_are_ordered_by_their_checkpoints_training() -> None:
    from ui.views.index_order import labels, training_order

    indexes = [
        {"name": "epoch8", "epoch": 8, "step": 800},
        {"name": "epoch2", "epoch": 2, "step": 200},
        {"name": "release", "epoch": None, "step": None},
    ]
    names = [i["name"] for i in sorted(indexes, key=training_order)]
    assert names == ["release", "epoch2", "epoch8"]  # the page's defaults: A = epoch2, B = epoch8
    assert labels(indexes)["epoch8"] == "epoch8 (step 800)" and labels(indexes)["release"] == "release (step unknown)"


def test_an_index_is_not_compared_with_itself(api_env: str, second_index: Path) -> None:
    at = AppTest.from_file(str(PAGE), default_timeout=90)
    at.query_params["a"] = "tiny"
    at.query_params["b"] = "tiny"
    at.run()
    assert [e.value for e in at.exception] == []
    assert any("both **tiny**" in w.value for w in at.warning)
    assert not at.metric  # nothing compared
