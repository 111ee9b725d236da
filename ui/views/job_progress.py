"""A job's progress, refreshed in place by ``st.fragment(run_every=…)`` until the job ends."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from ui.client import ApiError, get_client
from ui.components import fmt_duration, show_api_error

ACTIVE = {"queued", "pending", "starting", "running", "stopping"}


def progress_of(job: dict) -> tuple[float | None, str]:
    """``(fraction done or None, text)`` from a job's ``progress`` (indexer/eval progress file, or the
    trainer's last metrics record)."""
    p = job.get("progress") or {}
    done = p.get("done", p.get("step"))
    total = p.get("total", p.get("total_steps"))
    if done is None or not total:
        return None, str(p.get("stage") or job.get("status", ""))
    frac = min(1.0, float(done) / float(total))
    parts = [f"{p.get('stage') or job.get('kind', 'job')}: {int(done)}/{int(total)}"]
    if p.get("eta_s") is not None:
        parts.append(f"ETA {fmt_duration(p.get('eta_s'))}")
    if p.get("rate"):
        parts.append(f"{float(p['rate']):.1f}/s")
    return frac, " · ".join(parts)


def job_status_line(job: dict) -> str:
    """``"index job 4 · running"`` (+ the message of a failed job)."""
    line = f"{job.get('kind', 'job')} job {job.get('id')} · **{job.get('status', '?')}**"
    if job.get("message"):
        line += f" · {job['message']}"
    return line


def job_progress(job_id: int, *, on_done: Callable[[], None] | None = None, every: float = 1.5) -> None:
    """Shows job ``job_id``'s status and progress bar, live while it runs; calls ``on_done`` once
    when it has ended."""

    @st.fragment(run_every=every)
    def _live() -> None:
        try:
            job = get_client().job(job_id)
        except ApiError as exc:
            show_api_error(exc, f"Reading job {job_id}")
            return
        st.markdown(job_status_line(job))
        frac, text = progress_of(job)
        status = job.get("status", "")
        if status in ACTIVE:
            st.progress(frac or 0.0, text=text or "starting…")
        elif status in ("finished", "succeeded", "done", "completed"):
            st.progress(1.0, text="done")
            flag = f"job_done_{job_id}"
            if on_done is not None and not st.session_state.get(flag):
                st.session_state[flag] = True
                on_done()
        elif status == "failed":
            st.error(f"Job {job_id} failed: {job.get('message') or 'see its log'}")

    _live()
