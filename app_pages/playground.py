"""Playground: one prompt through up to three checkpoints — what each predicts, its logit
difference, which heads write it, and where a head looks."""

import streamlit as st

from app_pages._prompt import (
    Checkpoint,
    checkpoint,
    checkpoints,
    dataset_prompts,
    default_checkpoints,
    panel_names,
    pattern_views,
    prompt_views,
    reading,
)
from app_pages._prompt import unknown_words as prompt_unknown_words
from app_pages._ui import (
    empty_state,
    heatmap_opening_heads,
    set_url,
    show_chart,
    show_user_errors,
    url_value,
)
from ioi.task.prompt import EXAMPLE

st.title("Playground")
st.write(
    "Type an IOI prompt, or start from one of the evaluation prompts, and see what each checkpoint "
    "predicts next, its logit difference logit(IO) − logit(S), and which heads write it (direct "
    "logit attribution on this one prompt). Click a head in a heatmap to open its page."
)
MAX_CHECKPOINTS = 3
TOP_K = 8


def _pick_dataset_prompt() -> None:
    chosen = st.session_state.get("pg_example")
    if chosen:
        st.session_state["pg_prompt"] = chosen["prompt"]


def prompt_inputs() -> tuple[str, str, str]:
    """The prompt and its roles: from the URL, a picked dataset prompt or typed; IO and S found
    in the prompt unless typed."""
    examples = dataset_prompts()
    if "pg_prompt" not in st.session_state:
        st.session_state["pg_prompt"] = url_value("prompt") or EXAMPLE  # the paper's example
    st.selectbox(
        "Start from an evaluation prompt",
        examples,
        index=None,
        key="pg_example",
        on_change=_pick_dataset_prompt,
        format_func=lambda x: f"{x['prompt']} …  (IO {x['io']}, S {x['s']})",
        placeholder="pick one, or type your own below",
    )
    prompt = st.text_area("Prompt (it ends where the name should come)", key="pg_prompt", height=80)
    cols = st.columns([1.2, 1, 1])
    found = cols[0].toggle(
        "Find IO and S in the prompt",
        value=not url_value("io"),
        key="pg_find",
        help="S: the name said twice; IO: the name said once",
    )
    if found:
        from ioi.task.prompt import find_roles

        io, s = find_roles(prompt)
        cols[1].text_input("IO (found)", io, disabled=True, key=f"pg_io_found-{io}")
        cols[2].text_input("S (found)", s, disabled=True, key=f"pg_s_found-{s}")
    else:
        io = cols[1].text_input("IO (the name to predict)", url_value("io") or "", key="pg_io")
        s = cols[2].text_input("S (the repeated subject)", url_value("s") or "", key="pg_s")
    set_url(prompt=prompt.strip(), io=None if found else io, s=None if found else s)
    return prompt, io, s


def pick_checkpoints() -> list[Checkpoint]:
    """Up to three checkpoints with weights; default the story's three (URL key ``ck``)."""
    found = checkpoints()
    keys = [c.key for c in found]
    labels = {
        c.key: f"{c.exp.label} — {c.exp.start_label() if c.epoch == 0 else f'epoch {c.epoch}'}" for c in found
    }
    wanted = [k for k in (url_value("ck") or "").split(",") if k in keys]
    chosen = st.multiselect(
        f"Checkpoints (up to {MAX_CHECKPOINTS}; those whose weights are at hand)",
        keys,
        default=wanted or [c.key for c in default_checkpoints()],
        max_selections=MAX_CHECKPOINTS,
        format_func=labels.get,
        key="pg_checkpoints",
    )
    set_url(ck=",".join(chosen) or None)
    return [c for c in (checkpoint(k) for k in chosen) if c is not None]


def predictions(chosen: list[Checkpoint], prompt: str, io: str, s: str) -> dict[str, object]:
    """Each checkpoint's reading, after the vocabulary and length checks (an error stops here)."""
    from ioi.task.prompt import prompt_sample

    prompt_sample(prompt, io, s)  # the prompt's own mistakes first, before a model is loaded
    # IO and S themselves are refused with an error when they are not known (tokenize says which)
    unknown = sorted({w for c in chosen for w in prompt_unknown_words(c, prompt)} - {io, s})
    if unknown:
        st.warning(
            f"Not in the model's vocabulary, read as its unknown token: {', '.join(unknown)}.", icon="⚠️"
        )
    return {c.key: reading(c, prompt, io, s, TOP_K) for c in chosen}


