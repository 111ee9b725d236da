"""Links reopen views: each page reads its state from the URL's query parameters and writes it back
(AppTest against the live API on a real small index; the browser test opens such a link in Chromium)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

PAGES = Path(__file__).resolve().parents[2] / "ui" / "app_pages"


def _open(name: str, **params: str) -> AppTest:
    at = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=90)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert [e.value for e in at.exception] == []
    return at


def _get(url: str, path: str) -> dict:
    return httpx.get(f"{url}/api{path}", timeout=30).raise_for_status().json()


def test_a_link_reopens_a_prototype_and_its_similar_segments(api_env: str) -> None:
    protos = _get(api_env, "/prototypes")["items"]
    k = max(protos, key=lambda p: p["num_segments"])["id"]
    seg = _get(api_env, f"/prototypes/{k}/segments?limit=1")["items"][0]["id"]
    at = _open("concepts", prototype=str(k), segment=str(seg))
    assert any(f"Prototype #{k}" in s.value for s in at.subheader)
    assert any(f"Segments similar to segment {seg}" in m.value for m in at.markdown)
    assert _param(at, "prototype") == str(k) and _param(at, "segment") == str(seg)


def _sims(at: AppTest) -> list[str]:
    """The similarities the tiles show, sorted (AppTest lists the grid's captions column by column)."""
    return sorted((p for c in at.caption for p in c.value.split(" · ") if p.startswith("sim ")), reverse=True)


def test_similar_segments_are_searched_in_the_chosen_space(api_env: str) -> None:
    protos = _get(api_env, "/prototypes")["items"]
    k = max(protos, key=lambda p: p["num_segments"])["id"]
    seg = _get(api_env, f"/prototypes/{k}/segments?limit=1")["items"][0]["id"]
    at = _open("concepts", prototype=str(k), segment=str(seg))  # no ?space=: the encoder's, the default
    radio = at.radio(key="neighbour_space")
    assert radio.value == "encoder" and radio.options == [
        "Encoder features (pre-projector)",
        "Projector (what the prototypes score)",
    ]
    assert any(c.value.startswith("Similarity: cosine of the segments' backbone features") for c in at.caption)
    for space in ("encoder", "projector"):
        want = _get(api_env, f"/segments/{seg}/neighbors?limit=12&space={space}")["items"]
        if space == "projector":
            radio.set_value("projector").run()
            assert _param(at, "space") == "projector"  # not the default: it goes into the link
        else:
            assert "space" not in at.query_params
        assert _sims(at) == [f"sim {n['similarity']:.3f}" for n in want], space
    again = _open("concepts", prototype=str(k), segment=str(seg), space="projector")  # the link reopens it
    assert again.radio(key="neighbour_space").value == "projector"
    assert _sims(again) == _sims(at)


def test_grid_filters_round_trip_through_the_url(api_env: str) -> None:
    at = _open("concepts", sort="id", per_page="12", hide_dead="0", q="#1")
    assert at.selectbox(key="concepts_sort").value == "id"
    assert at.selectbox(key="concepts_per_page").value == 12
    assert at.checkbox(key="concepts_hide_dead").value is False
    assert at.text_input(key="concepts_query").value == "#1"
    at.selectbox(key="concepts_sort").set_value("purity").run()
    assert _param(at, "sort") == "purity" and _param(at, "per_page") == "12"
    at.selectbox(key="concepts_sort").set_value("most active").run()  # the default leaves the URL
    assert "sort" not in at.query_params


def test_a_broken_link_opens_the_default_view(api_env: str) -> None:
    at = _open("concepts", sort="nonsense", per_page="7", prototype="not-a-number", page="-3")
    assert at.selectbox(key="concepts_sort").value == "most active"
    assert at.selectbox(key="concepts_per_page").value == 24
    assert at.segmented_control(key="concepts_view").value == "Grid"
    for name in ("sort", "per_page", "prototype", "page"):
        assert name not in at.query_params


def test_statistics_and_image_slots_state_in_the_url(api_env: str) -> None:
    at = _open("statistics", duplicates="0.75")
    assert at.slider(key="dup_threshold").value == pytest.approx(0.75)
    assert "(cosine ≥ 0.75)" in "\n".join(m.value for m in at.markdown)
    images = _get(api_env, "/images?limit=5")["items"]
    at = _open("image_slots", source="Dataset", image=str(images[2]["id"]))
    assert at.segmented_control(key="slots_source").value == "Dataset"
    assert at.selectbox(key="slots_pick").value == images[2]["id"]


def test_image_slots_neighbours_are_searched_in_the_chosen_space(api_env: str) -> None:
    image_id = _get(api_env, "/images?limit=5")["items"][1]["id"]
    jpeg = httpx.get(f"{api_env}/api/images/{image_id}", timeout=30).raise_for_status().content
    at = _open("image_slots", source="Dataset", image=str(image_id))  # no ?space=: the encoder's
    assert at.radio(key="neighbour_space").value == "encoder"
    assert any("similarity in the encoder features space" in m.value for m in at.markdown)
    for space in ("encoder", "projector"):
        if space == "projector":
            at.radio(key="neighbour_space").set_value("projector").run()
            assert _param(at, "space") == "projector"
        answer = httpx.post(
            f"{api_env}/api/slots", params={"space": space}, files={"file": ("i.jpg", jpeg, "image/jpeg")}, timeout=60
        ).raise_for_status()
        neighbours = [n for s in answer.json()["slots"] for n in s["neighbors"]]
        # the image's own segments are left out of its neighbours
        sims = [n["similarity"] for n in neighbours if n["segment"]["image_id"] != image_id]
        want = sorted((f"sim {v:.3f}" for v in sims), reverse=True)
        assert want and _sims(at) == want, space
        assert len(sims) < len(neighbours)  # the API lists them (similarity 1): the page does not


def _param(at: AppTest, name: str) -> str:
    value = at.query_params[name]
    return value[0] if isinstance(value, list) else value
