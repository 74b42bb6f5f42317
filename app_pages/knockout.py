"""Knockout: the logit difference after ablating each circuit class or chosen heads, across checkpoints."""

import pandas as pd
import streamlit as st

from app_pages._common import (
    default_model,
    empty_state,
    heads_with_labels,
    live_analysis,
    live_available,
    model_or_message,
    model_sources,
    no_cache_layer,
    options_json,
    parse_heads,
    pick_experiment,
    result_or_offer,
    run_button,
    show_chart,
    show_user_errors,
)
from ioi.present import charts

st.title("Knockout")
st.write(
    "Ablate a class of circuit heads (or heads you choose) and see how far the logit difference "
    "falls. Which ablation is used matters for the numbers (Miller et al. 2024), so every chart says."
)


def cached_section() -> None:
    exp = pick_experiment("Experiment", "ko_exp", analysis="knockout")
    if exp is None:
        empty_state(
            "knockout results", "Run `python -m ioi precompute`, or launch an experiment with 'knockout'."
        )
        return
    epochs = exp.epochs_with("knockout")
    chosen = st.sidebar.multiselect(
        "Checkpoints (epochs)", epochs, default=epochs[:1] + epochs[-1:], key="ko_ep"
    )
    frames, ablations = [], set()
    for epoch in sorted(set(chosen)):
        found = result_or_offer(exp, epoch, "knockout")
        if found is None or "classes" not in found.tables:
            continue
        t = found.tables["classes"].copy()
        t["checkpoint"] = f"epoch {epoch}"
        t["f_model"] = found.summary.get("f_model")
        ablations.add(str(found.summary.get("ablation", "mean")))
        frames.append(t)
    if not frames:
        empty_state("checkpoints selected", "Pick at least one epoch in the sidebar.")
        return
    data = pd.concat(frames, ignore_index=True).rename(columns={"class": "target", "f_knockout": "value"})
    how = ", ".join(sorted(ablations))
    chart = charts.knockout_bars(data, title=f"Logit difference with a class knocked out ({how} ablation)")
    show_chart(
        chart, data,
        f"Logit difference F after {how}-ablating every head of one circuit class (all positions), per "
        "checkpoint; compare with the intact model's F (column f_model in the CSV).",
        f"knockout-classes-{exp.id[:8]}",
    )  # fmt: skip
    last = found.heads if found is not None else None
    if last is not None and not last.empty:  # the per-head knockouts of the latest chosen epoch
        with st.expander(f"Per-head knockout at epoch {max(chosen)}"):
            chart = charts.head_heatmap(last, title="change in F when one head is ablated", value_title="ΔF")
            show_chart(
                chart, heads_with_labels(last),
                f"Change in logit difference when each head alone is {how}-ablated at all positions.",
                f"knockout-heads-{exp.id[:8]}",
            )  # fmt: skip


def live_section() -> None:
    st.subheader("Knock out heads you choose")
    if not live_available("knockout"):
        st.info("The knockout analysis is not in this build yet (ioi/ablation.py).", icon="ℹ️")
        return
    from ioi.methods.ablation import AblationType

    sources = model_sources()
    c = st.columns(3)
    models = c[0].multiselect(
        "Models or checkpoints",
        list(sources),
        default=[default_model()],
        key="ko_models",
        format_func=sources.get,
    )
    ablation = c[1].selectbox("Ablation", [a.value for a in AblationType], key="ko_ablation")
    heads = c[2].text_input("Heads (L.H, space-separated)", "", key="ko_heads", help="e.g. 9.9 9.6 10.0")
    error = c[2].empty()
    if not run_button("Run knockout", "ko_run", (models, ablation, heads)):
        return
    if not models:
        st.error("Pick at least one model or checkpoint.", icon="⚠️")
        return
    frames, baselines = [], []
    for model in models:
        loaded = model_or_message(model)
        if loaded is None:
            return
        try:
            chosen = parse_heads(heads, loaded.n_layers, loaded.n_heads)
        except ValueError as err:
            error.error(str(err), icon="⚠️")
            return
        found = live_analysis(model, "knockout", options_json(ablation=ablation, heads=chosen or None))
        f_m = found.summary.get("f_model")
        rows = found.tables["classes"][["class", "f_knockout"]].rename(columns={"class": "target"})
        if chosen:
            rows.loc[len(rows)] = [" ".join(chosen), found.summary["f_knockout"]]
        rows.loc[len(rows)] = ["(nothing: intact model)", f_m]
        frames.append(rows.rename(columns={"f_knockout": "value"}).assign(checkpoint=sources[model]))
        baselines.append(f_m)
    data = pd.concat(frames, ignore_index=True)
    show_chart(
        charts.knockout_bars(data, baseline=baselines[0] if len(baselines) == 1 else None,
                             title=f"{ablation} ablation"),
        data,
        f"Logit difference after {ablation}-ablating each circuit class (and the chosen heads together) at "
        "all positions, on 100 evaluation prompts, per model or checkpoint; '(nothing)' is the intact model.",
        "knockout-live",
    )  # fmt: skip


def body() -> None:
    if no_cache_layer():
        return
    cached_section()
    live_section()


show_user_errors(body)
