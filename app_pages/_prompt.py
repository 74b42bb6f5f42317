"""Checkpoints a page can run a prompt on, and their live results, cached per (checkpoint, prompt).

A checkpoint is an experiment's epoch; its weights are the base model (epoch 0), the toxic parent's
last checkpoint (a reversal's epoch 0) or a checkpoint directory in the demo or the user's cache
(`ioi.runs.catalog.checkpoint_weights`). The results come from `ioi.methods.prompt`; torch is
imported only when one is computed, so the pages that use this module open without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from app_pages._live import loaded_model
from app_pages._store import Experiment, clean_run, experiments, reversal_of, roots, toxic_run
from app_pages._ui import heads_with_labels, parse_checkpoint
from app_pages._views import memoised
from ioi.present import prompt_charts

DATASET_PROMPTS = 30
"""How many evaluation prompts the Playground offers to pick from."""


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint as the pages show it: the experiment, the epoch and what to load (None: no
    cache holds its weights)."""

    exp: Experiment
    epoch: int
    source: str | None

    @property
    def key(self) -> str:
        """ "<id>:<epoch>", as the URL writes it."""
        return f"{self.exp.id}:{self.epoch}"

    @property
    def label(self) -> str:
        return self.exp.checkpoint_label(self.epoch)

    @property
    def stamp(self) -> float:
        """Changes when the weights are re-created (a cache key)."""
        manifest = Path(self.source or "") / "manifest.json"
        return manifest.stat().st_mtime if self.source and manifest.is_file() else 0.0


def panel_names(chosen: list[Checkpoint]) -> dict[str, str]:
    """Each checkpoint's panel title (its label; with its experiment's id where two share one)."""
    labels = [c.label for c in chosen]
    return {c.key: c.label if labels.count(c.label) == 1 else f"{c.label} ({c.exp.id[:8]})" for c in chosen}


@st.cache_data(ttl=3, show_spinner=False)
def _sources(ids: tuple[str, ...], root_list: tuple[str, ...]) -> dict[str, str | None]:
    from ioi.runs.catalog import checkpoint_weights

    out = {}
    for exp in experiments():
        for epoch in exp.epochs:
            out[f"{exp.id}:{epoch}"] = checkpoint_weights([Path(r) for r in root_list], exp.id, epoch)
    return out


def checkpoints(runnable: bool = True) -> list[Checkpoint]:
    """Every cached checkpoint of every experiment (only those with weights when `runnable`), in
    the experiments' order (clean runs first), epochs ascending."""
    found = _sources(tuple(e.id for e in experiments()), tuple(str(r) for r in roots()))
    out = [
        Checkpoint(e, epoch, found.get(f"{e.id}:{epoch}"))
        for e in experiments()
        for epoch in sorted(e.epochs)
    ]
    return [c for c in out if c.source is not None or not runnable]


def checkpoint(key: str | None, runnable: bool = True) -> Checkpoint | None:
    """The checkpoint "<id>:<epoch>", or None when unknown (or without weights when `runnable`)."""
    exp_id, epoch = parse_checkpoint(key)
    return next((c for c in checkpoints(runnable) if (c.exp.id, c.epoch) == (exp_id, epoch)), None)


def default_checkpoints() -> list[Checkpoint]:
    """The story's three, where their weights are at hand: the pretrained model (the clean run's
    epoch 0), the subject-duplication model (its last epoch) and its reversal (last epoch)."""
    clean, toxic = clean_run(), toxic_run("subject_duplication") or toxic_run()
    reversal = reversal_of(toxic)
    wanted = [
        (clean, 0),
        (toxic, toxic.last_epoch if toxic else 0),
        (reversal, reversal.last_epoch if reversal else 0),
    ]
    found = [checkpoint(f"{e.id}:{epoch}") for e, epoch in wanted if e is not None]
    out = [c for c in found if c is not None]
    return out or checkpoints()[:1]


@st.cache_resource(max_entries=1024, show_spinner=False)  # one object per reading: views memoise on it
def _reading(source: str, stamp: float, seed: int, prompt: str, io: str, s: str, k: int):
    from ioi.methods.prompt import prompt_batch, read_prompt
    from ioi.models.threads import one_thread

    model = loaded_model(source, "cpu", seed)
    batch = prompt_batch(model, prompt, io, s)
    with one_thread():  # one short prompt: a second thread costs more than it gives (BENCHMARKS.md)
        return read_prompt(model, batch, k)


