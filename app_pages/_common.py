"""Streamlit glue shared by every page: cached loaders, the sidebar pickers and chart output.

Every `st.cache_resource` / `st.cache_data` wrapper of the dashboard lives here, and every argument
that changes a result is part of its cache key: cached results are keyed by the entry file's
modification time too, so a recomputed entry is never served stale. Pages only lay out widgets and
call these helpers; all computation is in `ioi/`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from ioi.present import charts
from ioi.task.circuit import GPT2_SMALL_CIRCUIT, Circuit

REPO = Path(__file__).resolve().parent.parent
MODELS = ("ioi-tiny", "random:tiny", "random:gpt2", "gpt2")
SHORT = {"name_moving": "name moving", "subject_duplication": "subject duplication"}


class UserError(ValueError):
    """Something the user can fix (a bad field, a missing result); shown as a message, not a trace."""


# ---------------------------------------------------------------- the cache / jobs layer


def cache_layer() -> Any | None:
    """The result-cache module (`ioi.runs.cache`), or None while it is not installed in this build."""
    try:
        import ioi.runs.cache as cache
        import ioi.runs.experiment  # noqa: F401  (needed by every page that shows experiments)
        import ioi.runs.jobs  # noqa: F401
    except ImportError:
        return None
    return cache


def user_root() -> Path:
    """Where new experiments are written: $IOI_CACHE_DIR or ./cache (as `ioi.runs.cache.cache_root`)."""
    return Path(os.environ.get("IOI_CACHE_DIR", REPO / "cache")).resolve()


def demo_root() -> Path:
    """The shipped demo results, cache/demo; $IOI_DEMO_DIR points elsewhere (tests use a small one)."""
    return Path(os.environ.get("IOI_DEMO_DIR", REPO / "cache" / "demo")).resolve()


def roots() -> list[Path]:
    """The shipped demo cache (when present) and the user's cache."""
    out = [demo_root()] if (demo_root() / "experiments").is_dir() else []
    return out + ([user_root()] if user_root() not in out else [])


@dataclass(frozen=True)
class Experiment:
    """An experiment as the pages show it: where it is cached, its config and cached epochs."""

    root: str
    id: str
    config: dict[str, Any]
    status: str
    epochs: dict[int, list[str]]
    job: str | None

    @property
    def key(self) -> str:
        return f"{self.root}|{self.id}"

    @property
    def demo(self) -> bool:
        return Path(self.root) == demo_root()

    @property
    def scenario(self) -> str:
        return str(self.config.get("scenario", "?"))

    @property
    def label(self) -> str:
        c = self.config
        where = "demo" if self.demo else "yours"
        return (
            f"{SHORT.get(self.scenario, self.scenario)} · {c.get('model', '?')} · "
            f"{c.get('epochs', '?')} ep · seed {c.get('seed', '?')} · {where} · {self.id[:8]}"
        )

    def epochs_with(self, name: str) -> list[int]:
        return sorted(e for e, names in self.epochs.items() if name in names)


@st.cache_data(ttl=3, show_spinner=False)
def _experiments(root_list: tuple[str, ...]) -> list[Experiment]:
    from ioi.runs.catalog import list_experiments

    out: list[Experiment] = []
    for root in root_list:
        if not (Path(root) / "experiments").is_dir():
            continue
        for info in list_experiments(root):
            out.append(Experiment(root, info.id, info.config, info.status, info.epochs, info.job))
    return out


def experiments() -> list[Experiment]:
    """Every experiment in the demo and the user's cache (refreshed every few seconds)."""
    if cache_layer() is None:
        return []
    return _experiments(tuple(str(r) for r in roots()))


def entry_stamp(exp: Experiment, epoch: int, name: str) -> float:
    """Modification time of an entry's JSON (0 if absent): part of every result cache key."""
    path = Path(exp.root) / "experiments" / exp.id / f"epoch-{epoch:03d}" / f"{name}.json"
    return path.stat().st_mtime if path.exists() else 0.0


@st.cache_data(max_entries=256, show_spinner=False)
def _result(root: str, exp_id: str, epoch: int, name: str, stamp: float):
    from ioi.methods.analyses import AnalysisResult

    entry = cache_layer().read_entry(root, exp_id, epoch, name)
    if entry is None:
        return None
    tables = dict(entry.tables)
    heads = tables.pop("heads", pd.DataFrame(columns=["layer", "head", "value"]))
    return AnalysisResult(entry.summary.get("method", name), heads, entry.summary.get("summary", {}), tables)


