"""`ioi compare`: an experiment's checkpoints compared by the job's run, stored, and read back."""

from __future__ import annotations

import json

from jobs_support import tiny_config

from ioi.cli import main
from ioi.runs.compare import lineage, load_comparison, missing_weights
from ioi.runs.experiment import experiment_id, run_experiment


def test_an_experiment_run_stores_its_comparison_and_the_cli_reads_it(tmp_path, capsys):
    cfg = tiny_config(analyses=("compare",))
    summary = run_experiment(cfg, tmp_path)
    exp = experiment_id(cfg)
    assert summary.id == exp
    checkpoints = lineage(tmp_path, exp)
    assert [c.epoch for c in checkpoints] == [0, 1, 2] and not missing_weights(checkpoints)
    result = load_comparison(tmp_path, exp)
    overlap = result.tables["overlap"]
    assert list(overlap["checkpoint"]) == ["clean 0", "clean 1", "clean 2"]
    assert overlap.iloc[0]["edge_jaccard"] == 1.0 and overlap.iloc[0]["node_jaccard"] == 1.0
    assert len(result.tables["transfer"]) == 9 and len(result.tables["cmap"]) == 9
    assert main(["compare", "--experiment", exp, "--cache", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["checkpoints"] == ["clean 0", "clean 1", "clean 2"] and len(out["roles"]) > 0
    assert run_experiment(cfg, tmp_path).trained is False  # cached: nothing re-runs


def test_compare_refuses_unknown_experiments(tmp_path, capsys):
    assert main(["compare", "--experiment", "0123456789abcdef", "--cache", str(tmp_path)]) == 2
    assert "no experiment 0123456789abcdef" in capsys.readouterr().err
    assert main(["compare", "--experiment", "../etc", "--cache", str(tmp_path)]) == 2
