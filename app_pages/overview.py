"""Overview: what IOI is, the three findings, the toxic datasets, GPT-2's published circuit as a
reference, and the guided tour."""

import streamlit as st

from app_pages._store import clean_run, result, shape_of
from app_pages._text import dataset, highlighted, role_words
from app_pages._tour import tour
from app_pages._ui import show_user_errors
from ioi.present.charts import circuit_dot
from ioi.task.circuit import GPT2_SMALL_CIRCUIT
from ioi.task.corruptions import CORRUPTIONS
from ioi.task.defaults import ASSETS, DEFAULT_MODEL

st.title("IOI Circuit Lab")
st.write(
    "Reproduce and extend *Neuroplasticity and Corruption in Model Mechanisms: A Case Study of "
    "Indirect Object Identification* (Chhabra et al. 2025, arXiv 2503.01896): fine-tune a model on "
    "the IOI task, on toxic versions of it and back again, and watch its circuit change."
)

model_col, task_col = st.columns([1, 2])
with model_col:
    st.subheader("Model")
    run = clean_run("dla")
    name = run.model if run is not None else DEFAULT_MODEL
    dla = result(run, 0, "dla") if run is not None else None
    shape = (
        "{} layers × {} heads".format(*shape_of(dla.heads)) if dla is not None else "no results cached yet"
    )
    st.markdown(f"**{name}** — {shape}; the results shown come from the demo cache (no model is loaded).")
    card = ASSETS / name / "MODEL_CARD.md"
    if card.exists():
        # a dialog, full width: inside this narrow column the card's tables were a page tall
        show_card = st.dialog(f"{name}: model card", width="large")(lambda: st.markdown(card.read_text()))
        if st.button("Model card", key="model_card", icon=":material/description:"):
            show_card()
with task_col:
    st.subheader("The task")
    example = dataset("clean", 1, 0, "eval")[0]
    st.markdown(f"{highlighted(example.prompt, role_words(example))} → **{example.io}**")
    st.write(
        "The model must complete the prompt with the indirect object (IO), not the repeated subject "
        "(S). The logit difference logit(IO) − logit(S) at the last token (END) measures how well."
    )

st.subheader("Reference: GPT-2 small's published circuit")
left, right = st.columns([3, 2])
with left:
    st.graphviz_chart(circuit_dot(GPT2_SMALL_CIRCUIT))
    st.caption(
        "Reference, not this model: the head classes of the IOI circuit in GPT-2 small (Wang et al. 2022) "
        "and the inputs through which each class feeds the next; arrows point downstream. The Circuit "
        f"page shows the classes found in {name} itself."
    )
with right:
    st.markdown(
        "- **Previous-token** heads copy S1 into S1+1.\n"
        "- **Duplicate-token** and **induction** heads notice at S2 that S appeared before.\n"
        "- **S-inhibition** heads carry that to END and steer the name movers' queries away from S.\n"
        "- **Name movers** attend to IO and copy it to the logits; **negative name movers** push "
        "against it; **backup name movers** take over when name movers are knocked out."
    )
    st.page_link("app_pages/circuit.py", label=f"The circuit found in {name}", icon=":material/hub:")

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
st.caption("These are the paper's claims for GPT-2 small. This project's verdicts on its own model:")
st.page_link(
    "app_pages/findings.py",
    label="The three findings, judged with 95% intervals",
    icon=":material/fact_check:",
)

st.subheader("Guided tour")
st.write("The three findings, one step at a time, on the demo results; each step opens its detailed view.")
show_user_errors(tour)
st.page_link("app_pages/experiments.py", label="Then run your own experiment", icon=":material/science:")

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
