"""Runs and checkpoints: the training jobs, their checkpoints, and "index this checkpoint" to make
it the explored model."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui.client import api_url, clear_index_caches, fetch_checkpoints, get_client
from ui.components import call
from ui.views.job_progress import job_progress


def jobs_frame(jobs: list[dict]) -> pd.DataFrame:
    """A table of jobs: id, kind, name, status, started, finished."""
    return pd.DataFrame(
        [{k: j.get(k) for k in ("id", "kind", "name", "status", "started_at", "finished_at", "message")} for j in jobs]
    )


def _activated(job_id: int) -> None:
    """The index job asked the server to switch to its index on success: forget the old answers."""
    clear_index_caches()
    fetch_checkpoints.clear()
    st.session_state["activated_job"] = job_id


def checkpoints_panel() -> None:
    """The checkpoint list with an "Index this checkpoint" button per checkpoint."""
    checkpoints = fetch_checkpoints(api_url())
    if not checkpoints:
        st.info("No checkpoint yet: start a training run above.")
        return
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
            body = {"checkpoint": ck.get("id") or ck.get("name"), "activate": True}
            job = call("Starting the indexing job", get_client().start_indexing, body)
            if job is not None:
                st.session_state["index_job"] = job.get("id")
    job_id = st.session_state.get("index_job")
    if job_id is not None:
        st.markdown("**Indexing**")
        job_progress(int(job_id), on_done=lambda: _activated(int(job_id)))
        if st.session_state.get("activated_job") == job_id:
            st.success("The new index is now the explored model: the other pages show it.")