def results(chosen: list[Checkpoint], found: dict, io: str, s: str, prompt: str) -> None:
    names = panel_names(chosen)
    panels = list(names.values())
    tag = "-".join(f"{c.exp.id[:8]}e{c.epoch}" for c in chosen)  # another set of panels: another chart
    cols = st.columns(len(chosen))
    for col, c in zip(cols, chosen):
        r = found[c.key]
        with col:
            st.markdown(f"**{names[c.key]}**")
            first = r.top["token"].iloc[0].strip()
            st.metric("logit difference", f"{r.logit_diff:.2f}", help="logit(IO) − logit(S) at END")
            st.metric("predicts", first, help="the most likely next token")
            st.caption(
                f"IO {io}: rank {r.io['rank']}, p = {r.io['prob']:.3f} · S {s}: rank {r.s['rank']}, "
                f"p = {r.s['prob']:.3f}"
            )
    (bars, top), (heatmaps, heads) = prompt_views(
        [found[c.key] for c in chosen], panels, io, s, 26 if len(chosen) > 2 else None
    )
    show_chart(
        bars,
        top,
        f"Each checkpoint's {TOP_K} most likely next tokens at END with their probabilities; IO blue, S red.",
        f"pg-top-{tag}",
    )
    st.subheader("Which heads write the answer")
    heatmap_opening_heads(
        heatmaps,
        heads,
        "Per-head direct logit attribution on logit(IO) − logit(S) at END for this prompt; blue pushes "
        "towards IO, red towards S. One colour scale for all panels. Click a cell to open that head's page.",
        f"pg-dla-{tag}",
        chosen[0].exp,
        chosen[0].epoch,
        panels={names[c.key]: (c.exp, c.epoch) for c in chosen},
        prompt=prompt,
    )


@st.fragment
def attention_viewer(chosen: list[Checkpoint], found: dict) -> None:
    """A head's pattern at each checkpoint; choosing another head reruns only this part."""
    st.subheader("Where a head looks")
    first = found[chosen[0].key]
    heads = [f"{la}.{h}" for la in range(first.patterns.shape[0]) for h in range(first.patterns.shape[1])]
    strongest = first.heads.loc[first.heads["value"].abs().idxmax()]
    default = (
        url_value("head")
        if url_value("head") in heads
        else f"{int(strongest['layer'])}.{int(strongest['head'])}"
    )
    head = st.selectbox(
        "Head (L.H)",
        heads,
        index=heads.index(default),
        key="pg_head",
        help="opens on the head with the largest |DLA| at the first checkpoint",
    )
    set_url(head=head)
    layer, h = map(int, head.split("."))
    names = panel_names(chosen)
    tag = "-".join(f"{c.exp.id[:8]}e{c.epoch}" for c in chosen)
    (grids, grid), (bars, row) = pattern_views(
        [found[c.key] for c in chosen], list(names.values()), layer, h, f"head {head}",
        260 if len(chosen) > 2 else 380,
    )  # fmt: skip
    show_chart(
        grids,
        grid,
        f"Attention of head {head}: each row a query token, each column the token it attends to "
        "(rows sum to 1). IO, S1, S2 and END are labelled in bold; the END row's cells on them "
        "are outlined in red.",
        f"pg-attn-{tag}",
    )
    show_chart(
        bars,
        row,
        f"Head {head}'s attention from END (the last token) over the prompt; IO blue, S red.",
        f"pg-end-{tag}",
    )


def body() -> None:
    prompt, io, s = prompt_inputs()
    chosen = pick_checkpoints()
    if not chosen:
        empty_state(
            "checkpoint chosen",
            "Pick at least one checkpoint above (the list holds those whose "
            "weights are in the demo or your cache).",
        )
        return
    found = predictions(chosen, prompt, io, s)
    results(chosen, found, io, s, prompt)
    attention_viewer(chosen, found)


show_user_errors(body)
