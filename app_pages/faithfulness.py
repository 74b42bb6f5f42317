"""Faithfulness and logit difference across epochs, per scenario, with the paper's GPT-2 numbers."""

import pandas as pd
import streamlit as st

from app_pages._common import (
    SHORT,
    empty_state,
    experiments,
    no_cache_layer,
    result,
    series,
    show_chart,
    show_user_errors,
)
from ioi.present import charts
from ioi.task.reference import reference_points

st.title("Faithfulness")
st.write(
    "Faithfulness F(C)/F(M): the logit difference of the circuit alone (every other head "
    "mean-ablated) over the whole model's. Rising under clean fine-tuning is circuit amplification; "
    "falling and recovering under toxic fine-tuning then reversal is neuroplasticity."
)
METRICS = {
    "faithfulness": ("faithfulness.faithfulness", None, "faithfulness F(C)/F(M)"),
    "logit_diff": ("logit_diff", "logit_diff_se", "logit difference F(M)"),
    "accuracy": ("accuracy", None, "accuracy (logit IO > logit S)"),
}


def body() -> None:
    if no_cache_layer():
        return
    found = [e for e in experiments() if e.epochs]
    if not found:
        empty_state(
            "experiments", "Run `python -m ioi precompute`, or launch experiments on the Experiments page."
        )
        return
    models = sorted({str(e.config.get("model")) for e in found})
    model = st.sidebar.selectbox("Model", models, key="faith_model")
    found = [e for e in found if str(e.config.get("model")) == model]
    keys = [e.key for e in found]
    chosen = st.sidebar.multiselect(
        "Experiments", keys, default=keys, key="faith_exps", format_func=lambda k: found[keys.index(k)].label
    )
    metric = st.sidebar.radio(
        "Metric", list(METRICS), format_func=lambda m: METRICS[m][2], key="faith_metric"
    )
    overlay = st.sidebar.checkbox("Show the paper's GPT-2 reference points", value=True, key="faith_ref")
    follow = st.sidebar.checkbox("Draw each reversal after its toxic run", value=True, key="faith_follow")
    column, se, title = METRICS[metric]
    parents = {e.id: e for e in found}
    frames, ablations, shift = [], set(), {}
    for exp in (found[keys.index(k)] for k in chosen):
        s = series(exp)
        if column not in s:
            continue
        parent = parents.get(str(exp.config.get("parent")))
        offset = int(parent.config.get("epochs", 0)) if follow and parent is not None else 0
        shift.setdefault(exp.scenario, offset)
        label = f"{SHORT.get(exp.scenario, exp.scenario)} ({exp.id[:6]})"
        part = pd.DataFrame(
            {"epoch": s["epoch"] + offset, "value": s[column], "series": label, "scenario": exp.scenario}
        )
        if se and se in s:
            part["low"], part["high"] = s[column] - 1.96 * s[se], s[column] + 1.96 * s[se]
        frames.append(part.dropna(subset=["value"]))
        if metric == "faithfulness":
            last = max(exp.epochs_with("faithfulness"), default=None)
            entry = result(exp, last, "faithfulness") if last is not None else None
            if entry is not None:
                ablations.add(str(entry.summary.get("ablation", "mean")))
    if not frames:
        empty_state(
            f"{title} series",
            "The chosen experiments have no such values cached; include the 'faithfulness' analysis "
            "when launching an experiment.",
        )
        return
    data = pd.concat(frames, ignore_index=True)
    scenarios = sorted(data["scenario"].unique())
    ref = reference_points(metric, scenarios) if overlay else None
    if ref is not None:  # a reversal's reference epoch counts from the end of its toxic run, as its line
        ref = ref.assign(epoch=ref["epoch"] + ref["scenario"].map(shift).fillna(0))
    chart = charts.epoch_curves(data, y_title=title, reference=ref, title=f"{title} across epochs")
    band = "95% CI (±1.96 standard errors over prompts)" if se else "no band: one value per checkpoint"
    how = f"; knockout by {', '.join(sorted(ablations))} ablation of non-circuit heads" if ablations else ""
    show_chart(
        chart, data,
        f"{title} at each cached checkpoint (epoch 0: before fine-tuning), one line per experiment"
        f"{'; reversals start where their toxic run ended' if follow else ''}; "
        f"{band}{how}. Black diamonds: the paper's GPT-2 small numbers (METHODS §9) for the same "
        "scenarios — reference points for a different model, not targets.",
        f"{metric}-curves",
    )  # fmt: skip


show_user_errors(body)
