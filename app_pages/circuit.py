"""Circuit: path patching step by step, the discovered head classes, name movers' attention."""

import streamlit as st

from app_pages._common import (
    empty_state,
    experiments,
    heads_with_labels,
    live_analysis,
    live_available,
    model_or_message,
    options_json,
    parse_heads,
    pick_model,
    result,
    run_button,
    show_chart,
    show_user_errors,
)
from ioi.present import charts
from ioi.task.circuit import GPT2_SMALL_CIRCUIT, Circuit

st.title("Circuit")
st.write(
    "Path patching (Wang et al. 2022) sends ABC activations from one sender head at a time along one "
    "path only, and measures the effect on a receiver. Run it backwards from the logits to find each "
    "class: name movers, S-inhibition, induction and duplicate-token, previous-token heads."
)
# receiver, the class whose heads receive, the receiver position, what the step finds
STEPS = (
    ("logits", None, "end", "name movers (large drop) and negative name movers (rise)"),
    ("q", "name mover", "end", "S-inhibition heads (via the name movers' queries at END)"),
    ("v", "s-inhibition", "s2", "induction and duplicate-token heads (via S-inhibition values from S2)"),
    ("k", "induction", "s1+1", "previous-token heads (via induction keys at S1+1)"),
)


def discovered_circuit() -> tuple[Circuit | None, str]:
    """The circuit found by the latest cached faithfulness analysis of an epoch-0 model."""
    for exp in experiments():
        if 0 in exp.epochs_with("faithfulness"):
            found = result(exp, 0, "faithfulness")
            if found is not None and isinstance(found.summary.get("circuit"), dict):
                return Circuit.from_json(found.summary["circuit"]), f"{exp.config.get('model')} ({exp.label})"
    return None, ""


def classes_section() -> None:
    st.subheader("Head classes: discovered vs. published")
    circuit, where = discovered_circuit()
    left, right = st.columns(2)
    with left:
        st.markdown(f"**Discovered** — {where}" if circuit else "**Discovered**")
        if circuit is None:
            empty_state(
                "discovered circuit", "Run `python -m ioi precompute` (it runs the faithfulness analysis)."
            )
        else:
            st.graphviz_chart(charts.circuit_dot(circuit))
            st.dataframe(charts.circuit_frame(circuit), hide_index=True, width="stretch")
    with right:
        st.markdown(f"**Published** — {GPT2_SMALL_CIRCUIT.source}")
        st.graphviz_chart(charts.circuit_dot(GPT2_SMALL_CIRCUIT))
    st.caption(
        "Head classes of the circuit found in the model before fine-tuning (left) and of the GPT-2 small "
        "circuit of the IOI paper (right); each box lists its heads as L.H."
    )


def path_patching_section() -> None:
    st.subheader("Path patching, step by step")
    if not live_available("path-patch"):
        st.info("Path patching is not in this build yet (ioi/path_patching.py).", icon="ℹ️")
        return
    model = pick_model("Model or checkpoint", "pp_model")
    size = st.sidebar.number_input("Prompts", 10, 500, 50, step=10, key="pp_size")
    circuit, _ = discovered_circuit()
    circuit = circuit if model != "gpt2" else GPT2_SMALL_CIRCUIT
    for i, (receiver, cls, position, finds) in enumerate(STEPS, start=1):
        with st.expander(
            f"Step {i}: receiver {receiver}{f' of {cls} heads' if cls else ''} → {finds}", i == 1
        ):
            heads = ""
            if cls:
                default = " ".join(str(h) for h in (circuit.classes.get(cls, ()) if circuit else ()))
                heads = st.text_input(f"Receiver heads ({cls})", default, key=f"pp_heads_{i}")
                if not heads.strip():
                    st.info(f"Give the {cls} heads (L.H, space-separated) to run this step.", icon="ℹ️")
                    continue
            opts = options_json(receiver=receiver, heads=heads or None, position=position)
            if not run_button(f"Run step {i}", f"pp_run_{i}", (model, size, opts)):
                continue
            loaded = model_or_message(model)
            if loaded is None:
                return
            if heads:
                try:
                    parse_heads(heads, loaded.n_layers, loaded.n_heads)
                except ValueError as err:
                    st.error(str(err), icon="⚠️")
                    continue
            found = live_analysis(model, "path-patch", opts, size=int(size))
            chart = charts.head_heatmap(found.heads, title=f"Step {i}: senders → {receiver}",
                                        value_title="normalised effect", circuit=circuit)  # fmt: skip
            to = found.summary.get("receivers", receiver)
            caption = (
                f"Path patching from each sender head (ABC activations) to {to}; normalised effect "
                "(F_patched − F_clean)/(F_clean − F_ABC): −1 is as bad as ABC. MLPs recomputed."
            )
            show_chart(chart, heads_with_labels(found.heads), caption, f"path-patch-step{i}")


def attention_section() -> None:
    st.subheader("Name movers attend to IO, not S")
    if not live_available("attention"):
        st.info("The attention analysis is not in this build yet (ioi/attention.py).", icon="ℹ️")
        return
    model = st.session_state.get("pp_model", "ioi-tiny")
    if not run_button("Compute attention scores", "attn_run", model) or model_or_message(model) is None:
        return
    found = live_analysis(model, "attention", options_json())
    data = charts.with_classes(found.heads, discovered_circuit()[0])
    data = data.rename(columns={"value": "end_to_io"}) if "end_to_io" not in data else data
    show_chart(
        charts.attention_scatter(data, title="Attention from END"), heads_with_labels(found.heads),
        "Mean attention probability from END to IO (x) and to S (y) for every head; name movers sit "
        "bottom-right. No ablation; colours are the discovered classes.",
        "attention-end",
    )  # fmt: skip


def body() -> None:
    classes_section()
    path_patching_section()
    attention_section()


show_user_errors(body)
