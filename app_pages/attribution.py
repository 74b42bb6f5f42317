"""Logit attribution: per-head direct logit attribution at any checkpoint, or two compared."""

import streamlit as st

from app_pages._store import Experiment, by_id, clean_run
from app_pages._ui import (
    choice,
    empty_state,
    heatmap_opening_heads,
    parse_checkpoint,
    pick_epoch,
    pick_experiment,
    result_or_offer,
    set_url,
    show_chart,
    show_user_errors,
)
from app_pages._views import dla_difference_view, dla_view
from ioi.present import charts

st.title("Logit attribution")
st.write(
    "Direct logit attribution (DLA): each head's output at END, divided by the final LayerNorm scale, "
    "projected on W_U[IO] − W_U[S]. Blue heads push towards IO, red heads towards S; the heads of "
    "the circuit found at that checkpoint are outlined."
)
MODES = {"one": "one checkpoint", "side": "side by side", "diff": "difference B − A"}


def checkpoint_b(exp_a: Experiment, epoch_a: int, cols):
    """Picker B: opens on the URL's `compare` (``<id>:<epoch>``), else on A's run at its other end
    (what that training changed) — never A itself. A new A resets B that way: B follows A."""
    want_id, want_epoch = parse_checkpoint(st.query_params.get("compare"))
    if st.session_state.get("dla_b_for", exp_a.id) != exp_a.id:
        for key in [k for k in st.session_state if str(k).startswith(("dla_exp_B", "dla_epoch_B"))]:
            del st.session_state[key]
        want_id = None
    st.session_state["dla_b_for"] = exp_a.id
    default = by_id(want_id) or exp_a
    exp_b = pick_experiment("Experiment B", "dla_exp_B", analysis="dla", param=None, default=default,
                            where=cols[2])  # fmt: skip
    epochs = exp_b.epochs_with("dla")
    fallback = epochs[-1] if (exp_b.id, epochs[-1]) != (exp_a.id, epoch_a) else epochs[0]
    start = want_epoch if exp_b.id == want_id and want_epoch in epochs else fallback
    epoch_b = pick_epoch(exp_b, "dla", "Epoch B", "dla_epoch_B", param=None, default=start, where=cols[3])
    set_url(compare=f"{exp_b.id}:{epoch_b}")
    return exp_b, epoch_b


def panel(exp: Experiment, epoch: int, heads, title: str, key: str, span: float | None) -> None:
    chart, table, caption = dla_view(exp, epoch, heads, title, span)
    heatmap_opening_heads(chart, table, f"{caption} Click a head to open its page.", key, exp, epoch)


def body() -> None:
    mode = choice("Show", list(MODES), "dla_mode", param="mode", format_func=MODES.get, radio=True, where=st,
                  horizontal=True)  # fmt: skip
    cols = st.columns([3, 1.4, 3, 1.4]) if mode != "one" else st.columns([3, 1.4, 4.4])
    exp_a = pick_experiment(
        "Experiment A", "dla_exp_A", analysis="dla", default=clean_run("dla"), where=cols[0]
    )
    if exp_a is None:
        empty_state(
            "DLA results",
            "Run `python -m ioi precompute` for the demo set, or launch an experiment with the "
            "'dla' analysis on the Experiments page.",
        )
        return
    epoch_a = pick_epoch(exp_a, "dla", "Epoch A", "dla_epoch_A", default=0, where=cols[1])
    a = result_or_offer(exp_a, epoch_a, "dla")
    if a is None:
        return
    title_a = exp_a.checkpoint_label(epoch_a)
    if mode == "one":
        set_url(compare=None)
        st.metric(f"Logit difference — {title_a}", f"{a.summary.get('logit_diff', float('nan')):.2f}")
        panel(exp_a, epoch_a, a.heads, f"DLA — {title_a}", f"dla-{exp_a.id[:8]}-e{epoch_a}", None)
        return
    exp_b, epoch_b = checkpoint_b(exp_a, epoch_a, cols)
    b = result_or_offer(exp_b, epoch_b, "dla")
    if b is None:
        return
    title_b = exp_b.checkpoint_label(epoch_b)
    c = st.columns(3)
    c[0].metric(f"Logit difference A — {title_a}", f"{a.summary.get('logit_diff', float('nan')):.2f}")
    c[1].metric(f"Logit difference B — {title_b}", f"{b.summary.get('logit_diff', float('nan')):.2f}")
    if (exp_a.id, epoch_a) == (exp_b.id, epoch_b):
        st.warning("A and B are the same checkpoint: pick another one for B above.", icon="⚠️")
    if mode == "side":
        scales = {"shared": "one scale for both", "own": "each panel its own"}
        shared = choice(
            "Colour scale",
            list(scales),
            "dla_scale",
            param="scale",
            radio=True,
            format_func=scales.get,
            where=st,
            horizontal=True,
        )
        span = charts.color_span(a.heads, b.heads) if shared == "shared" else None
        left, right = st.columns(2)
        with left:
            panel(exp_a, epoch_a, a.heads, f"A: {title_a}", f"dla-a-{exp_a.id[:8]}-e{epoch_a}", span)
        with right:
            panel(exp_b, epoch_b, b.heads, f"B: {title_b}", f"dla-b-{exp_b.id[:8]}-e{epoch_b}", span)
        return
    chart, table, caption = dla_difference_view(exp_a, epoch_a, a.heads, exp_b, epoch_b, b.heads)
    show_chart(chart, table, caption, f"dla-diff-{exp_a.id[:8]}-e{epoch_a}-{exp_b.id[:8]}-e{epoch_b}")


show_user_errors(body)
