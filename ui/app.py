"""The Streamlit entry file: declares the explorer's pages with ``st.navigation`` and runs the chosen one.

Run it with ``slotcon ui [--api URL] [--port P]`` (see :mod:`slotcon.ui_launcher`), or directly:
``SLOTCON_API_URL=http://127.0.0.1:8000 streamlit run ui/app.py``.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ui.client import ApiRequestError, fetch_health, server_url
from ui.views.index_picker import index_picker

# Not "pages/": Streamlit treats a pages/ directory beside the entry file as a v1 multipage app on
# the first run after start-up, which bypasses st.navigation for a deep link such as /concepts.
PAGES_DIR = Path(__file__).parent / "app_pages"

st.set_page_config(page_title="SlotCon Explorer", page_icon=":material/category:", layout="wide")

pages = [
    st.Page(PAGES_DIR / "concepts.py", title="Concepts", icon=":material/category:", default=True),
    st.Page(PAGES_DIR / "image_slots.py", title="Image slots", icon=":material/image_search:", url_path="image_slots"),
    st.Page(PAGES_DIR / "statistics.py", title="Slot statistics", icon=":material/bar_chart:", url_path="statistics"),
    st.Page(
        PAGES_DIR / "segmentation.py",
        title="Unsupervised segmentation",
        icon=":material/layers:",
        url_path="segmentation",
    ),
    st.Page(PAGES_DIR / "compare.py", title="Compare", icon=":material/compare:", url_path="compare"),
    st.Page(PAGES_DIR / "training.py", title="Training", icon=":material/model_training:", url_path="training"),
]

with st.sidebar:
    st.caption("SlotCon Explorer · Wen et al., NeurIPS 2022")
    try:
        health = fetch_health(server_url())
        default = (health.get("index") or {}).get("name")
        st.caption(f"API `{server_url()}` · default index **{default or 'none'}**")
    except ApiRequestError:
        st.caption(f"API `{server_url()}` · not reachable")
    index_picker()

st.navigation(pages).run()
