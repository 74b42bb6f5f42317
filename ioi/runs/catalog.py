"""The catalogue: every experiment of a cache root with its status and cached epochs, and the
findings judged on them (``<root>/verdicts.json``, written by :mod:`ioi.present.findings`).

Above the store (:mod:`ioi.runs.cache`) and the job index (:mod:`ioi.runs.jobs`), since a status
comes from the latest job when there is one.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ioi.runs.cache import (
    _ID,
    INDEX_NAME,
    CorruptEntry,
    cache_root,
    cached_epochs,
    check_writable,
    demo_roots,
    is_demo,
    read_experiment,
    sha256,
    write_atomic,
)
from ioi.runs.compare import COMPARE_FAMILY
from ioi.runs.index import IndexUnavailable
from ioi.runs.jobs import latest_jobs


@dataclass
class ExperimentInfo:
    """What the dashboard lists: id, hashed configuration, status and the cached epochs/entries."""

    id: str
    config: dict[str, Any]
    status: str
    epochs: dict[int, list[str]]
    job: str | None = None


def list_experiments(root: str | Path | None = None) -> list[ExperimentInfo]:
    """Every experiment under `root`, from the files (so a copied or shipped cache lists too).

    status is the latest job's status when there is one ('done' for a shipped cache without jobs).
    A damaged experiment.json hides only that experiment (with a warning); an index that cannot be
    read leaves the statuses to the files.
    """
    base = cache_root(root)
    jobs = {}
    if (base / INDEX_NAME).exists() and not is_demo(base):
        try:
            jobs = latest_jobs(base)
        except IndexUnavailable as err:
            warnings.warn(f"{err}; job statuses are not shown", stacklevel=2)
    out = []
    for path in sorted((base / "experiments").glob("*/experiment.json")):
        exp_id = path.parent.name
        if not _ID.fullmatch(exp_id):
            continue
        try:
            record = read_experiment(base, exp_id)
        except CorruptEntry as err:
            warnings.warn(f"{err}; experiment {exp_id} is not listed", stacklevel=2)
            continue
        job = jobs.get(exp_id)
        epochs = cached_epochs(base, exp_id)
        status = job.status if job else ("done" if epochs else "new")
        out.append(ExperimentInfo(exp_id, record["config"], status, epochs, job.id if job else None))
    return out


def search_roots(root: str | Path | None = None) -> list[Path]:
    """Where experiments are looked for: `root` (the user's cache), then the demo caches."""
    return list(dict.fromkeys([cache_root(root), *demo_roots()]))


def find_experiment(exp_id: str, root: str | Path | None = None) -> Path | None:
    """The cache holding experiment `exp_id` (of `search_roots`): the one with the most cached
    entries, the user's on a tie (a demo run's parent copy holds only weights, a comparison run on
    it only that entry, so the demo's results stay in view); None if none knows it."""
    found = [base for base in search_roots(root) if read_experiment(base, exp_id) is not None]
    return max(found, key=lambda base: _entries(cached_epochs(base, exp_id)), default=None)


def _entries(epochs: dict[int, list[str]]) -> int:
    return sum(len(names) for names in epochs.values())


def complete_id(prefix: str, root: str | Path | None = None) -> str:
    """The id of the one experiment (of `search_roots`) whose id starts with `prefix`, as listings
    print 8 characters; `prefix` itself when it is a whole id or none matches; ValueError naming
    them when several do. Only hex is looked up (a path-like "../x" is for `check_id` to refuse)."""
    if not _ID.fullmatch(prefix):
        return prefix
    names = {p.parent.name for base in search_roots(root)
             for p in (base / "experiments").glob(f"{prefix}*/experiment.json")}  # fmt: skip
    if prefix in names or not names:
        return prefix
    if len(names) > 1:
        listed = ", ".join(sorted(names))
        raise ValueError(f"{prefix} starts {len(names)} experiment ids ({listed}): give more of it")
    return names.pop()


def best_copies(found: Sequence[tuple[Path, ExperimentInfo]]) -> list[tuple[Path, ExperimentInfo]]:
    """One (cache, experiment) per id, as `find_experiment` chooses: the copy with the most cached
    entries, the first given on a tie; in the order given. The id hashes the configuration, so two
    copies are the same run."""
    best: dict[str, tuple[Path, ExperimentInfo]] = {}
    for pair in found:
        info = pair[1]
        if info.id not in best or _entries(info.epochs) > _entries(best[info.id][1].epochs):
            best[info.id] = pair
    kept = {id(pair) for pair in best.values()}
    return [pair for pair in found if id(pair) in kept]


VERDICTS = "verdicts.json"
VERDICT_INPUTS = ("cmap", "faithfulness", COMPARE_FAMILY)
"""The analyses the findings read (`ioi.present.findings`): stored verdicts are stale once one of
these entries is added, or when they were judged from other inputs (an older release's)."""


def fingerprint(root: str | Path | None = None, names: Sequence[str] | None = None) -> str:
    """A digest of what `root` holds: every experiment's id and cached entries (epoch, name; only
    the `names` given, e.g. those a judgement reads). A run that adds such an entry changes it, so
    findings judged before are known to be stale; entries of other analyses leave it alone."""
    def kept(entries: list[str]) -> list[str]:
        return sorted(n for n in entries if names is None or n in names)

    exps = list_experiments(root)
    held = sorted((e.id, sorted((epoch, kept(ns)) for epoch, ns in e.epochs.items())) for e in exps)
    return sha256(json.dumps(held).encode())[:16]


def write_verdicts(root: str | Path | None, verdicts: list[dict[str, Any]]) -> Path:
    """Store the findings judged on `root`'s results (JSON-ready dicts) with the `fingerprint` of
    the entries they read (VERDICT_INPUTS)."""
    path = check_writable(root) / VERDICTS
    inputs = list(VERDICT_INPUTS)
    stored = {"inputs": inputs, "fingerprint": fingerprint(root, inputs), "verdicts": verdicts}
    write_atomic(path, json.dumps(stored, indent=1).encode())
    return path


def read_verdicts(root: str | Path | None = None) -> tuple[list[dict[str, Any]], bool] | None:
    """(the stored verdicts, whether they are fresh: judged from VERDICT_INPUTS on the entries
    `root` holds now), or None when none are stored or the file is unreadable (judged again)."""
    path = cache_root(root) / VERDICTS
    try:
        stored = json.loads(path.read_bytes())
        verdicts, digest, inputs = stored["verdicts"], stored["fingerprint"], stored["inputs"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(verdicts, list):
        return None
    return verdicts, inputs == list(VERDICT_INPUTS) and digest == fingerprint(root, VERDICT_INPUTS)


def checkpoint_weights(roots: Sequence[str | Path], exp_id: str, epoch: int) -> str | None:
    """What to load for `epoch` of experiment `exp_id`, looked up in every cache of `roots` (the
    demo cache ships the weights of a few checkpoints; a user's cache has those it trained): the
    base model's name at epoch 0 of a run that starts from it, the toxic parent's final checkpoint
    at a reversal's epoch 0, else the checkpoint directory holding the weights. None when no cache
    has them (the demo cache keeps only the tables of most runs)."""
    from ioi.runs.experiment import checkpoints_dir

    record = next((r for r in (_record(root, exp_id) for root in roots) if r is not None), None)
    if record is None:
        return None
    config = record["config"]
    if epoch == 0:
        parent = config.get("parent")
        if not parent:
            return str(config.get("model"))
        parent_record = next((r for r in (_record(root, parent) for root in roots) if r is not None), None)
        if parent_record is None:
            return None
        return checkpoint_weights(roots, parent, int(parent_record["config"]["epochs"]))
    for root in roots:
        folder = checkpoints_dir(cache_root(root), exp_id) / f"epoch-{epoch:03d}"
        if (folder / "manifest.json").is_file() and (folder / "model.safetensors").is_file():
            return str(folder)
    return None


def _record(root: str | Path, exp_id: str) -> dict[str, Any] | None:
    try:
        return read_experiment(cache_root(root), exp_id)
    except CorruptEntry:
        return None
