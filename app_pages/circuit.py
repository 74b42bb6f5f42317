"""Circuit: the head classes discovered at a checkpoint, path patching step by step, and the
name movers' attention."""

import streamlit as st

from app_pages._live import (
    example_heads,
    live_analysis,
    live_section,
    model_or_message,
    model_sources,
    options_json,
    parse_heads,
    pick_model,
    run_button,
)
from app_pages._store import circuit_at, clean_run, result
from app_pages._ui import (
    circuit_caption,
    empty_state,
    heads_with_labels,
    pick_epoch,
    pick_experiment,
    show_chart,
    show_user_errors,
)
from ioi.present import charts

st.title("Circuit")
st.write(
    "Path patching (Wang et al. 2022) sends ABC activations from one sender head at a time along one "
    "path only, and measures the effect on a receiver. Run backwards from the logits it finds each "
    "class: name movers, S-inhibition, induction and duplicate-token, previous-token heads. The "
    "classes below were searched for this way in the model itself, at the checkpoint you pick; a "
    "class no head qualified for is drawn dashed and grey."
)
# receiver, the class whose heads receive, the receiver position, what the step finds
STEPS = (
    ("logits", None, "end", "name movers (large drop) and negative name movers (rise)"),
    ("q", "name mover", "end", "S-inhibition heads (via the name movers' queries at END)"),
    ("v", "s-inhibition", "s2", "induction and duplicate-token heads (via S-inhibition values from S2)"),
    ("k", "induction", "s1+1", "previous-token heads (via induction keys at S1+1)"),
)


def classes_section():
    """The discovered classes at the picked checkpoint (default: the clean run's pretrained
    model); returns that circuit."""
    st.subheader("Head classes discovered in the model")
    cols = st.columns([3, 2])
    exp = pick_experiment(
        "Experiment", "circ_exp", analysis="faithfulness", default=clean_run("faithfulness"), where=cols[0]
    )
    if exp is None:
        empty_state(
            "discovered circuit", "Run `python -m ioi precompute` (it runs the faithfulness analysis)."
        )
        return None
    epoch = pick_epoch(exp, "faithfulness", "Checkpoint", "circ_epoch", default=0, where=cols[1])
    circuit = circuit_at(exp, epoch)
    st.markdown(f"**{exp.model} — {exp.checkpoint_label(epoch)}** ({exp.label})")
    if exp.scenario == "reversal" and epoch == 0:
        st.warning(
            "Epoch 0 of a reversal is the toxic model it starts from, not the pretrained model.", icon="⚠️"
        )
    if circuit is None:
        empty_state("circuit at this checkpoint", "Its faithfulness analysis recorded none.")
        return None
    found = result(exp, epoch, "faithfulness")
    reason = found.summary.get("circuit_reason") if found is not None else ""
    if reason and not circuit.heads:  # a corrupted model: say why, and where its story is told
        st.info(
            f"No circuit at this checkpoint: {reason}, so no head can be classified as doing it. The "
            "pretrained model's circuit is at epoch 0; which of its heads carry the corruption is on "
            "Cross-model patching (this checkpoint against the model it started from) and Knockout.",
            icon="ℹ️",
        )
        st.page_link("app_pages/cmap.py", label="Cross-model patching of this run",
                     icon=":material/compare_arrows:", query_params={"exp": exp.id, "epoch": str(epoch)})
    left, right = st.columns([3, 2])
    with left:
        st.graphviz_chart(charts.circuit_dot(circuit))
    with right:
        st.dataframe(charts.circuit_frame(circuit)[["class", "L.H"]], hide_index=True, width="stretch")
    st.caption(
        f"Head classes of the circuit classified at {exp.checkpoint_label(epoch)} of {exp.model} — "
        f"{circuit_caption(circuit)}. Each box lists its heads as L.H; arrows point downstream. "
        "GPT-2 small's published circuit is on the Overview, as a reference."
    )
    if circuit.empty_classes:
        st.markdown(f"No head met the criteria of: {', '.join(circuit.empty_classes)} (dashed, grey boxes).")
    return circuit


def receiver_default(cls: str, circuit, loaded) -> str:
    """The receiver heads of class `cls` for the loaded model, by the one circuit rule
    (`circuit_for`): GPT-2 small's published ones on GPT-2 small and its checkpoints, else those of
    the circuit classified at the picked checkpoint, when they fit the model."""
    from ioi.methods.classify import circuit_for  # the model is loaded: torch is imported already

    heads = circuit_for(loaded, classified=circuit).classes.get(cls, ())
    return " ".join(str(h) for h in heads if h.layer < loaded.n_layers and h.head < loaded.n_heads)


def path_patching(circuit) -> None:
    model = pick_model("Model or checkpoint", "pp_model")
    size = st.number_input("Prompts", 10, 500, 50, step=10, key="pp_size")
    loaded = model_or_message(model)
    if loaded is None:
        return
    for i, (receiver, cls, position, finds) in enumerate(STEPS, start=1):
        with st.expander(
            f"Step {i}: receiver {receiver}{f' of {cls} heads' if cls else ''} → {finds}", i == 1
        ):
            heads = ""
            if cls:
                default = receiver_default(cls, circuit, loaded)
                heads = st.text_input(
                    f"Receiver heads ({cls})",
                    default,
                    key=f"pp_heads_{i}_{model}",
                    help=f"L.H, space-separated, e.g. {example_heads(loaded.n_layers, loaded.n_heads)}",
                )
                if not heads.strip():
                    st.info(
                        f"No {cls} heads were found in this model's circuit; give some (L.H) to run "
                        "this step.",
                        icon="ℹ️",
                    )
                    continue
                try:
                    parse_heads(heads, loaded.n_layers, loaded.n_heads)
                except ValueError as err:
                    st.error(str(err), icon="⚠️")
                    continue
            opts = options_json(receiver=receiver, heads=heads or None, position=position)
            if not run_button(f"Run step {i}", f"pp_run_{i}", (model, size, opts)):
                continue
            found = live_analysis(model, "path-patch", opts, size=int(size))
            chart = charts.head_heatmap(
                found.heads,
                title=f"Step {i}: senders → {receiver}",
                value_title="normalised effect",
                circuit=circuit,
            )
            to = found.summary.get("receivers", receiver)
            caption = (
                f"Path patching on {model_sources().get(model, model)} from each sender head (ABC "
                f"activations) to {to}; normalised effect (F_patched − F_clean)/(F_clean − F_ABC): −1 is "
                "as bad as ABC. MLPs recomputed."
                + (f" Blank cells: {found.summary['no_value']}." if found.summary.get("no_value") else "")
            )
            show_chart(chart, heads_with_labels(found.heads), caption, f"path-patch-step{i}")
    st.subheader("Name movers attend to IO, not S")
    if not run_button("Compute attention scores", "attn_run", model):
        return
    found = live_analysis(model, "attention", options_json())
    data = charts.with_classes(found.heads, circuit)
    data = data.rename(columns={"value": "end_to_io"}) if "end_to_io" not in data else data
    show_chart(
        charts.attention_scatter(data, title="Attention from END"),
        heads_with_labels(found.heads),
        "Mean attention probability from END to IO (x) and to S (y) for every head; name movers sit "
        "bottom-right. No ablation; colours are the discovered classes.",
        "attention-end",
    )


def body() -> None:
    circuit = classes_section()
    live_section(
        "Path patching, step by step",
        "pp_live",
        lambda: path_patching(circuit),
        "loads the model and runs path patching and attention on it (a few seconds per step)",
    )


show_user_errors(body)
