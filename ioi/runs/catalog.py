"""The catalogue: every experiment of a cache root with its status and cached epochs, and the
findings judged on them (``<root>/verdicts.json``, written by :mod:`ioi.present.findings`).

Above the store (:mod:`ioi.runs.cache`) and the job index (:mod:`ioi.runs.jobs`), since a status
comes from the latest job when there is one.
"""

from __future__ import annotations

import json
import warnings
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
    is_demo,
    read_experiment,
    sha256,
    write_atomic,
)
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


VERDICTS = "verdicts.json"


def fingerprint(root: str | Path | None = None) -> str:
    """A digest of what `root` holds: every experiment's id and cached entries (epoch, name). A
    run that adds an entry changes it, so findings judged before are known to be stale."""
    held = sorted((e.id, sorted((epoch, sorted(names)) for epoch, names in e.epochs.items()))
                  for e in list_experiments(root))  # fmt: skip
    return sha256(json.dumps(held).encode())[:16]


def write_verdicts(root: str | Path | None, verdicts: list[dict[str, Any]]) -> Path:
    """Store the findings judged on `root`'s results (JSON-ready dicts) with its `fingerprint`."""
    path = check_writable(root) / VERDICTS
    stored = {"fingerprint": fingerprint(root), "verdicts": verdicts}
    write_atomic(path, json.dumps(stored, indent=1).encode())
    return path


def read_verdicts(root: str | Path | None = None) -> tuple[list[dict[str, Any]], bool] | None:
    """(the stored verdicts, whether they are fresh: judged on what `root` holds now), or None when
    none are stored or the file is unreadable (they are judged again)."""
    path = cache_root(root) / VERDICTS
    try:
        stored = json.loads(path.read_bytes())
        verdicts, digest = stored["verdicts"], stored["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (verdicts, digest == fingerprint(root)) if isinstance(verdicts, list) else None
