"""A job's progress, refreshed in place by ``st.fragment(run_every=…)`` until the job ends."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from ui.client import ApiRequestError, get_client
from ui.components import fmt_duration, show_api_error

ACTIVE = {"running", "stopping"}
DONE = {"succeeded"}


def progress_of(job: dict) -> tuple[float | None, str]:
    """``(fraction done or None, text)`` from a job's ``progress``, ``stage``, steps and ETA."""
    frac = job.get("progress")
    parts = [str(job.get("stage") or job.get("kind") or "job")]
    if job.get("step") is not None and job.get("total_steps"):
        parts.append(f"{job['step']}/{job['total_steps']}")
        if frac is None:
            frac = job["step"] / job["total_steps"]
    if frac is not None:
        parts.append(f"{100 * float(frac):.0f} %")
    if job.get("eta_s") is not None and job.get("status") in ACTIVE:
        parts.append(f"ETA {fmt_duration(job['eta_s'])}")
    return (None if frac is None else min(1.0, max(0.0, float(frac)))), " · ".join(parts)


def job_status_line(job: dict) -> str:
    """``"index job 4 · running"`` (+ the message of a failed job)."""
    line = f"{job.get('kind', 'job')} job {job.get('id')} · **{job.get('status', '?')}**"
    if job.get("message"):
        line += f" · {job['message']}"
    return line


def job_progress(
    job_id: int, *, on_done: Callable[[], None] | None = None, every: float = 1.5, live: bool = True
) -> None:
    """Shows job ``job_id``'s status and progress bar, refreshed every ``every`` seconds (``live=False``:
    drawn once, inside a fragment that refreshes itself); calls ``on_done`` once when it has succeeded."""

    def _live() -> None:
        try:
            job = get_client().job(job_id)
        except ApiRequestError as exc:
            show_api_error(exc, f"Reading job {job_id}")
            return
        st.markdown(job_status_line(job))
        frac, text = progress_of(job)
        status = job.get("status", "")
        if status in ACTIVE:
            st.progress(frac or 0.0, text=text or "starting…")
        elif status in DONE:
            st.progress(1.0, text="done")
            flag = f"job_done_{job_id}"
            if on_done is not None and not st.session_state.get(flag):
                st.session_state[flag] = True
                on_done()
        elif status == "failed":
            st.error(f"Job {job_id} failed: {job.get('message') or 'see its log'}")

    st.fragment(run_every=every)(_live)() if live else _live()
