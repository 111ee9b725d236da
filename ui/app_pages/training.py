"""Training: choose a preset, edit its main options and start a run; watch it live; stop it; list
runs and checkpoints and index one to make it the explored model."""

from __future__ import annotations

import streamlit as st

from ui.client import ApiRequestError, api_url, fetch_checkpoints, fetch_options, get_client
from ui.components import call, run_page, show_api_error
from ui.views.job_progress import ACTIVE
from ui.views.runs import checkpoints_panel, jobs_frame
from ui.views.training_live import training_live_body


def form_bounds(ranges: dict, name: str, kind: type, step: float) -> tuple[float, float]:
    """The smallest and largest value the form offers for ``name``: the API's range (``GET /api/options``'s
    ``train_ranges``), an excluded bound moved in by one ``step`` of the field's input."""
    r = ranges[name]
    lo = r["minimum"] + (step if r["exclusive_minimum"] else 0)
    hi = r["maximum"] - (step if r["exclusive_maximum"] else 0)
    return kind(lo), kind(hi)


def start_form() -> None:
    """The form that starts a training job (preset + main options, as ``GET /api/options`` gives them)."""
    options = fetch_options(api_url())
    presets = {p["name"]: p for p in options["presets"]}
    precisions = options["precisions"]
    ranges = options["train_ranges"]
    with st.form("train_form"):
        c1, c2 = st.columns(2)
        names = list(presets)
        preset = c1.selectbox("Preset", names, index=names.index(options["default_preset"]), key="train_preset")
        name = c2.text_input("Run name", placeholder="defaults to the preset and a timestamp")
        d = presets[preset]
        c = st.columns(4)
        epochs = c[0].number_input("Epochs", *form_bounds(ranges, "epochs", int, 1), d["epochs"])
        batch = c[1].number_input("Batch size", *form_bounds(ranges, "batch_size", int, 1), d["batch_size"])
        lr = c[2].number_input(
            "Base LR", *form_bounds(ranges, "lr", float, 1e-4), float(d["lr"]), step=1e-4, format="%.4f"
        )
        k = c[3].number_input("Prototypes (K)", *form_bounds(ranges, "num_prototypes", int, 1), d["num_prototypes"])
        c = st.columns(3)
        precision = c[0].selectbox(
            "Precision",
            precisions,
            index=precisions.index(d["precision"]),
            help="auto: fp16 with the grad scaler on GPUs (as the release trains), bf16 on CPUs that compute "
            "it natively (AVX-512 BF16, AMX), fp32 on other CPUs",
        )
        budget = c[1].number_input(
            "Time budget, minutes (0 = none)",
            *form_bounds(ranges, "budget_minutes", float, 0.1),
            float(d["budget_minutes"]),
            help="the trainer times its first steps and fits the whole schedule (warm-up, "
            "cosine lr, teacher momentum) into this many minutes, at most the epochs",
        )
        minutes = c[2].number_input(
            "Stop after minutes (0 = never)",
            *form_bounds(ranges, "max_minutes", int, 1),
            0,
            help="a hard stop that saves current.pth, mid-schedule",
        )
        warmup = d.get("warmup_epochs")
        if warmup:
            st.caption(
                f"{preset} warms the learning rate up over its first {warmup:g} epoch(s), then decays it: give it "
                "more epochs than that, or the run ends at its peak learning rate."
            )
        if st.form_submit_button("Start training", type="primary"):
            if warmup and int(epochs) <= warmup:
                st.warning(
                    f"{int(epochs)} epoch(s) end inside the warm-up ({warmup:g} epochs): the learning rate is still "
                    f"rising at the last step and the run ends at its peak ({float(lr):g}). Choose more than "
                    f"{warmup:g} epochs for a run whose learning rate decays."
                )
            overrides = {
                "epochs": int(epochs),
                "batch_size": int(batch),
                "lr": float(lr),
                "num_prototypes": int(k),
                "precision": precision,
                "budget_minutes": float(budget),
            }
            if minutes:
                overrides["max_minutes"] = int(minutes)
            body = {"preset": preset, "overrides": overrides}
            if name.strip():
                body["name"] = name.strip()
            job = call("Starting training", get_client().start_training, body)
            if job is not None:
                st.session_state["train_job"] = int(job["id"])
                st.toast(f"Training job {job['id']} started")


#: Seconds between refreshes of the jobs, runs and checkpoints while the page is open.
REFRESH_S = 2.0


def render() -> None:
    """The page body: the form, then the jobs, runs and checkpoints (refreshed in place)."""
    start_form()
    st.fragment(run_every=REFRESH_S)(_jobs_section_guarded)()


def _jobs_section_guarded() -> None:
    """:func:`jobs_section`, an API failure shown as a message (a fragment's re-run is outside run_page)."""
    try:
        jobs_section()
    except ApiRequestError as exc:
        show_api_error(exc, "Reading the jobs")


def jobs_section() -> None:
    """The watched run live, the runs table and the checkpoints; re-run every :data:`REFRESH_S` seconds, so
    a run's status, a new checkpoint or a finished index show without a reload."""
    jobs = [j for j in get_client().jobs() if j.get("kind") == "train"]
    seen = tuple((j["id"], j.get("status")) for j in get_client().jobs())
    if st.session_state.get("_jobs_seen") != seen:  # a job started or ended: checkpoints may have changed
        st.session_state["_jobs_seen"] = seen
        fetch_checkpoints.clear()
    running = [j for j in jobs if j.get("status") in ACTIVE]
    if "train_job" not in st.session_state and running:
        st.session_state["train_job"] = int(running[0]["id"])
    if jobs:
        by_id = {int(j["id"]): j for j in jobs}
        if st.session_state.get("train_job") not in by_id:
            st.session_state["train_job"] = next(iter(by_id))
        st.selectbox(
            "Watch run",
            list(by_id),
            key="train_job",
            format_func=lambda i: f"job {i} · {by_id[i].get('name', '')} · {by_id[i].get('status')}",
        )
    job_id = st.session_state.get("train_job")
    if job_id is not None:
        st.subheader("Live")
        training_live_body(int(job_id))

    st.subheader("Training jobs")
    if jobs:
        st.dataframe(jobs_frame(jobs), hide_index=True)
    else:
        st.caption(
            "No training job started from this page yet. Runs trained elsewhere (the demo, the command line) "
            "show below with their checkpoints."
        )
    st.subheader("Checkpoints")
    checkpoints_panel(live=False)


run_page("Training", render)
