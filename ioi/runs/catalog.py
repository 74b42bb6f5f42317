"""The catalogue: every experiment of a cache root with its status and cached epochs.

Above the store (:mod:`ioi.runs.cache`) and the job index (:mod:`ioi.runs.jobs`), since a status
comes from the latest job when there is one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ioi.runs.cache import _ID, INDEX_NAME, CorruptEntry, cache_root, cached_epochs, is_demo, read_experiment
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
