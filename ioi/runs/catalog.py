"""The catalogue: every experiment of a cache root with its status and cached epochs.

Above the store (:mod:`ioi.runs.cache`) and the job index (:mod:`ioi.runs.jobs`), since a status
comes from the latest job when there is one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ioi.runs.cache import _ID, INDEX_NAME, cache_root, cached_epochs
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
    """
    base = cache_root(root)
    jobs = latest_jobs(base) if (base / INDEX_NAME).exists() else {}
    out = []
    for path in sorted((base / "experiments").glob("*/experiment.json")):
        exp_id = path.parent.name
        if not _ID.match(exp_id):
            continue
        record = json.loads(path.read_text())
        job = jobs.get(exp_id)
        epochs = cached_epochs(base, exp_id)
        status = job.status if job else ("done" if epochs else "new")
        out.append(ExperimentInfo(exp_id, record["config"], status, epochs, job.id if job else None))
    return out
