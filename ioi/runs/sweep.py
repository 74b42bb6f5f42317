"""Sweeps: many experiments (seeds × scenarios, with reversals from each toxic run) through joblib.

Every experiment is one `joblib.delayed(run_experiment)` call, so the joblib backend decides where
it runs: local processes (loky, the default) or, under
``joblib.parallel_config(backend="dask")`` with a ``dask.distributed.Client`` connected, the
workers of a Dask cluster — no code change. Workers must share the cache directory (a network
file system when they are on other machines). Experiments run in two stages: everything that
starts from a pretrained model first, then the reversals, which start from a toxic experiment's
final checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from joblib import Parallel, delayed

from ioi.runs.cache import cache_root
from ioi.runs.experiment import (
    ExperimentConfig,
    ExperimentError,
    ExperimentSummary,
    experiment_id,
    run_experiment,
)
from ioi.task.corruptions import CORRUPTIONS


def sweep_configs(
    base: ExperimentConfig,
    *,
    seeds: Sequence[int] = (0,),
    scenarios: Sequence[str] = ("clean",),
    reversal_epochs: int | None = None,
) -> list[list[ExperimentConfig]]:
    """The sweep's experiments in stages: [every seed × scenario], then (when `reversal_epochs`
    is given) [a reversal of that many epochs from every toxic experiment of the first stage]."""
    bad = [s for s in scenarios if s != "clean" and s not in CORRUPTIONS]
    if bad:
        known = ", ".join(["clean", *CORRUPTIONS])
        raise ExperimentError(f"sweep scenarios must be clean or a toxic dataset ({known}); got {bad}")
    first = [replace(base, scenario=s, seed=seed, parent=None) for seed in seeds for s in scenarios]
    if reversal_epochs is None:
        return [first]
    second = [
        replace(c, scenario="reversal", parent=experiment_id(c), epochs=reversal_epochs,
                checkpoint_epochs=tuple(e for e in c.checkpoint_epochs if e <= reversal_epochs))
        for c in first if c.scenario in CORRUPTIONS
    ]  # fmt: skip
    for cfg in [*first, *second]:  # every stage is refused now, not after the first has trained
        cfg.validate()
    return [first, second] if second else [first]


def run_one(cfg: ExperimentConfig, root: str, device: str) -> ExperimentSummary:
    """One experiment in a joblib worker (one torch thread each: workers already split the cores)."""
    from ioi.models.threads import one_thread

    with one_thread():
        return run_experiment(cfg, root, device=device)


def run_sweep(
    stages: Sequence[Sequence[ExperimentConfig]],
    root: str | Path | None = None,
    *,
    n_jobs: int | None = None,
    device: str = "cpu",
    verbose: int = 0,
) -> list[ExperimentSummary]:
    """Run every stage's experiments in parallel with the active joblib backend; cached ones return
    at once. `n_jobs` defaults to joblib's (set by `parallel_config`; -1 = every worker)."""
    base = str(cache_root(root))
    out: list[ExperimentSummary] = []
    for stage in stages:
        out += Parallel(n_jobs=n_jobs, verbose=verbose)(delayed(run_one)(c, base, device) for c in stage)
    return out
