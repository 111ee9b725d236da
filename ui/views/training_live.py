"""The live view of a training job: progress with ETA, loss curves (total, group, slot), lr and
momentum, images/s, active slots and positive pairs per image (the paper's two training statistics, both
counted on training crops), fp16 steps skipped; refreshed without a page reload."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui.client import ApiRequestError, get_client
from ui.components import call, fmt_duration, show_api_error
from ui.views.job_progress import ACTIVE, job_status_line

REFRESH_S = 2.0
#: What the two per-image statistics are, and the paper's values for them (both measured on training crops).
STATS_CAPTION = (
    "Per training crop: *active slots* are the prototypes that win at least one pixel of a teacher "
    "view; *positive pairs* (Eq. 6) are the slots present in a student view and in the teacher's "
    "other view. The paper, on COCO: about 7 active slots per image (Fig. 4, during pretraining) and "
    "about 3.6 positive pairs per image (App. D, a converged model)."
)


def _num(value: object, spec: str) -> str:
    """``value`` formatted, or "–" when it is missing or was not finite (logged as null)."""
    return format(value, spec) if isinstance(value, (int, float)) else "–"


def _metrics_key(job_id: int) -> str:
    return f"metrics_{job_id}"


def pull_metrics(job_id: int) -> list[dict]:
    """Fetches the records logged since the last call and returns all of them (kept in the session)."""
    records: list[dict] = st.session_state.setdefault(_metrics_key(job_id), [])
    steps = [r["step"] for r in records if "step" in r]
    since = max(steps) if steps else -1
    page = get_client().job_metrics(job_id, since=since)
    new = page.get("items", [])
    records.extend(r for r in new if "event" not in r and r.get("step", since) > since)
    if page.get("event"):  # the run's last line: "finished", "stopped" or "failed"
        st.session_state[f"event_{job_id}"] = page["event"]
    return records


#: Logged steps an ETA waits for: the first steps' times include start-up (data workers, allocation, the
#: budget's timing probe), so an ETA from them alone is far off.
ETA_AFTER_STEPS = 3


def eta_text(steps: list[dict], status: str) -> str:
    """The ETA of a running job's last record, "measuring…" until :data:`ETA_AFTER_STEPS` records are
    logged, "–" once the job has ended."""
    if status not in ACTIVE:
        return "–"
    if len(steps) < ETA_AFTER_STEPS or steps[-1].get("eta_s") is None:
        return "measuring…"
    return fmt_duration(steps[-1]["eta_s"])


def metrics_frame(records: list[dict]) -> pd.DataFrame:
    """The step records as a frame indexed by step (event lines dropped)."""
    rows = [r for r in records if "step" in r and "event" not in r]
    return pd.DataFrame(rows).set_index("step") if rows else pd.DataFrame()


def _charts(frame: pd.DataFrame) -> None:
    def cols(*names: str) -> list[str]:
        return [c for c in names if c in frame.columns]

    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**Loss**")
        if cols("loss", "loss_group", "loss_slot"):
            st.line_chart(frame[cols("loss", "loss_group", "loss_slot")], height=220)
        st.markdown("**Images / s**")
        if cols("images_per_sec"):
            st.line_chart(frame[cols("images_per_sec")], height=180)
    with c2:
        st.markdown("**Learning rate and teacher momentum**")
        if cols("lr", "momentum"):
            st.line_chart(frame[cols("lr", "momentum")], height=220)
        st.markdown("**Active slots and positive pairs per image**")
        if cols("active_slots", "positive_pairs"):
            st.line_chart(frame[cols("active_slots", "positive_pairs")], height=180)
        st.caption(STATS_CAPTION)


def training_live(job_id: int) -> None:
    """Renders the live panel of training job ``job_id`` (a fragment re-run every few seconds)."""
    st.fragment(run_every=REFRESH_S)(training_live_body)(job_id)


def training_live_body(job_id: int) -> None:
    """The live panel of training job ``job_id`` once (the caller refreshes it): status, progress, the
    latest numbers and curves; a finished run's result and next step."""
    try:
        job = get_client().job(job_id)
        records = pull_metrics(job_id)
    except ApiRequestError as exc:
        show_api_error(exc, f"Reading training job {job_id}")
        return
    status = job.get("status", "")
    head, stop = st.columns([5, 1], vertical_alignment="center")
    head.markdown(job_status_line(job))
    if (
        status in ACTIVE
        and stop.button("Stop", key=f"stop_{job_id}", type="primary")
        and call("Stopping the job", get_client().stop_job, job_id) is not None
    ):
        st.toast(f"Stopping job {job_id}: the trainer saves a checkpoint and exits.")
    frame = metrics_frame(records)
    last = st.session_state.get(f"event_{job_id}", {})
    steps = [r for r in records if "step" in r and "event" not in r]
    if steps:
        cur = steps[-1]
        total = cur.get("total_steps") or 0
        frac = min(1.0, cur["step"] / total) if total else 0.0
        text = (
            f"step {cur['step']}/{total} · epoch {cur.get('epoch', '?')}/{cur.get('epochs', '?')} · "
            f"ETA {eta_text(steps, status)} · elapsed {fmt_duration(cur.get('elapsed_s'))}"
        )
        st.progress(1.0 if status == "succeeded" else frac, text=text)
        m = st.columns(5)
        m[0].metric("Loss", _num(cur.get("loss"), ".4f"))
        m[1].metric("Images / s", _num(cur.get("images_per_sec"), ".1f"))
        m[2].metric("Active slots / image", _num(cur.get("active_slots"), ".2f"))
        m[3].metric("Positive pairs / image", _num(cur.get("positive_pairs"), ".2f"))
        m[4].metric("LR", _num(cur.get("lr"), ".2e"))
        if cur.get("skipped_steps"):
            st.caption(
                f"fp16: {cur['skipped_steps']} steps skipped so far (non-finite loss or gradients; the "
                "grad scaler lowered its scale)"
            )
        _charts(frame)
    elif status in ACTIVE:
        st.progress(0.0, text="starting… (the first metrics appear after the first logged step)")
    if last.get("event") in ("stopped", "failed") or status == "failed":
        msg = last.get("message") or job.get("message") or ""
        (st.error if status == "failed" else st.warning)(f"Run {status}: {msg}".strip(": "))
    elif status == "succeeded":
        took = fmt_duration((job.get("finished_at") or 0) - (job.get("started_at") or 0))
        st.success(
            f"Run finished: {steps[-1]['step'] if steps else '?'} step(s) in {took}. Next: index its last "
            "checkpoint (Checkpoints, below) to explore its concepts."
        )
