"""Datasets: browse clean, ABC and toxic samples with their IO / S1 / S2 / END words highlighted."""

import json

import pandas as pd
import streamlit as st

from app_pages._text import ROLE_COLORS, dataset, highlighted, role_words
from app_pages._ui import set_url, show_user_errors
from ioi.task.corruptions import CORRUPTIONS

st.title("Datasets")
st.write(
    "Every prompt names two people, repeats one (the subject S) and should be completed with the "
    "other (the indirect object IO). ABC prompts put three fresh names in the IO, S1 and S2 slots and "
    "carry no IOI signal; toxic datasets change the label the model is trained towards."
)
kinds = ["clean", "abc", *CORRUPTIONS]


def url_int(name: str, default: int, low: int, high: int) -> int:
    text = st.query_params.get(name, "")
    return min(max(int(text), low), high) if text.isdigit() else default


def body() -> None:
    q = st.query_params
    with st.form("dataset"):
        c = st.columns(4)
        kind = c[0].selectbox("Dataset", kinds, index=kinds.index(q["kind"]) if q.get("kind") in kinds else 0,
                              format_func=lambda k: k.replace("_", " "))  # fmt: skip
        splits = ["train", "eval"]
        split = c[1].selectbox(
            "Split", splits, index=splits.index(q["split"]) if q.get("split") in splits else 0
        )
        size = c[2].number_input(
            "Size", min_value=1, max_value=20000, value=url_int("size", 500, 1, 20000), step=100
        )
        seed = c[3].number_input(
            "Seed", min_value=0, max_value=2**31 - 1, value=url_int("seed", 0, 0, 2**31 - 1)
        )
        st.form_submit_button("Show")
    set_url(kind=kind, split=split, size=int(size), seed=int(seed))
    samples = dataset(kind, int(size), int(seed), split)
    # Roles come from the clean sample: the ABC prompt has other names in the same slots.
    clean = samples if kind != "abc" else dataset("clean", int(size), int(seed), split)
    if kind in CORRUPTIONS:
        st.info(f"**{kind.replace('_', ' ')}** (the project's reading): {CORRUPTIONS[kind].description}")
    table = pd.DataFrame([x.to_json() for x in samples])
    c = st.columns(4)
    c[0].metric("Prompts", len(samples))
    c[1].metric("Templates", table["template"].nunique())
    c[2].metric("Distinct IO names", table["io"].nunique())
    c[3].metric("Label ≠ IO", int((table["label"] != table["io"]).sum()))
    st.download_button(
        "Download JSONL", "\n".join(json.dumps(x.to_json()) for x in samples) + "\n",
        file_name=f"ioi-{kind}-{split}-{size}-seed{seed}.jsonl", mime="application/jsonl",
        on_click="ignore", icon=":material/download:",
    )  # fmt: skip
    legend = " ".join(f":{c}-background[{r}]" for r, c in ROLE_COLORS.items())
    st.markdown(f"First 15 prompts — {legend}; the label is what fine-tuning trains towards.")
    for x, ref in list(zip(samples, clean))[:15]:
        st.markdown(f"{highlighted(x.prompt, role_words(ref))} → **{x.label}**")
    st.subheader("All samples")
    st.dataframe(table, width="stretch", hide_index=True, height=320)


show_user_errors(body)
