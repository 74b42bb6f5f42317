"""Logit attribution: per-head direct logit attribution at any checkpoint, or two side by side."""

import streamlit as st

from app_pages._common import (
    empty_state,
    heads_with_labels,
    no_cache_layer,
    pick_epoch,
    pick_experiment,
    result_circuit,
    result_or_offer,
    show_chart,
    show_user_errors,
)
from ioi.present import charts

st.title("Logit attribution")
st.write(
    "Direct logit attribution (DLA): each head's output at END, divided by the final LayerNorm scale, "
    "projected on W_U[IO] − W_U[S]. Blue heads push towards IO, red heads towards S; circuit heads "
    "are outlined."
)
CAPTION = (
    "Per-head DLA on logit(IO) − logit(S) at END (mean over the analysis prompts; no ablation), "
    "layers × heads; diverging colour centred at 0. Outlined: heads of the circuit found at this "
    "checkpoint (faithfulness analysis), or GPT-2's published circuit on 12×12 models."
)


def checkpoint(where, suffix: str):
    exp = pick_experiment(f"Experiment {suffix}", f"dla_exp_{suffix}", analysis="dla", where=where)
    if exp is None:
        return None, None
    return exp, pick_epoch(exp, "dla", f"Epoch {suffix}", f"dla_epoch_{suffix}", where=where)


def dla(exp, epoch):
    return result_or_offer(exp, epoch, "dla")


def body() -> None:
    if no_cache_layer():
        return
    mode = st.sidebar.radio("Show", ["one checkpoint", "side by side", "difference B − A"], key="dla_mode")
    exp_a, epoch_a = checkpoint(st.sidebar, "A")
    if exp_a is None:
        empty_state(
            "DLA results",
            "Run `python -m ioi precompute` for the demo set, or launch an experiment with the "
            "'dla' analysis on the Experiments page.",
        )
        return
    a = dla(exp_a, epoch_a)
    if a is None:
        return
    n_layers, n_heads = int(a.heads["layer"].max()) + 1, int(a.heads["head"].max()) + 1
    circuit = result_circuit(exp_a, epoch_a, n_layers, n_heads)
    title_a = f"{exp_a.scenario}, epoch {epoch_a}"
    if "logit_diff" in a.summary:
        st.metric("Logit difference at A", f"{a.summary['logit_diff']:.3f}")
    if mode == "one checkpoint":
        chart = charts.head_heatmap(a.heads, title=f"DLA — {title_a}", value_title="DLA", circuit=circuit)
        show_chart(chart, heads_with_labels(a.heads), CAPTION, f"dla-{exp_a.id[:8]}-e{epoch_a}")
        return
    exp_b, epoch_b = checkpoint(st.sidebar, "B")
    b = dla(exp_b, epoch_b)
    if b is None:
        return
    title_b = f"{exp_b.scenario}, epoch {epoch_b}"
    if mode == "side by side":
        left, right = st.columns(2)
        with left:
            chart = charts.head_heatmap(a.heads, title=f"A: {title_a}", value_title="DLA", circuit=circuit)
            show_chart(chart, heads_with_labels(a.heads), CAPTION, f"dla-a-{exp_a.id[:8]}-e{epoch_a}")
        with right:
            chart = charts.head_heatmap(b.heads, title=f"B: {title_b}", value_title="DLA", circuit=circuit)
            show_chart(chart, heads_with_labels(b.heads), CAPTION, f"dla-b-{exp_b.id[:8]}-e{epoch_b}")
        return
    diff = charts.difference_frame(a.heads, b.heads)
    chart = charts.head_heatmap(diff, title=f"DLA B − A ({title_b} minus {title_a})", value_title="ΔDLA",
                                circuit=circuit)  # fmt: skip
    show_chart(
        chart, heads_with_labels(diff),
        "Per-head change in DLA (B − A) on logit(IO) − logit(S) at END, no ablation; blue: the head "
        "pushes more towards IO at B than at A. Outlined: circuit heads at A.",
        f"dla-diff-{exp_a.id[:8]}-e{epoch_a}-{exp_b.id[:8]}-e{epoch_b}",
    )  # fmt: skip


show_user_errors(body)
