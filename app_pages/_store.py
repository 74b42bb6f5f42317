"""Cached results as the pages show them: the experiments of the demo and the user's cache with
lineage labels, and their entries, all read through the store (`ioi.runs.cache`, `ioi.runs.catalog`).

Every cache wrapper here keys a result by the entry's stamp (`cache.entry_stamp`), so a
recomputed entry is never served stale. Nothing here imports torch: the result pages open fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from ioi.present.charts import lineage
from ioi.runs import cache
from ioi.task.circuit import Circuit


class UserError(ValueError):
    """Something the user can fix (a bad field, a missing result); shown as a message, not a trace."""


def roots() -> list[Path]:
    """The demo cache (when it holds experiments) and the user's cache (`cache.cache_root`)."""
    demo = cache.demo_root()
    out = [demo] if (demo / "experiments").is_dir() else []
    return out + ([cache.cache_root()] if cache.cache_root() not in out else [])


@dataclass(frozen=True)
class Experiment:
    """An experiment as the pages show it: where it is cached, its config, cached epochs, its
    lineage (a reversal names the toxic run it starts from) and a label unique among all shown."""

    root: str
    id: str
    config: dict[str, Any]
    status: str
    epochs: dict[int, list[str]]
    job: str | None
    lineage: str
    label: str
    parent: str | None  # a reversal's toxic experiment id
    start: str  # what epoch 0 is: "pretrained", or a reversal's toxic model ("subject duplication, epoch 5")

    @property
    def demo(self) -> bool:
        return Path(self.root) == cache.demo_root()

    @property
    def scenario(self) -> str:
        return str(self.config.get("scenario", "?"))

    @property
    def model(self) -> str:
        return str(self.config.get("model", "?"))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def last_epoch(self) -> int:
        return max(self.epochs, default=0)

    def epochs_with(self, name: str) -> list[int]:
        return sorted(e for e, names in self.epochs.items() if name in names)

    def start_label(self) -> str:
        """What epoch 0 is: the pretrained model, or for a reversal the toxic model it starts from."""
        return self.start if self.scenario != "reversal" else f"toxic model: {self.start}"

    def epoch_label(self, epoch: int) -> str:
        return f"0 — {self.start_label()}" if epoch == 0 else f"epoch {epoch}"

    def checkpoint_label(self, epoch: int) -> str:
        """ "clean, epoch 5" / "clean, pretrained" / "toxic start: subject duplication, epoch 5"."""
        if epoch > 0:
            return f"{self.lineage}, epoch {epoch}"
        return f"toxic start: {self.start}" if self.scenario == "reversal" else f"{self.lineage}, pretrained"


