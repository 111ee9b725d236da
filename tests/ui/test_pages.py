"""Every page of the UI against a live API on a real small index (``live_api`` in conftest.py):
renders without exceptions, shows the numbers the API holds, and its interactions work."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from ui.components import UNREACHABLE_TITLE

PAGES = Path(__file__).resolve().parents[2] / "ui" / "app_pages"
UNREACHABLE_URL = "http://127.0.0.1:9"  # the discard port: nothing listens there

PAGE_NAMES = ["concepts", "image_slots", "statistics", "segmentation", "compare", "training"]


def page(name: str) -> AppTest:
    """A fresh AppTest of ``ui/app_pages/<name>.py``, run once."""
    at = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=90)
    return at.run()


def no_exceptions(at: AppTest) -> None:
    assert [e.value for e in at.exception] == []


def texts(at: AppTest) -> str:
    """Everything textual on the page, for substring checks."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [s.value for s in at.subheader]
    parts += [str(m.label) + "=" + str(m.value) for m in at.metric]
    return "\n".join(parts)


def get(url: str, path: str) -> dict:
    return httpx.get(f"{url}/api{path}", timeout=30).raise_for_status().json()


# ---------------------------------------------------------------------------- no API


@pytest.mark.parametrize("name", PAGE_NAMES)
def test_unreachable_api_gives_one_banner(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOTCON_API_URL", UNREACHABLE_URL)
    at = page(name)
    no_exceptions(at)
    banners = [e.value for e in at.error]
    assert len(banners) == 1 and UNREACHABLE_TITLE in banners[0] and UNREACHABLE_URL in banners[0]


def test_entry_file_declares_the_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOTCON_API_URL", UNREACHABLE_URL)
    at = AppTest.from_file(str(PAGES.parent / "app.py"), default_timeout=30).run()
    no_exceptions(at)
    assert at.title[0].value.endswith("Concepts")  # the default page ran


# ---------------------------------------------------------------------------- Concepts


def test_concepts_grid_shows_counts_and_cards(api_env: str) -> None:
    protos = get(api_env, "/prototypes")
    alive = [p for p in protos["items"] if not p["dead"]]
    at = page("concepts")
    no_exceptions(at)
    summary = f"{protos['total']} prototypes · {protos['num_dead']} dead · {len(alive)} shown"
    assert summary in texts(at)
    open_buttons = [b for b in at.button if b.label == "Open"]
    assert len(open_buttons) == len(alive)
    assert len(at.image) >= len(alive)  # one best-segment overlay per live prototype
    best = max(alive, key=lambda p: p["num_images"])
    assert f"{best['num_images']} images" in texts(at)
    assert "purity" in texts(at)  # the synthetic scenes have ground truth

    at.checkbox(key="concepts_hide_dead").uncheck().run()
    assert f"{protos['total']} shown" in texts(at)
    at.text_input(key="concepts_query").input("no-such-concept").run()
    assert any("No prototype matches" in i.value for i in at.info)


def test_concepts_open_topk_more_similar_and_label(api_env: str) -> None:
    protos = get(api_env, "/prototypes")["items"]
    best = max(protos, key=lambda p: p["num_segments"])
    k = best["id"]
    at = page("concepts")
    at.button(key=f"open_{k}").click().run()
    no_exceptions(at)
    assert any(f"Prototype #{k}" in s.value for s in at.subheader)
    shown = min(12, best["num_segments"])
    assert f"Top {shown} segments" in texts(at)
    assert len(at.image) == shown
    assert any(m.label == "Images active" and str(m.value) == str(best["num_images"]) for m in at.metric)

    top = get(api_env, f"/prototypes/{k}/segments?limit=1")["items"][0]
    at.button(key=f"top_{k}_sim_{top['id']}").click().run()
    no_exceptions(at)
    assert f"Segments similar to segment {top['id']}" in texts(at)
    neighbors = get(api_env, f"/segments/{top['id']}/neighbors?limit=12")["items"]
    assert "sim 1.000" in texts(at) or neighbors[0]["similarity"] < 0.9995

    at.text_input(key=f"label_{k}").input("bullseye texture")
    at.button[[b.label for b in at.button].index("Save name")].click().run()
    no_exceptions(at)
    try:
        assert get(api_env, f"/prototypes/{k}")["label"] == "bullseye texture"
        assert any(f"Prototype #{k} · bullseye texture" in s.value for s in at.subheader)
    finally:
        httpx.delete(f"{api_env}/api/prototypes/{k}/label", timeout=30)


def test_concepts_map_view(api_env: str) -> None:
    at = page("concepts")
    at.segmented_control(key="concepts_view").set_value("Map").run()
    no_exceptions(at)
    assert "PCA" in texts(at)
    assert at.get("vega_lite_chart"), "the map chart is missing"


# ---------------------------------------------------------------------------- Image slots


def test_image_slots_upload_flow(api_env: str, sample_image_bytes: bytes) -> None:
    at = page("image_slots")
    no_exceptions(at)
    at.file_uploader(key="slots_upload").set_value(("scene.jpg", sample_image_bytes, "image/jpeg")).run()
    no_exceptions(at)
    answer = (
        httpx.post(f"{api_env}/api/slots", files={"file": ("scene.jpg", sample_image_bytes, "image/jpeg")}, timeout=60)
        .raise_for_status()
        .json()
    )
    n = len(answer["slots"])
    assert n >= 1 and f"**{n} slots** on this image" in texts(at)
    table = at.dataframe[0].value
    assert sorted(table["prototype"].tolist()) == sorted(s["prototype"] for s in answer["slots"])
    assert abs(table["area share"].sum() - 1.0) < 1e-6
    assert sum("Slot #" in m.value for m in at.markdown) == n
    assert len(at.image) >= 2 + n  # image, overlay, one crop per slot (+ neighbour tiles)


def test_image_slots_pick_from_dataset(api_env: str) -> None:
    at = page("image_slots")
    at.segmented_control(key="slots_source").set_value("Dataset").run()
    no_exceptions(at)
    assert "slots** on this image" in texts(at)
    assert at.selectbox(key="slots_pick").value == get(api_env, "/images?limit=1")["items"][0]["id"]


# ---------------------------------------------------------------------------- Slot statistics


def test_statistics_numbers(api_env: str) -> None:
    stats = get(api_env, "/stats")
    at = page("statistics")
    no_exceptions(at)
    metrics = {m.label: str(m.value) for m in at.metric}
    assert metrics["Dead prototypes"] == str(stats["num_dead"])
    assert metrics["Prototypes"] == str(stats["num_prototypes"])
    assert metrics["Images"] == str(stats["num_images"])
    assert metrics["Active prototypes per image"] == f"{stats['active_per_image']['mean']:.2f}"
    assert ", ".join(f"#{k}" for k in stats["dead"]) in texts(at)
    assert len(at.get("vega_lite_chart")) >= 2  # long tail + histogram
    assert "near-duplicate pairs" in texts(at)


# ---------------------------------------------------------------------------- Segmentation


def test_segmentation_shows_stored_eval(api_env: str) -> None:
    result = get(api_env, "/eval")["items"][0]
    at = page("segmentation")
    no_exceptions(at)
    metrics = {m.label: str(m.value) for m in at.metric}
    assert metrics["mIoU"] == f"{100 * result['miou']:.2f} %"
    assert metrics["Pixel accuracy"] == f"{100 * result['pixel_accuracy']:.2f} %"
    assert metrics["Images"] == f"{result['counts']['num_images']}/12" != "0/12"
    frame = at.dataframe[0].value
    assert abs(frame["mIoU"].iloc[0] - result["miou"]) < 1e-9
    # every score with its protocol; a synthetic score is no comparison with the paper: a reference line
    assert frame["protocol"].tolist()[: len(result["scores"])] == [s["tag"]["label"] for s in result["scores"]]
    assert not any(m.startswith("SlotCon (paper)") for m in frame["method"])
    (info,) = [i.value for i in at.info]
    assert "Reference only" in info and "18.26%" in info and "Table 5" in info
    assert "benchmark synthetic (paper cocostuff27)" in info and "K 8 (paper 27)" in info
    assert f"Measured as: {result['tag']['label']}" in texts(at)
    assert len(at.get("vega_lite_chart")) >= 3  # scores, per-class IoU, confusion matrix
    assert len(at.image) >= 3  # an example: image, prediction, ground truth


# ---------------------------------------------------------------------------- Training


def _wait_status(url: str, job_id: int, wanted: set[str], timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    status = ""
    while time.monotonic() < deadline:
        status = get(url, f"/jobs/{job_id}")["status"]
        if status in wanted:
            return status
        time.sleep(0.5)
    return status


def test_training_start_and_stop(api_env: str) -> None:
    at = page("training")
    no_exceptions(at)
    assert "No training job started from this page yet." in texts(at)
    at.number_input[0].set_value(1)  # epochs: the form's first number input
    at.button[[b.label for b in at.button].index("Start training")].click().run()
    no_exceptions(at)
    assert any("end inside the warm-up" in w.value for w in at.warning)  # cpu-demo warms up over 1 epoch
    job_id = at.session_state["train_job"]
    job = get(api_env, f"/jobs/{job_id}")
    assert job["kind"] == "train" and job["config"]
    assert f"train job {job_id}" in texts(at)
    try:
        assert at.button(key=f"stop_{job_id}") is not None
        at.button(key=f"stop_{job_id}").click().run()
        no_exceptions(at)
        assert _wait_status(api_env, job_id, {"stopped", "failed", "succeeded"}) in {"stopped", "succeeded"}
        at.run()
        assert f"train job {job_id} · **stopped**" in texts(at) or "**succeeded**" in texts(at)
    finally:
        httpx.delete(f"{api_env}/api/jobs/{job_id}", timeout=30)
