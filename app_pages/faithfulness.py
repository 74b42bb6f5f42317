"""Logit difference and faithfulness across epochs, one panel per lineage (a toxic run and its
reversal share one), with the paper's GPT-2 numbers as reference points."""

import streamlit as st

from app_pages._store import experiments
from app_pages._ui import choice, empty_state, set_url, show_chart, show_user_errors
from app_pages._views import METRICS, curves_view

st.title("Faithfulness")
st.write(
    "The logit difference F(M) = logit(IO) − logit(S) of the whole model, and faithfulness "
    "F(C)/F(M): the logit difference of the circuit alone (every other head mean-ablated) over the "
    "whole model's. Rising under clean fine-tuning is circuit amplification; falling under a toxic "
    "dataset and recovering under reversal is neuroplasticity."
)


def body() -> None:
    found = [e for e in experiments() if e.epochs]
    if not found:
        empty_state(
            "experiments", "Run `python -m ioi precompute`, or launch experiments on the Experiments page."
        )
        return
    model = choice("Model", sorted({e.model for e in found}), "faith_model", param="model")
    found = [e for e in found if e.model == model]
    ids = [e.id for e in found]
    wanted = [i for i in (st.query_params.get("exps") or "").split(",") if i in ids] or ids
    labels = {e.id: e.label for e in found}
    chosen = st.sidebar.multiselect(
        "Experiments", ids, default=wanted, key="faith_exps", format_func=labels.get
    )
    set_url(exps=",".join(chosen) if set(chosen) != set(ids) else None)
    metric = choice("Metric", list(METRICS), "faith_metric", param="metric", radio=True,
                    format_func=lambda m: METRICS[m][2])  # fmt: skip
    overlay = st.sidebar.checkbox("Show the paper's GPT-2 reference points", value=True, key="faith_ref")
    follow = st.sidebar.checkbox("Draw each reversal after its toxic run", value=True, key="faith_follow")
    chart, data, caption = curves_view(
        [e for e in found if e.id in chosen], metric, follow=follow, overlay=overlay
    )
    if chart is None:
        empty_state(f"{METRICS[metric][2]} series", "The chosen experiments have no such values cached; "
                    "include the 'faithfulness' analysis when launching an experiment.")  # fmt: skip
        return
    show_chart(chart, data, caption, f"{metric}-curves")


show_user_errors(body)
