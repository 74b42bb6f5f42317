"""Experiments: launch fine-tuning runs as background jobs, follow them live, open their results."""

import time

import pandas as pd
import streamlit as st

from app_pages._forms import experiment_config, form_defaults, resume_problem, submit
from app_pages._live import MODELS
from app_pages._store import by_id, experiments, roots
from app_pages._ui import show_user_errors
from ioi.present.charts import lineage
from ioi.runs.cache import cache_root
from ioi.task.corruptions import CORRUPTIONS
from ioi.task.defaults import default_lr, lr_help, lr_text

st.title("Experiments")
st.write(
    "An experiment fine-tunes a model in one scenario and analyses every checkpoint (epoch 0 is the "
    "starting model). Results are cached by content: asking for the same experiment twice opens the "
    "cached one at once. Jobs run in the background and survive a restart of the dashboard."
)


def open_results(exp_id: str) -> None:
    """The run's attribution at its last checkpoint (epoch 0 is where it started: for a reversal,
    the toxic model)."""
    st.session_state["opened_experiment"] = exp_id
    exp = by_id(exp_id)
    last = exp.epochs_with("dla")[-1:] if exp is not None else []
    params = {"exp": exp_id} | ({"epoch": str(last[0])} if last else {})
    st.switch_page("app_pages/attribution.py", query_params=params)


def open_from_fragment(exp_id: str) -> None:
    # st.switch_page inside a fragment leaves a blank page (Streamlit 1.67, seen in the browser
    # test): ask for a full rerun, whose page script then switches.
    st.session_state["open_requested"] = exp_id
    st.rerun()


def launch_form() -> None:
    from ioi.methods.analyses import ANALYSES
    from ioi.runs.experiment import registered_analyses

    registered_analyses()
    available = sorted(ANALYSES)
    defaults = form_defaults()
    toxic = [e for e in experiments() if e.scenario in CORRUPTIONS]
    st.subheader("Launch an experiment")
    c = st.columns(3)
    model = c[0].selectbox("Model", [*MODELS, "a local directory…"], key="form_model")
    path_err = c[0].empty()
    if model == "a local directory…":
        model = c[0].text_input("Model directory", key="form_model_dir")
    scenario = c[1].selectbox(
        "Scenario",
        ["clean", *CORRUPTIONS, "reversal"],
        key="form_scenario",
        format_func=lambda s: {"reversal": "reversal (clean data from a toxic run)"}.get(s, lineage(s)),
    )
    parent = None
    parent_err = c[1].empty()
    if scenario == "reversal":
        ids = [e.id for e in toxic]
        parent_id = c[1].selectbox(
            "Toxic run to reverse",
            ids,
            index=None,
            key="form_parent",
            format_func=lambda i: toxic[ids.index(i)].label,
            placeholder="pick a toxic experiment",
        )
        parent = toxic[ids.index(parent_id)] if parent_id else None
        if parent is not None and parent.model != model:  # a reversal fine-tunes its parent's model
            model = parent.model
            c[0].caption(f"A reversal continues its toxic run's model: {model}.")
    seed = c[2].number_input(
        "Seed", min_value=0, max_value=2**31 - 1, value=defaults["seed"], key="form_seed"
    )
    c = st.columns(3)
    epochs = c[0].number_input("Epochs", min_value=1, max_value=100, value=3, key="form_epochs")
    epochs_err = c[0].empty()
    checkpoints = c[1].text_input(
        "Checkpoint epochs",
        "1, 2",
        key="form_checkpoints",
        help="comma-separated; the last epoch is always kept",
    )
    checkpoints_err = c[1].empty()
    lr = c[2].text_input(
        "Learning rate", lr_text(default_lr(model)), key=f"form_lr-{model}", help=lr_help("model")
    )
    lr_err = c[2].empty()
    with st.expander("Sizes and analyses"):
        c = st.columns(4)
        batch_size = c[0].number_input("Batch size", 1, 512, defaults["batch_size"], key="form_batch")
        train_size = c[1].number_input(
            "Training prompts", 16, 20000, defaults["train_size"], key="form_train"
        )
        eval_size = c[2].number_input("Evaluation prompts", 8, 5000, defaults["eval_size"], key="form_eval")
        analysis_size = c[3].number_input(
            "Analysis prompts", 4, 1000, defaults["analysis_size"], key="form_analysis"
        )
        default = [a for a in defaults["analyses"] if a in available]
        analyses = st.multiselect(
            "Analyses at every checkpoint", available, default=default, key="form_analyses"
        )
        analyses_err = st.empty()
    form_err = st.empty()
    if not st.button("Launch", type="primary", key="form_launch"):
        return
    cfg, errors = experiment_config(
        dict(
            model=model,
            scenario=scenario,
            parent=parent.id if parent else None,
            seed=int(seed),
            epochs=int(epochs),
            checkpoints=checkpoints,
            lr=lr,
            batch_size=int(batch_size),
            train_size=int(train_size),
            eval_size=int(eval_size),
            analysis_size=int(analysis_size),
            analyses=tuple(analyses),
        )
    )
    slots = {"model": path_err, "parent": parent_err, "epochs": epochs_err, "checkpoints": checkpoints_err,
             "lr": lr_err, "analyses": analyses_err, "form": form_err}  # fmt: skip
    for field, message in errors.items():
        slots[field].error(message, icon="⚠️")
    if cfg is None:
        return
    job = submit(cfg, str(cache_root()))  # a child of a demo run too: the demo cache is read-only
    st.session_state["last_job"] = job
    st.success(f"Job {job} submitted; it appears in the list below.")


