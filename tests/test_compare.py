"""`ioi compare`: an experiment's checkpoints compared by the job's run, stored, and read back."""

from __future__ import annotations

import json
import math

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
    # random:tiny does not do the task: no edge circuit at any checkpoint, so no overlap to measure
    # (two empty circuits once read as Jaccard 1.00 [1.00, 1.00], stable)
    first = overlap.iloc[0]
    assert first["n_edges"] == 0 and math.isnan(first["edge_jaccard"]) and math.isnan(first["faithfulness"])
    assert not first["stable"]
    assert len(result.tables["transfer"]) == 9 and len(result.tables["cmap"]) == 9
    assert main(["compare", "--experiment", exp, "--cache", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["checkpoints"] == ["clean 0", "clean 1", "clean 2"] and len(out["roles"]) > 0
    assert main(["compare", "--experiment", exp, "--cache", str(tmp_path)]) == 0
    assert "0 edges, edge Jaccard undefined (no circuit: F(M) -0.12, the model does not do the task)" in (
        capsys.readouterr().out
    )
    assert run_experiment(cfg, tmp_path).trained is False  # cached: nothing re-runs


def test_compare_refuses_unknown_experiments(tmp_path, capsys):
    assert main(["compare", "--experiment", "0123456789abcdef", "--cache", str(tmp_path)]) == 2
    assert "no experiment 0123456789abcdef" in capsys.readouterr().err
    assert main(["compare", "--experiment", "../etc", "--cache", str(tmp_path)]) == 2


def test_a_lineage_with_a_reversal_comes_with_its_recovery_dynamics(tmp_path, capsys, monkeypatch):
    """The demo's name-moving family (seed 0) has its reversal's dynamics cached: they are in the
    JSON. Where they are not, a recovery job is submitted for the reversal (--no-recovery: none)."""
    from ioi.cli import compare as cli_compare

    args = ["compare", "--experiment", "bca790f7bec0bd8e", "--family", "--cache", str(tmp_path), "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["recovery"]["experiment"] == "593280fa5c6c332f" and out["recovery"]["method"] == "recovery"
    asked = []
    monkeypatch.setattr(cli_compare, "_recovery", lambda *roots: None)
    monkeypatch.setattr(cli_compare, "_job", lambda cfg, target, a, what: asked.append(cfg) or 0)
    assert main(args) == 0
    assert [(c.scenario, c.parent, c.analyses) for c in asked] == [
        ("reversal", "bca790f7bec0bd8e", ("recovery",))
    ]
    assert main([*args, "--no-recovery"]) == 0 and len(asked) == 1
    monkeypatch.undo()
    assert main(args[:-1]) == 0  # the text output says how the recovery went
    said = capsys.readouterr().out
    assert "recovery: every 100 steps; at the reversal's last measurement (step 500) F is" in said
