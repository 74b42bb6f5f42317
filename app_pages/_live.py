"""Live analyses: loading a model and running a registered analysis on it from a page.

torch and TransformerLens are imported only inside these functions, when a user asks for a live
result (`live_section` gates every live part of a page), so pages of cached results open fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import streamlit as st

from app_pages._store import UserError, clean_run, experiments

MODELS = ("ioi-tiny", "random:tiny", "random:gpt2", "gpt2")


def live_section(title: str, key: str, body: Callable[[], None], help: str) -> None:
    """A subheader and a toggle that turns on a page's live part (loads a model on first use)."""
    st.subheader(title)
    if st.toggle("Run live on a model", key=key, help=help):
        body()


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def loaded_model(name: str, device: str = "cpu", seed: int = 0):
    """A model for live analyses; (name, device, seed) is the cache key."""
    import torch

    from ioi.models.load import load_model
    from ioi.task.defaults import torch_threads

    torch.set_num_threads(torch_threads())  # as the CLI and jobs: one per core thrashes a shared CPU
    return load_model(name, device=device, seed=seed)


def model_or_message(name: str, seed: int = 0):
    """The loaded model, or None after showing why it cannot be loaded and how to fix it."""
    from ioi.models.load import ModelUnavailableError

    try:
        return loaded_model(name, "cpu", seed)
    except (ModelUnavailableError, OSError, ValueError) as err:
        st.warning(f"Model {model_sources().get(name, name)!r} is not available here: {err}", icon="⚠️")
        return None


@st.cache_data(max_entries=64, show_spinner="Computing…")
def live_analysis(
    model_name: str, name: str, options_json: str, *, size: int = 100, data_seed: int = 0,
    other_name: str | None = None, seed: int = 0,
):  # fmt: skip
    """Run analysis `name` on `size` eval prompts (and their ABC counterfactuals) of `model_name`
    (and `other_name` for comparisons); options come as canonical JSON so they are in the key."""
    from ioi.methods.analyses import run_analysis

    model = loaded_model(model_name, "cpu", seed)
    other = loaded_model(other_name, "cpu", seed) if other_name else None
    clean, abc = batches(model_name, size, data_seed, seed)
    return run_analysis(name, model, clean, abc, other=other, **json.loads(options_json))


@st.cache_resource(max_entries=8, show_spinner=False)
def batches(model_name: str, size: int, data_seed: int = 0, seed: int = 0):
    """(clean, ABC) batches of `size` eval prompts for a loaded model: the same objects for every
    live analysis of that model, so what analyses share (the circuit classified on them, their
    prepared passes) is computed once."""
    from ioi.task.data import abc_counterfactual, make_dataset, tokenize

    tokenizer = loaded_model(model_name, "cpu", seed).tokenizer
    samples = make_dataset(size, data_seed, "eval")
    clean = tokenize(samples, tokenizer)
    return clean, tokenize(abc_counterfactual(samples, data_seed), tokenizer, like=clean)


def model_sources() -> dict[str, str]:
    """Models live analyses can load: the named ones and every fine-tuning checkpoint whose weights
    are on disk (the demo cache keeps no weights). Maps a name or directory to a label (never a path)."""
    from ioi.models.train import checkpoint_dir
    from ioi.runs.experiment import checkpoints_dir

    out = {m: m for m in MODELS}
    for exp in experiments():
        for epoch in sorted(exp.epochs):
            ckpt = checkpoint_dir(checkpoints_dir(exp.root, exp.id), epoch)
            if (ckpt / "manifest.json").exists():
                out[str(ckpt)] = f"{exp.label} · {exp.epoch_label(epoch)}"
    return out


def default_model() -> str:
    """The model of the story's clean run, else the bundled default."""
    from ioi.task.defaults import DEFAULT_MODEL

    run = clean_run()
    return run.model if run is not None and run.model in MODELS else DEFAULT_MODEL


def pick_model(label: str, key: str, where=st) -> str:
    """A selectbox of `model_sources()`, defaulting to the model of the cached experiments."""
    sources = model_sources()
    names = list(sources)
    return where.selectbox(label, names, index=names.index(default_model()), key=key, format_func=sources.get)


def run_button(label: str, key: str, inputs: Any, where=st) -> bool:
    """A button whose click is remembered while `inputs` stay the same, so a live result stays on
    screen when other widgets rerun the page (and is dropped once the inputs change)."""
    state = f"ran::{key}"
    if where.button(label, key=key):
        st.session_state[state] = repr(inputs)
    return st.session_state.get(state) == repr(inputs)


def parse_heads(text: str, n_layers: int, n_heads: int) -> list[str]:
    """ "1.4 1.7" (or comma-separated) -> ["1.4", "1.7"]; UserError for a head outside an
    n_layers × n_heads model, ValueError (saying the L.H form) for a malformed one."""
    from ioi.task.circuit import Head
    from ioi.task.circuit import parse_heads as parse

    heads = [Head.parse(t) for t in text.replace(",", " ").split()]  # the L.H form first
    try:
        return [str(h) for h in parse(heads, n_layers, n_heads)]
    except ValueError as err:
        raise UserError(str(err)) from None


def options_json(**options: Any) -> str:
    return json.dumps(options, sort_keys=True)


def example_heads(n_layers: int, n_heads: int) -> str:
    """Heads to suggest as an example in a head field: the story's discovered name movers when
    they fit this model, else the last layer's first heads."""
    from app_pages._store import circuit_at

    run = clean_run("faithfulness")
    circuit = circuit_at(run, 0) if run is not None else None
    movers = [h for h in (circuit.classes.get("name mover", ()) if circuit else ())
              if h.layer < n_layers and h.head < n_heads]  # fmt: skip
    heads = movers[:3] or [f"{n_layers - 1}.{h}" for h in range(min(2, n_heads))]
    return " ".join(map(str, heads))
