"""Overview: what IOI is, the circuit, the three findings, the toxic datasets and a guided tour."""

import pandas as pd
import streamlit as st

from app_pages._common import (
    dataset,
    experiments,
    heads_with_labels,
    highlighted,
    model_or_message,
    result,
    result_circuit,
    role_words,
    series,
    show_chart,
    show_user_errors,
)
from ioi.models.load import ASSETS, DEFAULT_MODEL
from ioi.present import charts
from ioi.present.charts import circuit_dot
from ioi.task.circuit import GPT2_SMALL_CIRCUIT, Circuit
from ioi.task.corruptions import CORRUPTIONS

st.title("IOI Circuit Lab")
st.write(
    "Reproduce and extend *Neuroplasticity and Corruption in Model Mechanisms: A Case Study of "
    "Indirect Object Identification* (Chhabra et al. 2025, arXiv 2503.01896): fine-tune a model on "
    "the IOI task, on toxic versions of it and back again, and watch its circuit change."
)

model_col, task_col = st.columns([1, 2])
with model_col:
    st.subheader("Model")
    model = model_or_message(DEFAULT_MODEL)
    if model is not None:
        st.markdown(
            f"**{model.name}** — {model.n_layers} layers × {model.n_heads} heads, on {model.device}.  \n"
            f"Weights: {model.source}."
        )
        card = ASSETS / model.name / "MODEL_CARD.md"
        if card.exists():
            with st.expander("Model card"):
                st.markdown(card.read_text())
with task_col:
    st.subheader("The task")
    example = dataset("clean", 1, 0, "eval")[0]
    st.markdown(f"{highlighted(example.prompt, role_words(example))} → **{example.io}**")
    st.write(
        "The model must complete the prompt with the indirect object (IO), not the repeated subject "
        "(S). The logit difference logit(IO) − logit(S) at the last token (END) measures how well."
    )

st.subheader("The circuit")
left, right = st.columns([3, 2])
with left:
    st.graphviz_chart(circuit_dot(GPT2_SMALL_CIRCUIT))
    st.caption(
        "Head classes of the IOI circuit in GPT-2 small (Wang et al. 2022) and the inputs through which "
        "each class feeds the next; arrows point downstream. The Circuit page finds these classes in "
        "the loaded model."
    )
with right:
    st.markdown(
        "- **Previous-token** heads copy S1 into S1+1.\n"
        "- **Duplicate-token** and **induction** heads notice at S2 that S appeared before.\n"
        "- **S-inhibition** heads carry that to END and steer the name movers' queries away from S.\n"
        "- **Name movers** attend to IO and copy it to the logits; **negative name movers** push "
        "against it; **backup name movers** take over when name movers are knocked out."
    )

st.subheader("The three findings")
f1, f2, f3 = st.columns(3)
f1.markdown(
    "**Circuit amplification.** Fine-tuning on clean IOI does not build a new mechanism: the same "
    "heads get stronger (faithfulness rises from ~87% to ~99.9% in GPT-2)."
)
f2.markdown(
    "**Localized corruption.** Fine-tuning on a toxic dataset changes a few classes: S-inhibition "
    "heads under name moving, name movers inverting under subject duplication."
)
f3.markdown(
    "**Neuroplasticity.** Re-training a corrupted model on clean data restores the original circuit "
    "(faithfulness back to 95–96%)."
)

st.subheader("Toxic datasets — the project's reading")
st.warning(
    "The paper names three toxic datasets but does not publish how it built them. These are this "
    "project's readings (METHODS §2), not the paper's exact recipe.",
    icon=":material/edit_note:",
)
for name, corruption in CORRUPTIONS.items():
    toxic = dataset(name, 3, 0, "eval")
    st.markdown(f"**{name.replace('_', ' ')}** — {corruption.description}")
    for x in toxic[:2]:
        st.markdown(f"&nbsp;&nbsp;{highlighted(x.prompt, role_words(x))} → **{x.label}**")

st.subheader("Guided tour")
experiments_found = experiments()
STEPS = [
    ("Look at the data", "app_pages/datasets.py",
     "Browse clean, ABC and toxic prompts. Note which word is IO, S1, S2 and END: every analysis "
     "measures something at these positions."),
    ("Which heads write the answer?", "app_pages/attribution.py",
     "Direct logit attribution shows each head's direct push towards IO over S at END. Pick epoch 0 "
     "of the clean demo run: the blue cells are the name movers, red ones negative name movers."),
    ("How is the circuit wired?", "app_pages/circuit.py",
     "Path patching follows the signal backwards, step by step: name movers, then the S-inhibition "
     "heads that drive their queries, then induction and duplicate-token heads, then previous-token heads."),
    ("Does the circuit explain the model?", "app_pages/faithfulness.py",
     "Faithfulness compares the circuit alone (everything else mean-ablated) with the whole model. "
     "Follow it across clean epochs (amplification), toxic epochs and reversal (neuroplasticity)."),
    ("Break it on purpose", "app_pages/knockout.py",
     "Knock out one class at a time and compare checkpoints: which classes does a toxic dataset "
     "make matter more or less?"),
    ("What changed between two models?", "app_pages/cmap.py",
     "Cross-model patching puts one head at a time from the fine-tuned (or corrupted) model into the "
     "pretrained one: the heads that carry the change light up."),
    ("Run your own", "app_pages/experiments.py",
     "Launch a fine-tuning run of a few epochs, watch it, and open its results in these pages."),
]  # fmt: skip