def _plural(n: Any, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def unique_labels(base: list[str], configs: list[dict[str, Any]], ids: list[str]) -> list[str]:
    """`base` labels made distinct: a label shared by several experiments gets the config fields
    that tell them apart (lr, sizes, …), and the id as a last resort."""
    out = list(base)
    for label in set(base):
        group = [i for i, b in enumerate(base) if b == label]
        if len(group) < 2:
            continue
        keys = sorted({k for i in group for k in configs[i]} - {"analyses"})
        differ = [k for k in keys if len({repr(configs[i].get(k)) for i in group}) > 1]
        for i in group:
            extra = " · ".join(f"{k.replace('_', ' ')} {configs[i].get(k)}" for k in differ[:2])
            out[i] = f"{label} · {extra}" if extra else label
    if len(set(out)) < len(out):
        out = [f"{label} · {ids[i][:8]}" if out.count(label) > 1 else label for i, label in enumerate(out)]
    return out


@st.cache_data(ttl=3, show_spinner=False)
def _experiments(root_list: tuple[str, ...]) -> list[Experiment]:
    from ioi.runs.catalog import best_copies, list_experiments

    found = []
    for root in root_list:
        if (Path(root) / "experiments").is_dir():
            found += [(root, info) for info in list_experiments(root)]
    best = {info.id: (root, info) for root, info in best_copies(found)}
    scenario = {i: str(info.config.get("scenario")) for i, (_, info) in best.items()}
    length = {i: info.config.get("epochs", "?") for i, (_, info) in best.items()}
    models = {str(info.config.get("model")) for _, info in best.values()}
    rows = []
    for root, info in best.values():
        c, parent = info.config, info.config.get("parent")
        name = lineage(str(c.get("scenario")), scenario.get(str(parent)) if parent else None)
        label = f"{name} · {_plural(c.get('epochs', '?'), 'epoch')} · seed {c.get('seed', '?')}"
        label += f" · {c.get('model')}" if len(models) > 1 else ""
        label += "" if Path(root) == cache.demo_root() else " · yours"
        start = (
            f"{lineage(scenario.get(str(parent), '?'))}, epoch {length.get(str(parent), '?')}"
            if parent
            else ("pretrained")
        )
        rows.append((root, info, name, label, parent, start))
    labels = unique_labels([r[3] for r in rows], [r[1].config for r in rows], [r[1].id for r in rows])
    out = [
        Experiment(root, info.id, info.config, info.status, info.epochs, info.job, name, label, parent, start)
        for (root, info, name, _, parent, start), label in zip(rows, labels)
    ]
    order = ["clean", "name moving", "subject duplication", "duplication"]
    return sorted(out, key=lambda e: (not e.demo, _rank(e.lineage, order), -e.last_epoch, e.label))


def _rank(name: str, order: list[str]) -> tuple[int, int]:
    base = name.removeprefix("reversal of ")
    return (order.index(base) if base in order else len(order), name.startswith("reversal"))


def experiments() -> list[Experiment]:
    """Every experiment in the demo and the user's cache, clean runs first (refreshed every few
    seconds)."""
    return _experiments(tuple(str(r) for r in roots()))


@st.cache_data(ttl=3, show_spinner=False)
def _data_stamp(found: tuple[tuple[str, str], ...]) -> float:
    return max((cache.experiment_stamp(root, exp_id) for root, exp_id in found), default=0.0)


def data_stamp() -> float:
    """The latest entry stamp over every experiment shown: a cache key for views built from many
    (refreshed, like the list of experiments, every few seconds)."""
    return _data_stamp(tuple((e.root, e.id) for e in experiments()))


@st.cache_data(ttl=3, show_spinner=False)
def _stored_verdicts(root: str) -> tuple[list[dict[str, Any]], bool] | None:
    from ioi.runs.catalog import read_verdicts

    return read_verdicts(root)


VERDICT_WORDS = {True: "holds", False: "does not hold", None: "undetermined"}
"""A stored verdict's `holds` in words: `ioi.methods.verdicts.holds_word` (which imports torch)."""


def judged() -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """The findings stored with each cache shown (as `ioi.present.findings.verdict_json` writes
    them, with the cache as "root"), and the caches holding a clean run whose findings are missing
    or older than their results, each with "missing" or "stale". Judging is not done here: it
    needs torch."""
    found: list[dict[str, Any]] = []
    pending: list[tuple[Path, str]] = []
    studied = {Path(e.root) for e in experiments() if e.scenario == "clean"}
    for root in roots():
        stored = _stored_verdicts(str(root))
        found += [v | {"root": str(root)} for v in stored[0]] if stored else []
        if root in studied and (stored is None or not stored[1]):
            pending.append((root, "missing" if stored is None else "stale"))
    return found, pending


def by_id(exp_id: str | None) -> Experiment | None:
    return next((e for e in experiments() if e.id == exp_id), None)


def checkpoint_names(summary: dict) -> dict[str, str]:
    """A comparison's checkpoint labels ("subject_duplication 3") -> how a reader sees them
    ("subject duplication, epoch 3"), from the runs and epochs it compared; a label whose run is
    not in the cache, or that would no longer be distinct, stays as stored."""
    found = zip(summary.get("checkpoints", []), summary.get("experiments", []), summary.get("epochs", []))
    names = {raw: by_id(e).checkpoint_label(int(ep)) if by_id(e) else raw for raw, e, ep in found}
    return names if len(set(names.values())) == len(names) else {raw: raw for raw in names}


def lineage_default(scope: str) -> Experiment | None:
    """The run the Evolution page opens on: for a lineage, the subject-duplication family's toxic
    run (the story's); for one run's checkpoints, the clean run."""
    return toxic_run(analysis=scope) if scope == "compare-family" else clean_run(scope)


def clean_run(analysis: str | None = None) -> Experiment | None:
    """The run the story starts from: the longest clean run (demo first) with `analysis` cached."""
    found = [
        e for e in experiments() if e.scenario == "clean" and (analysis is None or e.epochs_with(analysis))
    ]
    return found[0] if found else None


def toxic_run(scenario: str | None = None, analysis: str | None = None) -> Experiment | None:
    """The first toxic run (of `scenario` if given; subject duplication preferred) with `analysis`."""
    found = [
        e for e in experiments()
        if e.scenario not in ("clean", "reversal") and (scenario is None or e.scenario == scenario)
        and (analysis is None or e.epochs_with(analysis))
    ]  # fmt: skip
    found.sort(key=lambda e: e.scenario != "subject_duplication")
    return found[0] if found else None


def reversal_of(toxic: Experiment | None) -> Experiment | None:
    return next((e for e in experiments() if toxic is not None and e.parent == toxic.id), None)


@st.cache_resource(max_entries=256, show_spinner=False)
def _result(root: str, exp_id: str, epoch: int, name: str, stamp: float):
    damaged: list[str] = []
    found = cache.load_analysis(root, exp_id, epoch, name, report=damaged.append)
    if damaged:
        raise UserError(f"The cached {name} result at epoch {epoch} is damaged ({damaged[0]}).")
    return found


def result(exp: Experiment, epoch: int, name: str):
    """The cached AnalysisResult of `name` at `epoch`, or None when absent. A damaged entry raises
    `UserError` (the page offers to recompute it). One object per entry, shared by every session
    and rerun (views memoise on it): never modify it."""
    return _result(exp.root, exp.id, epoch, name, cache.entry_stamp(exp.root, exp.id, epoch, name))


@st.cache_data(max_entries=64, show_spinner=False)
def _series(root: str, exp_id: str, stamp: float) -> pd.DataFrame:
    return cache.load_metrics_series(root, exp_id)


def series(exp: Experiment) -> pd.DataFrame:
    """Metrics and analysis scalars across epochs (one row per cached epoch)."""
    return _series(exp.root, exp.id, cache.experiment_stamp(exp.root, exp.id))


def circuit_at(exp: Experiment, epoch: int) -> Circuit | None:
    """The circuit the faithfulness (or knockout) analysis classified at this checkpoint."""
    for name in ("faithfulness", "knockout"):
        try:
            found = result(exp, epoch, name)
        except UserError:
            continue
        if found is not None and isinstance(found.summary.get("circuit"), dict):
            return Circuit.from_json(found.summary["circuit"])
    return None


def shape_of(heads: pd.DataFrame) -> tuple[int, int]:
    """(layers, heads) of a per-head table."""
    return int(heads["layer"].max()) + 1, int(heads["head"].max()) + 1