STATUS_ICONS = {
    "done": ":material/check_circle:",
    "failed": ":material/error:",
    "cancelled": ":material/cancel:",
    "interrupted": ":material/pause_circle:",
    "running": ":material/play_circle:",
}


def job_row(job, root: str) -> None:
    from ioi.runs.jobs import cancel, resume

    cfg = job.config
    status = job.status
    icon = STATUS_ICONS.get(status, ":material/schedule:")
    with st.container(border=True):
        top = st.columns([4, 1, 1, 1])
        top[0].markdown(
            f"{icon} **{lineage(cfg['scenario'])}** · {cfg['model']} · "
            f"{cfg['epochs']} epoch{'s' if cfg['epochs'] != 1 else ''} · seed {cfg['seed']} · "
            f"lr {cfg['lr']:g} — *{status}* "
            f"(job `{job.id}`, experiment `{job.experiment[:8]}`)"
        )
        if status in ("queued", "running") and top[1].button("Cancel", key=f"cancel-{job.id}"):
            cancel(job.id, root)
            st.rerun(scope="fragment")
        blocked = resume_problem(cfg) if status in ("failed", "cancelled", "interrupted") else None
        if (
            status in ("failed", "cancelled", "interrupted")
            and blocked is None
            and top[1].button("Resume", key=f"resume-{job.id}")
        ):
            resume(job.id, root)
            st.rerun(scope="fragment")
        if blocked:
            st.caption(f"Cannot be resumed here: {blocked}.")
        if status == "done" and top[2].button("Open results", key=f"open-{job.id}"):
            open_from_fragment(job.experiment)
        phase = job.phase or ("already cached" if job.cached else "")
        if status in ("queued", "running"):
            # Training counters only while training: once it analyses checkpoints they are stale.
            training = job.epochs and phase.startswith("training")
            text = (
                f"epoch {job.epoch}/{job.epochs}, step {job.step}/{job.steps} — {phase}"
                if training
                else phase
            )
            st.progress(min(max(job.fraction, 0.0), 1.0), text=text or "waiting for a free slot")
        elif status == "done":
            st.progress(1.0, text="done" + (" (results were already cached)" if job.cached else ""))
        if job.error and status == "cancelled":
            st.info(job.error, icon="ℹ️")
        elif job.error:
            st.error(job.error, icon="❌")
        if job.log:
            with st.expander("log"):
                st.code(job.log, language=None)


@st.fragment(run_every=2)
def job_list() -> None:
    from ioi.runs.jobs import list_jobs

    st.subheader("Jobs")
    jobs = [
        (job, str(root)) for root in roots() if (root / "index.sqlite3").exists() for job in list_jobs(root)
    ]
    if not jobs:
        st.info("No jobs yet: launch an experiment above.", icon="ℹ️")
    for job, root in sorted(jobs, key=lambda jr: -jr[0].created)[:20]:
        job_row(job, root)
    st.caption(f"Refreshes every 2 s · {time.strftime('%H:%M:%S')}")


@st.fragment(run_every=5)
def cached_table() -> None:
    st.subheader("Cached experiments")
    found = experiments()
    if not found:
        st.info(
            "Nothing cached yet: run `python -m ioi precompute` for the demo set, or launch above.", icon="ℹ️"
        )
        return
    table = pd.DataFrame(
        [
            {
                "experiment": e.label,
                "id": e.id,
                "model": e.config.get("model"),
                "epochs": e.config.get("epochs"),
                "seed": e.config.get("seed"),
                "lr": e.config.get("lr"),
                "status": e.status,
                "cached epochs": ", ".join(map(str, sorted(e.epochs))),
                "where": "demo" if e.demo else "yours",
            }
            for e in found
        ]
    )
    event = st.dataframe(table, hide_index=True, width="stretch", placeholder="—", key="cached_rows",
                         on_select="rerun", selection_mode="single-row")  # fmt: skip
    rows = event.selection.rows if event is not None else []
    if rows:  # a row clicked in the table opens as the picker below does
        picked = found[rows[0]]
        if st.button(f"Open {picked.label}", key="open_row", type="primary", icon=":material/open_in_new:"):
            open_from_fragment(picked.id)
    else:
        st.caption("Click a row (its left edge) to open that experiment's results, or pick it below.")
    ids = [e.id for e in found]
    chosen = st.selectbox(
        "Open an experiment's results",
        ids,
        index=None,
        key="open_choice",
        format_func=lambda i: found[ids.index(i)].label,
    )
    if chosen and st.button("Open", key="open_cached"):
        open_from_fragment(chosen)


def body() -> None:
    if "open_requested" in st.session_state:
        open_results(st.session_state.pop("open_requested"))
    launch_form()
    job_list()
    cached_table()


show_user_errors(body)