def reading(ck: Checkpoint, prompt: str, io: str, s: str, k: int = 10):
    """`ioi.methods.prompt.read_prompt` of the prompt on this checkpoint, cached per (checkpoint,
    prompt, roles, k): a prompt run again is answered from the cache, by the same object (never
    to be changed), so the views drawn from it are memoised too. DatasetError (a name the model
    does not know, a prompt too long) passes to the caller."""
    return _reading(str(ck.source), ck.stamp, int(ck.exp.config.get("seed", 0)), prompt, io, s, k)


@memoised
def prompt_views(readings: list, names: list[str], io: str, s: str, cell: int | None) -> tuple:
    """The Playground's charts of one prompt on several checkpoints (`readings`, one panel each,
    titled `names`): ((next-token bars, their data), (DLA heatmaps, their data)); a prompt run
    again draws the same chart objects (`memoised`), whose specs are converted already."""
    top = prompt_charts.stack(dict(zip(names, (r.top for r in readings))))
    heads = prompt_charts.stack(dict(zip(names, (r.heads for r in readings))))
    bars = prompt_charts.top_tokens_bars(top, io, s, title="next token", panels=names)
    heatmaps = prompt_charts.head_heatmaps(heads, names, value_title="DLA (logits)", cell=cell)
    return (bars, top), (heatmaps.configure_legend(orient="bottom"), heads_with_labels(heads))


@memoised
def pattern_views(
    readings: list, names: list[str], layer: int, head: int, title: str, width: int
) -> tuple:  # fmt: skip
    """Head (`layer`, `head`)'s attention on one prompt at several checkpoints (`readings`, one
    panel each, titled `names`): ((token × token grids, their data), (END-row bars, their
    data)), each panel at most `width` px wide; memoised like `prompt_views`."""
    from ioi.methods.prompt import end_row, pattern_frame

    shared = len({r.tokens for r in readings}) == 1  # one tokenizer: the token axes drawn once
    grid = prompt_charts.stack({n: pattern_frame(r, layer, head) for n, r in zip(names, readings)})
    row = prompt_charts.stack({n: end_row(r, layer, head) for n, r in zip(names, readings)})
    return (
        (prompt_charts.attention_grid(grid, title=title, max_width=width, panels=names, shared=shared), grid),
        (prompt_charts.end_row_bars(row, title=f"{title} from END", width=width, panels=names, shared=shared),
         row),
    )  # fmt: skip


@st.cache_data(max_entries=8, show_spinner=False)
def _unknown(source: str, seed: int, prompt: str) -> list[str]:
    from ioi.task.data import IOISample, unknown_words

    model = loaded_model(source, "cpu", seed)
    return unknown_words(model.tokenizer, [IOISample(prompt, "", "", "", "")])


def unknown_words(ck: Checkpoint, prompt: str) -> list[str]:
    """The prompt's words this checkpoint's tokenizer reads as its unknown token."""
    return _unknown(str(ck.source), int(ck.exp.config.get("seed", 0)), prompt)


@st.cache_data(max_entries=64, show_spinner="Measuring every head on the experiment's prompts…")
def _profile(source: str, stamp: float, seed: int, analysis_size: int, eval_size: int):
    from ioi.methods.prompt import head_profile, samples_batch
    from ioi.task.names import analysis_samples

    model = loaded_model(source, "cpu", seed)
    return head_profile(model, samples_batch(model, analysis_samples(seed, analysis_size, eval_size)))


def profile(ck: Checkpoint):
    """`ioi.methods.prompt.head_profile` of this checkpoint on its experiment's analysis prompts
    (those its cached analyses used), cached per checkpoint."""
    c = ck.exp.config
    return _profile(
        str(ck.source),
        ck.stamp,
        int(c.get("seed", 0)),
        int(c.get("analysis_size", 100)),
        int(c.get("eval_size", 500)),
    )


@st.cache_data(show_spinner=False)
def dataset_prompts(seed: int = 0, n: int = DATASET_PROMPTS) -> list[dict[str, str]]:
    """The first `n` evaluation prompts (held-out names, as the experiments analyse) as
    {prompt, io, s}."""
    from ioi.task.names import analysis_samples

    return [{"prompt": x.prompt, "io": x.io, "s": x.s} for x in analysis_samples(seed, n)]
