"""Cross-model activation patching: which heads carry the difference between two checkpoints."""

import streamlit as st

from app_pages._live import (
    live_analysis,
    live_section,
    model_or_message,
    model_sources,
    options_json,
    pick_model,
    run_button,
)
from app_pages._store import clean_run
from app_pages._ui import (
    choice,
    empty_state,
    pick_epoch,
    pick_experiment,
    result_or_offer,
    show_chart,
    show_user_errors,
)
from app_pages._views import (
    CMAP_FIELDS,
    CMAP_POSITIONS,
    class_bars,
    cmap_class_caption,
    cmap_directions,
    cmap_gap,
    cmap_roles,
    cmap_view,
)

st.title("Cross-model patching")
st.write(
    "CMAP runs a receiver model with one head at a time taken from a source model (its output at END, "
    "or its attention pattern) and measures the change in the receiver's logit difference, also as a "
    "share of the gap F(source) − F(receiver). Below, A is the checkpoint you pick and B the run's "
    "starting model; the direction says which of the two receives."
)


POSITIONS = {"end": "END only (the answer's position; fast)", "all": "every position"}


def show_result(found, key: str, a: str, b: str, param: str | None = None) -> None:
    """Metrics, the per-head heatmap (direction and value picked, in the URL with `param`) and the
    per-class sums of a CMAP entry; A is `a`, B is `b`."""
    s = found.summary
    c = st.columns(2)
    c[0].metric(f"F(A) — {a}", f"{s.get('f_a', float('nan')):.2f}")
    c[1].metric(f"F(B) — {b}", f"{s.get('f_b', float('nan')):.2f}")
    where = CMAP_POSITIONS.get(str(s.get("positions")), "END")
    st.caption(f"F: mean logit(IO) − logit(S) over the analysis prompts. Patched: each head's "
               f"{s.get('mode', 'output')} at {where}.")  # fmt: skip
    names = {"b<-a": f"{b} run with heads of {a}", "a<-b": f"{a} run with heads of {b}"}
    directions = list(cmap_directions(found))
    c = st.columns(2)
    direction = choice("Direction", directions, f"{key}-dir", param=param and "direction", where=c[0],
                       radio=True, format_func=names.get)  # fmt: skip
    field = choice("Value", list(CMAP_FIELDS), f"{key}-field", param=param and "field", where=c[1],
                   radio=True, format_func=CMAP_FIELDS.get)  # fmt: skip
    receiver, source = cmap_roles(found, a, b, direction)
    gap = cmap_gap(found, direction)
    worse = " (negative: the source does the task less well than the receiver)" if gap < 0 else ""
    st.markdown(f"Receiver: **{receiver}**; source: **{source}**. Gap F(source) − F(receiver) = {gap:+.2f} "
                f"logits{worse}.")  # fmt: skip
    chart, table, caption, classes = cmap_view(found, a, b, field, direction)
    show_chart(chart, table, caption, f"{key}-heads")
    if classes is not None and not classes.empty:
        share = field == "share_of_gap" and "share_of_gap" in classes  # the bars follow the Value choice
        bars = class_bars(classes, value="share_of_gap", low="share_ci_low", high="share_ci_high",
                          value_title=CMAP_FIELDS[field], title="Per circuit class") if share else \
            class_bars(classes, value_title="change in F (logits)", title="Per circuit class")  # fmt: skip
        show_chart(
            bars,
            classes,
            cmap_class_caption(found, a, b, direction, share),
            f"{key}-classes",
        )


def cached_section() -> None:
    cols = st.columns([3, 2])
    exp = pick_experiment("Experiment", "cmap_exp", analysis="cmap", default=clean_run("cmap"), where=cols[0])
    if exp is None:
        empty_state("CMAP results", "Run `python -m ioi precompute`, or launch an experiment with 'cmap'.")
        return
    epoch = pick_epoch(
        exp, "cmap", "Checkpoint A (B is the run's starting model)", "cmap_epoch", where=cols[1]
    )
    found = result_or_offer(exp, epoch, "cmap")
    if found is None:
        return
    a, b = exp.checkpoint_label(epoch), exp.checkpoint_label(0)
    if exp.scenario == "reversal":
        st.warning(f"B is the toxic model this reversal starts from ({b}), not the pretrained one: "
                   "the heads that light up are those the reversal changed back.", icon="⚠️")  # fmt: skip
    show_result(found, f"cmap-{exp.id[:8]}-e{epoch}", a, b, "cmap")


def live_cmap() -> None:
    c = st.columns(3)
    a = pick_model("Model A (receives)", "cmap_a", where=c[0])
    b = pick_model("Model B (gives)", "cmap_b", where=c[1])
    mode = c[2].selectbox("Patch", ["output", "pattern"], key="cmap_mode")
    where = c[2].radio("Positions", ["end", "all"], key="cmap_positions", horizontal=True,
                       format_func=POSITIONS.get)  # fmt: skip
    if not run_button("Run CMAP", "cmap_run", (a, b, mode, where)):
        return
    if a == b:
        st.error("Pick two different models: patching a model with itself changes nothing.", icon="⚠️")
        return
    if model_or_message(a) is None or model_or_message(b) is None:
        return
    # A receives B's heads (the direction the chart opens on); the reverse is another run with A, B swapped
    opts = options_json(mode=mode, positions=where, direction="a<-b", n_boot=200)
    found = live_analysis(a, "cmap", opts, other_name=b)
    names = model_sources()
    show_result(found, "cmap-live", names.get(a, a), names.get(b, b))


def body() -> None:
    cached_section()
    live_section(
        "Any two checkpoints", "cmap_live", live_cmap, "loads both models and patches one into the other"
    )


show_user_errors(body)
