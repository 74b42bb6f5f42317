"""Logit difference and faithfulness across epochs, one panel per lineage (a toxic run and its
reversal share one), with the paper's GPT-2 numbers as reference points."""

import streamlit as st

from app_pages._store import by_id, experiments
from app_pages._ui import choice, empty_state, set_url, show_chart, show_user_errors
from app_pages._views import METRICS, curves_view

st.title("Faithfulness")
st.write(
    "The logit difference F(M) = logit(IO) − logit(S) of the whole model, and faithfulness "
    "F(C)/F(M): the logit difference of the circuit alone (every other head mean-ablated) over the "
    "whole model's. The paper reads faithfulness rising under clean fine-tuning as circuit "
    "amplification, and falling under a toxic dataset then recovering under reversal as "
    "neuroplasticity. These charts show the values; whether this project's runs bear the findings "
    "out is judged, with intervals, on the Findings page."
)
st.page_link(
    "app_pages/findings.py", label="The verdicts on the three findings", icon=":material/fact_check:"
)


def body() -> None:
    found = [e for e in experiments() if e.epochs]
    if not found:
        empty_state(
            "experiments", "Run `python -m ioi precompute`, or launch experiments on the Experiments page."
        )
        return
    models = sorted({e.model for e in found})
    model = choice("Model", models, "faith_model", param="model", where=st) if len(models) > 1 else models[0]
    found = [e for e in found if e.model == model]
    ids = [e.id for e in found]
    wanted = [i for i in (st.query_params.get("exps") or "").split(",") if i in ids]
    one = by_id(st.query_params.get("exp"))  # a link to one run (e.g. from Findings) shows its lineage
    if not wanted and one is not None and one.id in ids:
        wanted = [e.id for e in found if e.id == one.id or e.id == one.parent or e.parent == one.id]
    wanted = [e for e in found if e.id in (wanted or ids)]
    # runs picked by lineage and seed: 21 runs as chips would fill the page (and be cut off)
    lineages, seeds = list(dict.fromkeys(e.lineage for e in found)), sorted({e.seed for e in found})
    lines = st.multiselect("Lineages", lineages, default=list(dict.fromkeys(e.lineage for e in wanted)),
                           key="faith_lineages")  # fmt: skip
    c = st.columns([3, 2, 2], vertical_alignment="bottom")
    picked = c[0].pills("Seeds", seeds, selection_mode="multi", default=sorted({e.seed for e in wanted}),
                        key="faith_seeds")  # fmt: skip
    chosen = [e.id for e in found if e.lineage in lines and e.seed in picked]
    set_url(exps=",".join(chosen) if set(chosen) != set(ids) else None)
    metric = choice("Metric", list(METRICS), "faith_metric", param="metric", radio=True, where=st,
                    horizontal=True, format_func=lambda m: METRICS[m][2])  # fmt: skip
    overlay = c[1].checkbox("Paper's GPT-2 numbers", value=True, key="faith_ref",
                            help="the paper's GPT-2 small results, black diamonds")  # fmt: skip
    follow = c[2].checkbox("Reversal after its toxic run", value=True, key="faith_follow",
                           help="a reversal's epochs continue where its toxic run ended")  # fmt: skip
    chart, data, caption = curves_view(
        [e for e in found if e.id in chosen], metric, follow=follow, overlay=overlay
    )
    if chart is None:
        empty_state(f"{METRICS[metric][2]} series", "The chosen experiments have no such values cached; "
                    "include the 'faithfulness' analysis when launching an experiment.")  # fmt: skip
        return
    show_chart(chart, data, caption, f"{metric}-curves")


show_user_errors(body)
