"""Sweeps: stages and ids, and the same numbers on a Dask LocalCluster as with the local backend."""

from __future__ import annotations

from dataclasses import replace

import joblib
import pytest
from jobs_support import TOY, tiny_config, worker_env

from ioi.runs import cache
from ioi.runs.experiment import ExperimentError, experiment_id
from ioi.runs.precompute import clean_epochs_within, demo_stages, prune_weights
from ioi.runs.sweep import run_sweep, sweep_configs
from ioi.task.corruptions import CORRUPTIONS


def test_sweep_stages_and_reversal_parents():
    base = tiny_config(epochs=2, checkpoint_epochs=(1,))
    first, second = sweep_configs(base, seeds=(0, 1), scenarios=("clean", "name_moving"), reversal_epochs=1)
    assert [(c.seed, c.scenario) for c in first] == [
        (0, "clean"),
        (0, "name_moving"),
        (1, "clean"),
        (1, "name_moving"),
    ]
    assert [c.parent for c in second] == [experiment_id(first[1]), experiment_id(first[3])]
    assert all(c.scenario == "reversal" and c.epochs == 1 and c.checkpoint_epochs == (1,) for c in second)
    # a reversal's identity includes its parent's
    assert experiment_id(second[0]) != experiment_id(replace(second[0], parent="ab" * 8))
    assert len({experiment_id(c) for c in first + second}) == 6
    with pytest.raises(ExperimentError, match="clean or a toxic dataset"):
        sweep_configs(base, scenarios=("reversal",))


def _numbers(root, summaries):
    """Every cached metric and toy-analysis value of the sweep, by experiment id."""
    out = {}
    for s in summaries:
        out[s.id] = (
            cache.load_metrics_series(root, s.id).to_dict(orient="list"),
            [cache.load_analysis(root, s.id, e, TOY).heads["value"].tolist() for e in sorted(s.metrics)],
        )
    return out


@pytest.mark.slow
def test_dask_local_cluster_gives_the_local_numbers(tmp_path, monkeypatch):
    from dask.distributed import Client, LocalCluster

    worker_env(monkeypatch)
    stages = sweep_configs(
        tiny_config(epochs=1, checkpoint_epochs=()), seeds=(0, 1), scenarios=("subject_duplication",),
        reversal_epochs=1,
    )  # fmt: skip
    local = run_sweep(stages, tmp_path / "local", n_jobs=2)
    assert [s.trained for s in local] == [True] * 4
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster), joblib.parallel_config(backend="dask"):
            remote = run_sweep(stages, tmp_path / "dask", n_jobs=-1)
    assert [s.id for s in remote] == [s.id for s in local]
    assert [s.metrics for s in remote] == [s.metrics for s in local]
    assert _numbers(tmp_path / "dask", remote) == _numbers(tmp_path / "local", local)
    assert local[2].metrics[0] == local[0].metrics[1]  # the reversal starts where its parent ended
    prune_weights(tmp_path / "local")  # as the shipped demo set: no checkpoints, no index
    again = run_sweep(stages, tmp_path / "local", n_jobs=1)  # all cached: nothing trains
    assert not any(s.trained for s in again)
    assert not list((tmp_path / "local").glob("experiments/*/checkpoints"))
    assert [s.metrics for s in again] == [s.metrics for s in local]


def test_demo_set_covers_every_scenario():
    [[clean, *toxic], reversals] = demo_stages("random:tiny", clean_epochs=100)
    assert clean.scenario == "clean" and clean.checkpoint_epochs == (1, 3, 5, 10, 25, 50, 100)
    assert sorted(c.scenario for c in toxic) == sorted(CORRUPTIONS)
    assert all(c.epochs == 5 and c.checkpoint_epochs == (5,) for c in toxic + reversals)
    assert [r.parent for r in reversals] == [experiment_id(c) for c in toxic]
    quick = demo_stages("random:tiny", quick=True)
    assert max(c.epochs for stage in quick for c in stage) <= 3 and quick[0][0].train_size <= 64


def test_demo_set_of_three_seeds_runs_the_first_seed_first():
    stages = demo_stages("random:tiny", seeds=(0, 1, 2), other_seeds_clean_epochs=5, toxic_epochs=3)
    [[clean, *toxic], middle, last] = stages
    assert (clean.seed, clean.epochs) == (0, 100) and {c.seed for c in toxic} == {0}
    short = [c for c in middle if c.scenario == "clean"]
    assert [(c.seed, c.epochs, c.checkpoint_epochs) for c in short] == [(1, 5, (5,)), (2, 5, (5,))]
    assert all(c.epochs == 3 for c in toxic + middle + last if c.scenario != "clean")
    assert {c.seed for c in last} == {1, 2} and all(c.scenario == "reversal" for c in last)
    assert "knockout" in clean.analyses and all("knockout" not in c.analyses for c in toxic + middle + last)


def test_clean_epochs_fit_the_budget():
    assert clean_epochs_within(15 * 60, 8.0) == 100
    assert clean_epochs_within(15 * 60, 30.0) == 25
    assert clean_epochs_within(15 * 60, 5000.0) == 1
