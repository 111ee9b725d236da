"""Image slots: upload an image (or pick one from the dataset) and see its slots, their crops and
the nearest dataset segments of each slot."""

from __future__ import annotations

import hashlib

import streamlit as st

from ui.client import api_url, fetch_image, fetch_images, get_client
from ui.components import call, run_page
from ui.url_state import Param, flag, one_of, publish, restore
from ui.views.concept_detail import DEFAULT_SPACE, SPACE_LABELS, neighbour_space
from ui.views.slot_view import show_slots

ACCEPTED = ["jpg", "jpeg", "png", "webp", "bmp"]
SOURCES = ["Upload", "Dataset"]


def analyze(name: str, data: bytes, content_type: str, crop: bool = False, space: str | None = None) -> dict | None:
    """Asks the API for the slots of an image (whole, or the index's centre crop) and their neighbours in
    ``space``; memoised per content and choices in the session."""
    digest = hashlib.sha256(data).hexdigest() + (":crop" if crop else ":whole") + f":{space}"
    cache = st.session_state.setdefault("slot_answers", {})
    if digest not in cache:
        with st.spinner("Running the model on the image…"):
            answer = call("Analysing the image", get_client().analyze, name, data, content_type, crop, space)
        if answer is None:
            return None
        cache.clear()  # keep one answer: uploads can be large
        cache[digest] = answer
    return cache[digest]


def _pick(image_id: int) -> None:
    """Opens dataset image ``image_id`` (a thumbnail or a neighbour's image)."""
    st.session_state["slots_source"] = "Dataset"
    st.session_state["slots_pick"] = image_id


def pick_from_dataset() -> tuple[str, bytes, str, int] | None:
    """A dataset image chosen by id (or from a strip of thumbnails, each opening its image); returns its
    name, bytes, type and id."""
    listing = fetch_images(api_url(), 0, 200)
    items = listing.get("items", [])
    if not items:
        st.info("The index has no images.")
        return None
    total = listing.get("total", len(items))
    ids = [int(i["id"]) for i in items]
    names = {int(i["id"]): i.get("file_name", str(i["id"])) for i in items}
    url = [Param("slots_pick", "image", one_of(ids), ids[0])]
    restore(url)
    if st.session_state["slots_pick"] not in ids:
        st.session_state["slots_pick"] = ids[0]
    image_id = st.selectbox(
        f"Dataset image ({total} indexed)", ids, format_func=lambda i: f"{i} · {names[i]}", key="slots_pick"
    )
    publish(url)
    strip = st.columns(8)
    start = max(0, min(ids.index(int(image_id)) - 3, len(ids) - 8))  # the strip keeps the chosen image in view
    for col, i in zip(strip, ids[start : start + 8], strict=False):
        col.image(fetch_image(api_url(), i, 96), width="stretch")
        col.button(
            f"{i}" if i != image_id else f"{i} ✓",
            key=f"slots_thumb_{i}",
            on_click=_pick,
            args=(i,),
            width="stretch",
            type="primary" if i == image_id else "secondary",
            help=f"open image {i} · {names[i]}",
        )
    data = fetch_image(api_url(), int(image_id))
    return names[int(image_id)], data, "image/jpeg", int(image_id)


def render() -> None:
    """The page body."""
    url = [
        Param("slots_source", "source", one_of(SOURCES), SOURCES[0]),
        Param("slots_crop", "crop", flag, False),
        Param("neighbour_space", "space", one_of(list(SPACE_LABELS)), DEFAULT_SPACE),
    ]
    restore(url)
    source = st.segmented_control("Image source", SOURCES, key="slots_source", required=True)
    publish(url[:1])
    chosen: tuple[str, bytes, str] | None = None
    image_id: int | None = None  # a dataset image: its own segments are left out of its neighbours
    if source == "Upload":
        upload = st.file_uploader("Upload an image", type=ACCEPTED, key="slots_upload")
        if upload is not None:
            chosen = (upload.name, upload.getvalue(), upload.type or "application/octet-stream")
        else:
            st.caption("JPEG, PNG, WebP or BMP. The model assigns every pixel to its best prototype.")
    else:
        picked = pick_from_dataset()
        if picked is not None:
            name, data, content_type, image_id = picked
            chosen = (name, data, content_type)
    if chosen is None:
        return
    crop = st.toggle(
        "Centre crop only (the release's protocol, as the index)",
        key="slots_crop",
        help="off: the whole image is segmented, every pixel assigned; on: the model sees the "
        "index's centre crop (outlined), and a dataset image gets exactly its indexed slots",
    )
    space = neighbour_space()
    publish(url[1:])
    answer = analyze(*chosen, crop=crop, space=space)
    if answer is not None:
        show_slots(answer, chosen[1], image_id=image_id, on_image=_pick)


run_page("Image slots", render)