def result(exp: Experiment, epoch: int, name: str):
    """The cached AnalysisResult of `name` at `epoch`, or None when absent. A damaged entry raises
    `UserError` (the page offers to recompute it)."""
    cache = cache_layer()
    try:
        return _result(exp.root, exp.id, epoch, name, entry_stamp(exp, epoch, name))
    except cache.CorruptEntry as err:
        raise UserError(f"The cached {name} result at epoch {epoch} is damaged ({err}).") from None


@st.cache_data(max_entries=64, show_spinner=False)
def _series(root: str, exp_id: str, stamp: float) -> pd.DataFrame:
    return cache_layer().load_metrics_series(root, exp_id)


def series(exp: Experiment) -> pd.DataFrame:
    """Metrics and analysis scalars across epochs (one row per cached epoch)."""
    folder = Path(exp.root) / "experiments" / exp.id
    stamp = max((p.stat().st_mtime for p in folder.glob("epoch-*/*.json")), default=0.0)
    return _series(exp.root, exp.id, stamp)


def result_circuit(exp: Experiment, epoch: int, n_layers: int, n_heads: int) -> Circuit | None:
    """The circuit to outline: the one the faithfulness / knockout analysis used at this checkpoint,
    else the published GPT-2 circuit on 12×12 models."""
    for name in ("faithfulness", "knockout"):
        try:
            found = result(exp, epoch, name)
        except UserError:
            continue
        if found is not None and isinstance(found.summary.get("circuit"), dict):
            return Circuit.from_json(found.summary["circuit"])
    return GPT2_SMALL_CIRCUIT if (n_layers, n_heads) == (12, 12) else None


def recompute_button(exp: Experiment, name: str, key: str) -> None:
    """Offer to recompute a missing or damaged entry by re-running its experiment as a job."""
    if st.button(f"Recompute {name}", key=key, help="re-runs the experiment's job; cached parts are reused"):
        from ioi.runs.experiment import ExperimentConfig
        from ioi.runs.jobs import submit

        cfg = ExperimentConfig.from_json(exp.config)
        analyses = tuple(dict.fromkeys((*cfg.analyses, name)))
        job = submit(ExperimentConfig.from_json(exp.config | {"analyses": list(analyses)}), exp.root)
        st.success(f"Job {job} started; follow it on the Experiments page.")


def result_or_offer(exp: Experiment, epoch: int, name: str):
    """The cached result, or None after saying it is missing or damaged, with a recompute button."""
    try:
        found = result(exp, epoch, name)
    except UserError as err:
        st.error(f"{err} It can be recomputed.", icon="⚠️")
        found = None
    else:
        if found is None:
            st.warning(f"No {name} result is cached at epoch {epoch} of experiment {exp.id[:8]}.", icon="⚠️")
    if found is None:
        recompute_button(exp, name, f"recompute-{name}-{exp.id}-{epoch}")
    return found


# ---------------------------------------------------------------- pickers


def pick_experiment(
    label: str, key: str, *, analysis: str | None = None, where=st.sidebar, scenario: str | None = None
) -> Experiment | None:
    """A selectbox of experiments (only those with `analysis` cached, when given); defaults to the
    experiment opened from the Experiments page."""
    found = [
        e
        for e in experiments()
        if (analysis is None or e.epochs_with(analysis)) and (scenario is None or e.scenario == scenario)
    ]
    if not found:
        return None
    keys = [e.key for e in found]
    opened = st.session_state.get("opened_experiment")
    index = keys.index(opened) if opened in keys else 0
    chosen = where.selectbox(
        label, keys, index=index, key=key, format_func=lambda k: found[keys.index(k)].label
    )
    return found[keys.index(chosen)]


def pick_epoch(
    exp: Experiment, name: str, label: str, key: str, *, where=st.sidebar, last: bool = True
) -> int:
    """A selectbox of the epochs at which `name` is cached (0 = the starting model)."""
    epochs = exp.epochs_with(name)
    return where.selectbox(
        label, epochs, index=len(epochs) - 1 if last else 0, key=key,
        format_func=lambda e: "0 (before fine-tuning)" if e == 0 else str(e),
    )  # fmt: skip


def empty_state(what: str, how: str) -> None:
    """Say that there is nothing to show and what to run to get it."""
    st.info(f"**No {what} yet.** {how}", icon="ℹ️")


