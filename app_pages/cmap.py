"""Cross-model activation patching: which heads carry the difference between two checkpoints."""

import streamlit as st

from app_pages._common import (
    empty_state,
    heads_with_labels,
    live_analysis,
    live_available,
    model_or_message,
    no_cache_layer,
    options_json,
    pick_epoch,
    pick_experiment,
    pick_model,
    result_or_offer,
    run_button,
    show_chart,
    show_user_errors,
)
from ioi.present import charts

st.title("Cross-model patching")
st.write(
    "CMAP runs model A with one head at a time taken from model B (its output at END, or its attention "
    "pattern) and measures the change in logit difference, also as a share of the gap F(B) − F(A)."
)


def show_result(found, title: str, key: str) -> None:
    s = found.summary
    c = st.columns(3)
    c[0].metric("F(A)", f"{s.get('f_a', float('nan')):.3f}")
    c[1].metric("F(B)", f"{s.get('f_b', float('nan')):.3f}")
    c[2].metric("mode", f"{s.get('mode', 'output')} · {s.get('positions', 'end')}")
    names = {"value": "change in F", "share_of_gap": "share of the gap"}
    field = st.radio("Value", list(names), horizontal=True, key=f"{key}-field", format_func=names.get)
    chart = charts.head_heatmap(found.heads, field=field, title=title, value_title=field)
    show_chart(
        chart, heads_with_labels(found.heads),
        f"{s.get('mode', 'output')} patching, direction {s.get('direction', 'a<-b')} (A receives B's head), "
        f"positions {s.get('positions', 'end')}: per-head {field.replace('_', ' ')} of logit(IO) − logit(S); "
        "no ablation. CSV includes bootstrap 95% CIs over prompts.",
        f"{key}-heads",
    )  # fmt: skip
    classes = found.tables.get("classes")
    if classes is not None and not classes.empty:
        show_chart(
            charts.class_bars(classes, value_title="change in F", title="Sum per circuit class"), classes,
            "Summed CMAP effect of each circuit class's heads, with bootstrap 95% confidence intervals "
            "over prompts.",
            f"{key}-classes",
        )  # fmt: skip


def cached_section() -> None:
    exp = pick_experiment("Experiment", "cmap_exp", analysis="cmap")
    if exp is None:
        empty_state("CMAP results", "Run `python -m ioi precompute`, or launch an experiment with 'cmap'.")
        return
    epoch = pick_epoch(exp, "cmap", "Epoch (A = this checkpoint, B = the starting model)", "cmap_epoch")
    found = result_or_offer(exp, epoch, "cmap")
    if found is None:
        return
    show_result(
        found, f"CMAP: {exp.scenario} epoch {epoch} (A) ← starting model (B)", f"cmap-{exp.id[:8]}-e{epoch}"
    )


def live_section() -> None:
    st.subheader("Any two checkpoints")
    if not live_available("cmap"):
        st.info("The CMAP analysis is not in this build yet (ioi/cmap.py).", icon="ℹ️")
        return
    c = st.columns(3)
    a = pick_model("Model A (receives)", "cmap_a", where=c[0])
    b = pick_model("Model B (gives)", "cmap_b", where=c[1])
    mode = c[2].selectbox("Patch", ["output", "pattern"], key="cmap_mode")
    if not run_button("Run CMAP", "cmap_run", (a, b, mode)):
        return
    if a == b:
        st.error("Pick two different models: patching a model with itself changes nothing.", icon="⚠️")
        return
    if model_or_message(a) is None or model_or_message(b) is None:
        return
    found = live_analysis(a, "cmap", options_json(mode=mode, n_boot=200), other_name=b)
    show_result(found, f"CMAP {mode}: A ← B", "cmap-live")


def body() -> None:
    if no_cache_layer():
        return
    cached_section()
    live_section()


show_user_errors(body)
