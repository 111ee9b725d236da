"""Unsupervised segmentation: stored evaluations (every score with the protocol it was measured under, beside
the baselines, and the paper's row as a comparison only beside a score measured its way; per-class IoU,
confusion matrix, examples; the slots as objects and the prototypes' dissection when measured) and a form to
run a new one as a job."""

from __future__ import annotations

import streamlit as st

from ui.client import api_url, fetch_eval_paper, fetch_eval_results, fetch_options, get_client
from ui.components import call, fmt_pct, run_page
from ui.url_state import Param, one_of, publish, restore
from ui.views.eval_view import (
    confusion_chart,
    export_frame,
    paper_reference,
    per_class_frame,
    result_name,
    scores_charts,
    scores_frame,
    show_examples,
)
from ui.views.job_progress import job_progress
from ui.views.objects_view import METRIC_NAMES, show_dissection, show_object_discovery


def run_form() -> None:
    """Starts an evaluation job on the active index's checkpoint (choices from ``GET /api/options``)."""
    options = fetch_options(api_url())
    with st.expander("Run an evaluation", expanded=False), st.form("eval_form", border=False):
        c1, c2, c3, c4 = st.columns(4)
        protocol = c1.selectbox("Protocol", options["protocols"])
        baseline = c2.selectbox("Baseline", options["baselines"])
        resolution = c3.number_input("Resolution", 64, 1024, options["eval_resolution"], step=32)
        seeds = c4.number_input("Seeds", 1, 20, 5, help="runs of the k-means baseline and the cluster probe")
        all_images = st.checkbox(
            "Every image of the split", help="COCO-Stuff-27 scores the benchmark's 2,175 curated images otherwise"
        )
        metrics = st.multiselect(
            "Measure",
            list(METRIC_NAMES),
            default=["segmentation"],
            format_func=METRIC_NAMES.get,
            help="the semantic scores are always computed; object discovery reads the instance masks of "
            "DATA/annotations/instances_SPLIT.json",
        )
        if st.form_submit_button("Start evaluation"):
            body = {"protocol": protocol, "baseline": baseline, "resolution": int(resolution), "seeds": int(seeds)}
            body["metrics"] = metrics or ["segmentation"]
            job = call("Starting the evaluation", get_client().start_eval, body | {"all_images": bool(all_images)})
            if job is not None:
                st.session_state["eval_job"] = job.get("id")
    job_id = st.session_state.get("eval_job")
    if job_id is not None:
        job_progress(int(job_id), on_done=lambda: _evaluated(int(job_id)))


def _evaluated(job_id: int) -> None:
    """The evaluation job succeeded: the whole page runs again, listing and showing its result."""
    fetch_eval_results.clear()
    st.session_state["eval_finished"] = job_id
    st.rerun(scope="app")  # the list of evaluations is outside the job's fragment


def render() -> None:
    """The page body."""
    run_form()
    results = fetch_eval_results(api_url())
    if not results:
        st.info("No evaluation is stored for this index yet: run one above, or `slotcon eval ... --index`.")
        return
    models = [r for r in results if r["baseline"] == "none"] or results
    models = sorted(models, key=lambda r: r["id"], reverse=True)
    by_id = {r["id"]: r for r in models}
    url = [Param("eval_pick", "eval", one_of(list(by_id)), next(iter(by_id)))]
    restore(url)
    if st.session_state["eval_pick"] not in by_id:  # an evaluation of another index (the index changed)
        st.session_state["eval_pick"] = next(iter(by_id))
    finished = st.session_state.pop("eval_finished", None)
    if finished is not None:  # the job just ended: its result is the newest one; show it
        st.session_state["eval_pick"] = next(iter(by_id))
        st.success(f"Evaluation job {finished} finished: its result, #{next(iter(by_id))}, is shown below.")
    chosen = by_id[
        st.selectbox("Evaluation", list(by_id), format_func=lambda i: result_name(by_id[i]), key="eval_pick")
    ]
    publish(url)
    images = chosen["image_list"]
    m = st.columns(4)
    m[0].metric("mIoU", fmt_pct(chosen["miou"], 2))
    m[1].metric("Pixel accuracy", fmt_pct(chosen["pixel_accuracy"], 2))
    m[2].metric("Images", f"{images['used']:,}/{images['listed']:,}", help=f"image list: {images['name']}")
    m[3].metric("Classes", chosen["counts"]["num_classes"])
    st.caption(f"Measured as: {chosen['tag']['label']}")
    if chosen["missing_images"]:
        st.warning(
            f"{images['missing']:,} images of {images['name']} are not in the data root, e.g. "
            + ", ".join(chosen["missing_images"][:5])
        )

    st.subheader("Scores, each with how it was measured")
    paper = fetch_eval_paper(api_url())
    frame = scores_frame(results, chosen, paper)
    st.dataframe(
        frame.dropna(axis="columns", how="all"),  # the ± columns only when a score has runs over several seeds
        hide_index=True,
        column_config={
            col: st.column_config.NumberColumn(format="percent")
            for col in ("mIoU", "± mIoU", "pixel accuracy", "± pixel accuracy")
        },
    )
    reference = paper_reference(chosen, paper)
    if reference is not None:
        st.info(reference)
    else:
        st.caption(f"The paper's row stands beside the score measured as it was: {paper['tag']['label']}.")
    for chart in scores_charts(frame, paper, reference is not None):
        st.altair_chart(chart, width="stretch")
    st.download_button(
        "Scores with their protocol (CSV)",
        export_frame(chosen, paper).to_csv(index=False),
        file_name=f"eval-{chosen['id']}-scores.csv",
        mime="text/csv",
    )

    st.subheader("Per-class IoU")
    per_class = per_class_frame(chosen)
    if not per_class.empty:
        st.bar_chart(per_class, x="class", y="IoU", color="#d62728", sort="-IoU")
    st.subheader("Confusion matrix (rows: ground truth, normalised)")
    chart = confusion_chart(chosen)
    if chart is not None:
        st.altair_chart(chart, width="stretch")
    else:
        st.caption("This evaluation stored no confusion matrix.")
    st.subheader("Examples")
    show_examples(chosen)
    show_object_discovery(chosen)
    if chosen.get("dissection"):
        st.subheader("Prototypes as concepts (dissection)")
        show_dissection(chosen["dissection"])


run_page("Unsupervised segmentation", render)