def no_cache_layer() -> bool:
    """Show an empty state and return True when the cache/jobs layer is missing from this build."""
    if cache_layer() is not None:
        return False
    empty_state(
        "experiment results",
        "This build has no result cache (ioi/cache.py); update the project, then run "
        "`python -m ioi precompute` or launch an experiment on the Experiments page.",
    )
    return True


def show_user_errors(fn: Callable[[], None]) -> None:
    """Run a page body; a user's error (ValueError and kin) is shown as a message, not a trace."""
    from ioi.models.load import ModelUnavailableError

    try:
        fn()
    except (UserError, ValueError, FileNotFoundError, ModelUnavailableError) as err:
        st.error(str(err), icon="⚠️")


# ---------------------------------------------------------------- models and live analyses


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def loaded_model(name: str, device: str = "cpu", seed: int = 0):
    """A model for live analyses; (name, device, seed) is the cache key."""
    import torch

    from ioi.models.load import load_model

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return load_model(name, device=device, seed=seed)


def model_or_message(name: str, seed: int = 0):
    """The loaded model, or None after showing why it cannot be loaded and how to fix it."""
    from ioi.models.load import ModelUnavailableError

    try:
        return loaded_model(name, "cpu", seed)
    except (ModelUnavailableError, OSError, ValueError) as err:
        st.warning(f"Model {name!r} is not available here: {err}", icon="⚠️")
        return None


@st.cache_data(max_entries=64, show_spinner="Computing…")
def live_analysis(
    model_name: str, name: str, options_json: str, *, size: int = 100, data_seed: int = 0,
    other_name: str | None = None, seed: int = 0,
):  # fmt: skip
    """Run analysis `name` on `size` eval prompts (and their ABC counterfactuals) of `model_name`
    (and `other_name` for comparisons); options come as canonical JSON so they are in the key."""
    from ioi.methods.analyses import run_analysis
    from ioi.task.data import abc_counterfactual, make_dataset, tokenize

    model = loaded_model(model_name, "cpu", seed)
    other = loaded_model(other_name, "cpu", seed) if other_name else None
    samples = make_dataset(size, data_seed, "eval")
    clean = tokenize(samples, model.tokenizer)
    abc = tokenize(abc_counterfactual(samples, data_seed), model.tokenizer, like=clean)
    return run_analysis(name, model, clean, abc, other=other, **json.loads(options_json))


def model_sources() -> dict[str, str]:
    """Models live analyses can load: the named ones and every fine-tuning checkpoint whose weights
    are on disk (the demo cache keeps no weights). Maps a name or directory to a label."""
    out = {m: m for m in MODELS}
    for exp in experiments():
        folder = Path(exp.root) / "experiments" / exp.id / "checkpoints"
        for ckpt in sorted(folder.glob("epoch-[0-9][0-9][0-9]")):
            if (ckpt / "manifest.json").exists():
                out[str(ckpt)] = f"{exp.label} · epoch {int(ckpt.name.split('-')[1])}"
    return out


def pick_model(label: str, key: str, where=st.sidebar) -> str:
    """A selectbox of `model_sources()`, defaulting to the model of the cached experiments."""
    sources = model_sources()
    names = list(sources)
    return where.selectbox(label, names, index=names.index(default_model()), key=key, format_func=sources.get)


def default_model() -> str:
    """The model of the cached experiments (the demo's), else the bundled default."""
    from ioi.models.load import DEFAULT_MODEL

    cached = [str(e.config.get("model")) for e in experiments()]
    return cached[0] if cached and cached[0] in MODELS else DEFAULT_MODEL


def run_button(label: str, key: str, inputs: Any, where=st) -> bool:
    """A button whose click is remembered while `inputs` stay the same, so a live result stays on
    screen when other widgets rerun the page (and is dropped once the inputs change)."""
    state = f"ran::{key}"
    if where.button(label, key=key):
        st.session_state[state] = repr(inputs)
    return st.session_state.get(state) == repr(inputs)


def live_available(name: str) -> bool:
    """Whether analysis `name` is registered in this build."""
    from ioi.methods.analyses import load_builtin_analyses

    return name in load_builtin_analyses()