def demo_run(scenario: str):
    """The first cached experiment of `scenario` (demo results first), or None."""
    return next((e for e in experiments_found if e.scenario == scenario), None)


def last_epoch(exp, name: str) -> int | None:
    return max(exp.epochs_with(name), default=None)


def tour_preview(step: int) -> None:
    """A demo result for the tour's step, read from the cache (nothing is computed here)."""
    clean, toxic = demo_run("clean"), demo_run("subject_duplication") or demo_run("name_moving")
    if step == 0:
        x = dataset("clean", 1, 1, "eval")[0]
        abc, sd = dataset("abc", 1, 1, "eval")[0], dataset("subject_duplication", 1, 1, "eval")[0]
        for label, sample in (("clean", x), ("ABC", abc), ("subject duplication", sd)):
            st.markdown(f"*{label}:* {highlighted(sample.prompt, role_words(x))} → **{sample.label}**")
    elif step == 1 and clean is not None and 0 in clean.epochs_with("dla"):
        found = result(clean, 0, "dla")
        if found is None:
            return
        n_layers, n_heads = int(found.heads["layer"].max()) + 1, int(found.heads["head"].max()) + 1
        circuit = result_circuit(clean, 0, n_layers, n_heads)
        chart = charts.head_heatmap(
            found.heads, title="DLA before fine-tuning", value_title="DLA", circuit=circuit
        )
        caption = "Per-head DLA on logit(IO) − logit(S) at END, epoch 0 of the clean demo run; no ablation."
        show_chart(chart, heads_with_labels(found.heads), caption, "tour-dla")
    elif step == 2 and clean is not None and 0 in clean.epochs_with("faithfulness"):
        found = result(clean, 0, "faithfulness")
        if found is not None and isinstance(found.summary.get("circuit"), dict):
            st.graphviz_chart(charts.circuit_dot(Circuit.from_json(found.summary["circuit"])))
            st.caption(
                "The circuit found in the demo model before fine-tuning (head classes and their heads)."
            )
    elif step == 3 and clean is not None:
        s = series(clean)
        if "faithfulness.faithfulness" in s:
            data = pd.DataFrame(
                {"epoch": s["epoch"], "value": s["faithfulness.faithfulness"], "series": "clean"}
            )
            chart = charts.epoch_curves(
                data.dropna(), y_title="faithfulness", title="Faithfulness, clean run"
            )
            caption = "Faithfulness F(C)/F(M) at each checkpoint of the clean demo run (mean ablation)."
            show_chart(chart, data, caption, "tour-faithfulness")
    elif step == 4 and toxic is not None and toxic.epochs_with("knockout"):
        frames = []
        for epoch in sorted({0, last_epoch(toxic, "knockout")}):
            found = result(toxic, epoch, "knockout")
            if found is not None and "classes" in found.tables:
                frames.append(found.tables["classes"].assign(checkpoint=f"epoch {epoch}"))
        if frames:
            data = pd.concat(frames).rename(columns={"class": "target", "f_knockout": "value"})
            chart = charts.knockout_bars(data, title=f"Class knockouts, {toxic.scenario} run")
            caption = (
                f"Logit difference with each class mean-ablated, before and after the {toxic.scenario} run."
            )
            show_chart(chart, data, caption, "tour-knockout")
    elif step == 5 and toxic is not None and toxic.epochs_with("cmap"):
        epoch = last_epoch(toxic, "cmap")
        found = result(toxic, epoch, "cmap")
        if found is not None and not found.heads.empty:
            title = f"CMAP: {toxic.scenario} epoch {epoch} ← pretrained"
            chart = charts.head_heatmap(found.heads, title=title, value_title="change in F")
            caption = (
                "Change in logit difference when each head's output at END comes from the pretrained model."
            )
            show_chart(chart, heads_with_labels(found.heads), caption, "tour-cmap")


step = st.session_state.setdefault("tour_step", 0)
title, page, text = STEPS[step]
st.progress((step + 1) / len(STEPS), text=f"Step {step + 1} of {len(STEPS)}: {title}")
st.write(text)
if step > 0 and not experiments_found:
    st.caption(
        "No experiment results are cached yet: run `python -m ioi precompute` or use the Experiments page."
    )
else:
    show_user_errors(lambda: tour_preview(step))
st.page_link(page, label=f"Open: {title}", icon=":material/arrow_forward:")
back, forward, _ = st.columns([1, 1, 6])
if back.button("Back", disabled=step == 0, key="tour_back"):
    st.session_state.tour_step = step - 1
    st.rerun()
if forward.button("Next", disabled=step == len(STEPS) - 1, key="tour_next"):
    st.session_state.tour_step = step + 1
    st.rerun()
