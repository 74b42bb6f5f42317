"""Prompts for display: which word of a prompt is IO, S1, S2 and END, highlighted in markdown,
and the datasets the pages show (deterministic for size, seed and split; no torch)."""

from __future__ import annotations

import streamlit as st

ROLE_COLORS = {"IO": "blue", "S1": "red", "S2": "orange", "END": "green"}


def role_words(sample) -> dict[int, str]:
    """Word index -> role (IO, S1, S2, END) in `sample.prompt`, split as `re.split(r"(\\W+)")`.
    IO and S1 are the first mentions of those names, S2 the last mention of `s2`, END the last word."""
    import re

    words = re.split(r"(\W+)", sample.prompt)
    found: dict[int, str] = {}
    s2 = max((i for i, w in enumerate(words) if w == sample.s2), default=None)
    for role, name in (("IO", sample.io), ("S1", sample.s)):
        i = next((i for i, w in enumerate(words) if w == name and i != s2), None)
        if i is not None:
            found[i] = role
    if s2 is not None:
        found[s2] = "S2"
    last = max((i for i, w in enumerate(words) if w.strip() and re.match(r"\w", w)), default=None)
    if last is not None:
        found[last] = "END" if last not in found else f"{found[last]}/END"
    return found


def highlighted(prompt: str, roles: dict[int, str]) -> str:
    """Streamlit markdown of `prompt` with the words in `roles` on coloured backgrounds."""
    import re

    words = re.split(r"(\W+)", prompt)
    out = []
    for i, w in enumerate(words):
        role = roles.get(i)
        if role is None:
            out.append(w.replace("[", "\\[").replace("*", "\\*"))
        else:
            colour = ROLE_COLORS[role.split("/")[0]]
            out.append(f":{colour}-background[{w} ({role})]")
    return "".join(out)


@st.cache_data(max_entries=32, show_spinner=False)
def dataset(kind: str, size: int, seed: int, split: str) -> list:
    """Samples of `kind` ("clean", "abc" or a corruption name) — deterministic for (size, seed, split)."""
    from ioi.task.corruptions import corrupt
    from ioi.task.data import abc_counterfactual, make_dataset

    clean = make_dataset(size, seed, split)
    if kind == "clean":
        return clean
    if kind == "abc":
        return abc_counterfactual(clean, seed)
    return corrupt(clean, kind, seed)