def parse_heads(text: str, n_layers: int, n_heads: int) -> list[str]:
    """ "9.9 10.0" (or comma-separated) -> ["9.9", "10.0"]; UserError for a head outside an
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


# ---------------------------------------------------------------- chart output


def show_chart(chart: alt.TopLevelMixin, data: pd.DataFrame, caption: str, key: str) -> None:
    """The chart, its caption, and downloads: CSV of `data`, PNG and SVG of the chart."""
    # Streamlit fits the whole chart (title, axes, legend) into `height`, and collapses ordinal
    # axes without one: pass the plot's own height plus room for the rest.
    height = chart.to_dict(validate=False).get("height")
    st.altair_chart(chart, width="stretch", height=height + 130 if isinstance(height, int) else "content")
    st.caption(caption)
    cols = st.columns([1, 1, 1, 5])
    cols[0].download_button(
        "CSV", data.to_csv(index=False), file_name=f"{key}.csv", mime="text/csv", key=f"{key}-csv",
        on_click="ignore", icon=":material/download:",
    )  # fmt: skip
    cols[1].download_button(
        "PNG", lambda: charts.chart_bytes(chart, "png"), file_name=f"{key}.png", mime="image/png",
        key=f"{key}-png", on_click="ignore", icon=":material/image:",
    )  # fmt: skip
    cols[2].download_button(
        "SVG", lambda: charts.chart_bytes(chart, "svg"), file_name=f"{key}.svg", mime="image/svg+xml",
        key=f"{key}-svg", on_click="ignore", icon=":material/image:",
    )  # fmt: skip


def heads_with_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """A per-head table with an L.H column first, for display and CSV."""
    out = frame.copy()
    out.insert(0, "L.H", charts.head_labels(out))
    return out


# ---------------------------------------------------------------- datasets

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


# ---------------------------------------------------------------- the experiment form


def parse_epochs(text: str, epochs: int) -> tuple[int, ...]:
    """ "1, 3, 5" -> (1, 3, 5); UserError unless every item is an integer in 1..epochs."""
    from ioi.models.checks import parse_epochs as parse

    try:
        return parse(text, epochs)
    except ValueError as err:
        raise UserError(str(err)) from None


def parse_lr(text: str) -> float:
    """A positive learning rate such as 1e-4; UserError otherwise."""
    try:
        lr = float(text)
    except ValueError:
        raise UserError(f"{text!r} is not a number; write the learning rate like 1e-4") from None
    if not 0 < lr < 1:
        raise UserError("the learning rate must be between 0 and 1 (e.g. 1e-5 for GPT-2, 1e-4 for ioi-tiny)")
    return lr


def experiment_config(form: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    """The ExperimentConfig of the experiment form's values, or (None, {field: message}) listing
    every field the user must fix."""
    from ioi.runs.experiment import ExperimentConfig, ExperimentError

    errors: dict[str, str] = {}
    model = str(form.get("model", "")).strip()
    if not model:
        errors["model"] = "choose a model or give the path of a local model directory"
    elif model not in MODELS and not Path(model).expanduser().is_dir():
        errors["model"] = f"{model!r} is neither a known model nor an existing directory"
    epochs = int(form.get("epochs", 0))
    if not 1 <= epochs <= 100:
        errors["epochs"] = "epochs must be between 1 and 100"
    checkpoints: tuple[int, ...] = ()
    try:
        checkpoints = parse_epochs(str(form.get("checkpoints", "")), max(epochs, 1))
    except UserError as err:
        errors["checkpoints"] = str(err)
    lr = 0.0
    try:
        lr = parse_lr(str(form.get("lr", "")))
    except UserError as err:
        errors["lr"] = str(err)
    scenario = form.get("scenario", "clean")
    parent = form.get("parent") if scenario == "reversal" else None
    if scenario == "reversal" and not parent:
        errors["parent"] = "a reversal starts from a toxic experiment: run one first, then pick it here"
    if errors:
        return None, errors
    cfg = ExperimentConfig(
        model=model, scenario=scenario, epochs=epochs, checkpoint_epochs=checkpoints,
        seed=int(form.get("seed", 0)), lr=lr, batch_size=int(form.get("batch_size", 32)),
        train_size=int(form.get("train_size", 6360)), eval_size=int(form.get("eval_size", 500)),
        analysis_size=int(form.get("analysis_size", 100)), parent=parent,
        analyses=tuple(form.get("analyses", ())),
    )  # fmt: skip
    try:
        cfg.validate()
    except ExperimentError as err:
        return None, {"form": str(err)}
    return cfg, {}
