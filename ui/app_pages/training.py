"""Training: choose a preset, edit its main options and start a run; watch it live; stop it; list
runs and checkpoints and index one to make it the explored model."""

from __future__ import annotations

import streamlit as st

from ui.client import api_url, fetch_checkpoints, fetch_options, get_client
from ui.components import call, run_page
from ui.views.job_progress import ACTIVE
from ui.views.runs import checkpoints_panel, jobs_frame
from ui.views.training_live import training_live


def start_form() -> None:
    """The form that starts a training job (preset + main options, as ``GET /api/options`` gives them)."""
    options = fetch_options(api_url())
    presets = {p["name"]: p for p in options["presets"]}
    precisions = options["precisions"]
    with st.form("train_form"):
        c1, c2 = st.columns(2)
        names = list(presets)
        preset = c1.selectbox("Preset", names, index=names.index(options["default_preset"]), key="train_preset")
        name = c2.text_input("Run name", placeholder="defaults to the preset and a timestamp")
        d = presets[preset]
        c = st.columns(4)
        epochs = c[0].number_input("Epochs", 1, 2000, d["epochs"])
        batch = c[1].number_input("Batch size", 2, 8192, d["batch_size"])
        lr = c[2].number_input("Base LR", 0.0, 100.0, float(d["lr"]), format="%.4f")
        k = c[3].number_input("Prototypes (K)", 2, 65536, d["num_prototypes"])
        c = st.columns(3)
        precision = c[0].selectbox(
            "Precision",
            precisions,
            index=precisions.index(d["precision"]),
            help="auto: bf16 where the hardware computes it natively (CUDA, AVX-512 BF16 or "
            "AMX CPUs), fp16 on older GPUs, fp32 elsewhere",
        )
        budget = c[1].number_input(
            "Time budget, minutes (0 = none)",
            0.0,
            100000.0,
            float(d["budget_minutes"]),
            help="the trainer times its first steps and fits the whole schedule (warm-up, "
            "cosine lr, teacher momentum) into this many minutes, at most the epochs",
        )
        minutes = c[2].number_input(
            "Stop after minutes (0 = never)", 0, 100000, 0, help="a hard stop that saves current.pth, mid-schedule"
        )
        if st.form_submit_button("Start training", type="primary"):
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


def render() -> None:
    """The page body."""
    start_form()
    jobs = [j for j in get_client().jobs() if j.get("kind") == "train"]
    running = [j for j in jobs if j.get("status") in ACTIVE]
    if "train_job" not in st.session_state and running:
        st.session_state["train_job"] = int(running[0]["id"])
    if jobs:
        ids = [int(j["id"]) for j in jobs]
        current = st.session_state.get("train_job")
        index = ids.index(current) if current in ids else 0
        st.session_state["train_job"] = st.selectbox(
            "Watch run",
            ids,
            index=index,
            key="train_watch",
            format_func=lambda i: next(
                f"job {i} · {j.get('name', '')} · {j.get('status')}" for j in jobs if int(j["id"]) == i
            ),
        )
    job_id = st.session_state.get("train_job")
    if job_id is not None:
        st.subheader("Live")
        training_live(int(job_id))

    st.subheader("Runs")
    if jobs:
        st.dataframe(jobs_frame(jobs), hide_index=True)
    else:
        st.caption("No training run yet.")
    st.subheader("Checkpoints")
    if st.button("Refresh checkpoints"):
        fetch_checkpoints.clear()
    checkpoints_panel()


run_page("Training", render)
