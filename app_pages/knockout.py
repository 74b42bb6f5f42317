"""Knockout: the logit difference after ablating each circuit class or chosen heads, across checkpoints."""

import pandas as pd
import streamlit as st

from app_pages._live import (
    default_model,
    example_heads,
    live_analysis,
    live_section,
    model_or_message,
    model_sources,
    options_json,
    parse_heads,
    run_button,
)
from app_pages._store import circuit_at, clean_run, experiments, result
from app_pages._ui import (
    empty_state,
    heads_with_labels,
    pick_experiment,
    set_url,
    show_chart,
    show_user_errors,
)
from app_pages._views import INTACT, head_heatmap, knockout_frame, knockout_view
from ioi.present import charts

st.title("Knockout")
st.write(
    "Ablate a class of circuit heads (or heads you choose) and see how far the logit difference "
    "falls. Which ablation is used matters for the numbers (Miller et al. 2024), so every chart says."
)


def cached_section() -> None:
    cols = st.columns([3, 4])
    exp = pick_experiment(
        "Experiment", "ko_exp", analysis="knockout", default=clean_run("knockout"), where=cols[0]
    )
    if exp is None:
        empty_state(
            "knockout results", "Run `python -m ioi precompute`, or launch an experiment with 'knockout'."
        )
        return
    having = sum(1 for e in experiments() if e.epochs_with("knockout"))
    cols[0].caption(f"The {having} of {len(experiments())} runs with a cached knockout (a run computes "
                    "it when launched with 'knockout'; any model or checkpoint: the section below).")
    epochs = exp.epochs_with("knockout")
    asked = [int(e) for e in (st.query_params.get("epoch") or "").split(",") if e.isdigit()]
    # epochs this run lacks mean the URL was another run's (the experiment was just switched)
    wanted = asked if asked and set(asked) <= set(epochs) else []
    chosen = cols[1].multiselect(
        "Checkpoints",
        epochs,
        default=wanted or sorted({epochs[0], epochs[-1]}),
        key=f"ko_ep-{exp.id}",
        format_func=exp.epoch_label,
    )
    set_url(epoch=",".join(map(str, sorted(chosen))) or None)
    chart, data, caption, notes = knockout_view(exp, sorted(chosen))
    for note in notes:
        st.info(note, icon="ℹ️")
    if chart is None:
        empty_state("checkpoints selected", "Pick at least one checkpoint above.")
        return
    show_chart(chart, data, caption, f"knockout-classes-{exp.id[:8]}")
    epoch = max(chosen)
    found = result(exp, epoch, "knockout")
    if found is not None and not found.heads.empty:
        with st.expander(f"Per-head knockout at {exp.epoch_label(epoch)}"):
            chart = head_heatmap(
                found.heads,
                title="change in F when one head is ablated",
                value_title="ΔF (logits)",
                circuit=circuit_at(exp, epoch),
            )
            show_chart(
                chart,
                heads_with_labels(found.heads),
                f"Change in logit difference when each head alone is {found.summary.get('ablation', 'mean')}-"
                "ablated at all positions.",
                f"knockout-heads-{exp.id[:8]}",
            )


def live_knockout() -> None:
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
    loaded = [m for m in (model_or_message(m) for m in models) if m is not None]
    if len(loaded) < len(models):
        return
    shape = (loaded[0].n_layers, loaded[0].n_heads) if loaded else (1, 1)
    heads = c[2].text_input(
        "Heads (L.H, space-separated)", "", key="ko_heads", help=f"e.g. {example_heads(*shape)}"
    )
    error = c[2].empty()
    if not run_button("Run knockout", "ko_run", (models, ablation, heads)):
        return
    if not models:
        st.error("Pick at least one model or checkpoint.", icon="⚠️")
        return
    frames = []
    for model, m in zip(models, loaded):
        try:
            chosen = parse_heads(heads, m.n_layers, m.n_heads)
        except ValueError as err:
            error.error(str(err), icon="⚠️")
            return
        # the chart shows classes and the chosen heads: each head alone (24 more runs) is not needed
        opts = options_json(ablation=ablation, heads=chosen or None, per_head=False)
        found = live_analysis(model, "knockout", opts)
        frames.append(knockout_frame(found, " ".join(chosen)).assign(checkpoint=sources[model]))
    data = pd.concat(frames, ignore_index=True)
    show_chart(
        charts.knockout_bars(data, title=f"{ablation} ablation"),
        data,
        f"Logit difference after {ablation}-ablating each circuit class (and the chosen heads together) at "
        f"all positions, on 100 evaluation prompts, per model or checkpoint; '{INTACT}' is F unablated. "
        "Error bars: 95% bootstrap intervals over the prompts.",
        "knockout-live",
    )


def body() -> None:
    cached_section()
    live_section(
        "Knock out heads you choose",
        "ko_live",
        live_knockout,
        "loads the models and runs the knockouts on them",
    )


show_user_errors(body)
