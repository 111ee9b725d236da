"""Runs and checkpoints: the training jobs, their checkpoints, and "index this checkpoint" (the new index
becomes the server's default only when "make it the default" is ticked)."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from ui.client import api_url, clear_index_caches, fetch_checkpoints, fetch_index_listing, get_client
from ui.components import call, fmt_duration, fmt_time, page_link
from ui.views.index_picker import explore
from ui.views.job_progress import job_progress


def jobs_frame(jobs: list[dict], now: float | None = None) -> pd.DataFrame:
    """A table of jobs as people read it: id, kind, name, status, started and finished (clock times),
    duration (so far, while it runs) and the message ("" when there is none)."""
    now = time.time() if now is None else now
    rows = []
    for j in jobs:
        start, end = j.get("started_at") or j.get("created_at"), j.get("finished_at")
        rows.append(
            {
                "id": j.get("id"),
                "kind": j.get("kind"),
                "name": j.get("name") or "",
                "status": j.get("status") or "",
                "started": fmt_time(start, now),
                "finished": fmt_time(end, now) if end else "",
                "duration": fmt_duration((end or now) - start) if start else "–",
                "message": j.get("message") or "",
            }
        )
    return pd.DataFrame(rows, columns=["id", "kind", "name", "status", "started", "finished", "duration", "message"])


def _activated(job_id: int) -> None:
    """An index job finished: the index list changed (and the default, when the job asked): forget the old
    answers."""
    clear_index_caches()
    fetch_checkpoints.clear()
    fetch_index_listing.clear()
    st.session_state["activated_job"] = job_id
    name = st.session_state.get("index_job_name")
    if st.session_state.get("index_job_default") and name:
        explore(name, None)  # this session follows the new default (the URL names it)


def checkpoints_panel(*, live: bool = True) -> None:
    """The checkpoint list with an "Index this checkpoint" button per checkpoint, and the indexing job's
    progress (``live=False``: drawn once, inside a refreshing fragment); a built index links to itself."""
    checkpoints = fetch_checkpoints(api_url())
    if not checkpoints:
        st.info("No checkpoint yet: start a training run above.")
        return
    make_default = st.checkbox(
        "make it the default", key="index_make_default_job", value=False,
        help="Tick to make the new index the server's default (what every page and user sees without "
        "choosing an index) once it is built; otherwise it is only added to the sidebar's index list.",
    )  # fmt: skip
    for i, ck in enumerate(checkpoints):
        c1, c2 = st.columns([5, 1.4], vertical_alignment="center")
        size = ck.get("size_bytes") or ck.get("size")
        desc = [f"**{ck.get('run', '?')}** / `{ck.get('file', ck.get('name', '?'))}`"]
        if ck.get("epoch") is not None:
            desc.append(f"epoch {ck['epoch']}")
        if size:
            desc.append(f"{int(size) / 2**20:.1f} MiB")
        if ck.get("indexed") or ck.get("active"):
            desc.append("active index" if ck.get("active") else "indexed")
        c1.markdown(" · ".join(desc))
        if c2.button("Index this checkpoint", key=f"index_ck_{i}"):
            body = {"checkpoint": ck.get("id") or ck.get("name"), "make_default": bool(make_default)}
            job = call("Starting the indexing job", get_client().start_indexing, body)
            if job is not None:
                st.session_state["index_job"] = job.get("id")
                st.session_state["index_job_default"] = bool(make_default)
                st.session_state["index_job_name"] = job.get("name")
    job_id = st.session_state.get("index_job")
    if job_id is not None:
        st.markdown("**Indexing**")
        job_progress(int(job_id), on_done=lambda: _activated(int(job_id)), live=live)
        if st.session_state.get("activated_job") == job_id:
            name = st.session_state.get("index_job_name")
            if name:
                page_link("concepts", f"Open the index {name}", {"index": name}, icon=":material/category:")
            if st.session_state.get("index_job_default"):
                st.success("The new index is now the server's default: the other pages show it.")
            else:
                st.success("The new index is built: pick it in the sidebar's index list to explore it.")
