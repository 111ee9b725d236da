"""The object-discovery scores and the dissection on the pages, against a live API on a real index whose
stored evaluation measured them (``ui_index`` in conftest.py): the numbers are the API's."""

from __future__ import annotations

from pathlib import Path

import httpx
from streamlit.testing.v1 import AppTest

PAGES = Path(__file__).resolve().parents[2] / "ui" / "app_pages"


def page(name: str) -> AppTest:
    return AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=90).run()


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [s.value for s in at.subheader]
    return "\n".join(parts)


def get(url: str, path: str) -> dict:
    return httpx.get(f"{url}/api{path}", timeout=30).raise_for_status().json()


def test_segmentation_page_shows_slots_as_objects(api_env: str) -> None:
    found = get(api_env, "/eval")["items"][0]["object_discovery"]
    at = page("segmentation")
    assert [e.value for e in at.exception] == []
    metrics = {m.label: str(m.value) for m in at.metric}
    assert metrics["FG-ARI"] == f"{100 * found['fg_ari']:.1f} %"
    assert metrics["mBO (images)"] == f"{100 * found['mbo_image']:.1f} %"
    assert metrics["mBO (instances)"] == f"{100 * found['mbo_instance']:.1f} %"
    assert metrics["Images · instances"] == f"{found['images']} · {found['instances']}"
    assert f"Measured as: {found['tag']['label']}" in texts(at)
    # the best and worst images, each as image, slot masks and instances, after the segmentation's examples
    assert len(at.image) >= 3 * (3 + len(found["best"]) + len(found["worst"]))
    assert "Prototypes as concepts (dissection)" in texts(at)


def test_statistics_and_concepts_show_the_dissection(api_env: str) -> None:
    dis = get(api_env, "/eval/dissection")
    at = page("statistics")
    assert [e.value for e in at.exception] == []
    assert f"{dis['classes_found']} of {dis['num_classes']} classes found" in texts(at)
    table = at.dataframe[-1].value
    best = max(dis["prototypes"], key=lambda r: (r["best_iou"], -r["prototype"]))
    assert int(table["prototype"].iloc[0]) == best["prototype"]
    assert abs(float(table["best IoU"].iloc[0]) - best["best_iou"]) < 1e-12

    at = page("concepts")
    at.selectbox(key="concepts_sort").set_value("dissection IoU").run()
    assert [e.value for e in at.exception] == []
    first = [b for b in at.button if b.label == "Open"][0]
    assert first.key == f"open_{best['prototype']}"  # the server's order: best IoU first
    assert f"IoU {100 * best['best_iou']:.0f} % with {best['best_class_name']}" in texts(at)
    first.click().run()
    assert f"Dissection: best class **{best['best_class_name']}**" in texts(at)
