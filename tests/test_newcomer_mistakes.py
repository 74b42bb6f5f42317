"""A second newcomer's pass over the CLI (fresh clone, README in hand): each mistake ends in one
`error: …` line and exit status 2, a job that cannot run is refused at submit, and commands that
only read do not create what a mistyped path names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_mistakes import one_line

from ioi.cli import main
from ioi.runs.compare import lineage
from ioi.runs.experiment import ExperimentError
from ioi.task.circuit import Circuit, Head

DEMO_CLEAN, DEMO_TOXIC = "beb0361aac0eeba0", "666e7915f018ae23"  # seed 0's clean and subject-duplication runs


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"heads": {"name mover": ["1.0"]}}', '"classes"'),  # no classes
        ('{"classes": {"name mover": "1.0 1.1"}}', "list of"),  # heads as one string
        ('["1.0"]', '"classes"'),  # not an object
        ("garbage", "not a JSON file"),
        # a misspelt class would be knocked out at every position instead of its own
        ('{"classes": {"name movers": ["1.0"]}}', "did you mean 'name mover'?"),
        ('{"classes": {"my heads": ["1.0"]}}', "'previous token'"),
    ],
)
def test_a_circuit_file_of_the_wrong_shape_is_refused_naming_it(text, says, tmp_path, capsys):
    path = tmp_path / "circuit.json"
    path.write_text(text)
    err = one_line(capsys, 2, ["analyze", "faithfulness", "--model", "random:tiny", "--circuit", str(path)])
    assert err.startswith("error: --circuit ") and str(path) in err and says in err


def test_the_classes_classify_writes_are_a_circuit(tmp_path):
    """`ioi analyze classify --out classes.json` then `--circuit classes.json`: the file has the
    classes but no name; it reads as the circuit it lists."""
    written = {"method": "classify", "classes": {"name mover": ["1.7", "1.5"], "s-inhibition": ["0.0"]}}
    circuit = Circuit.from_json(written)
    assert circuit.classes == {"name mover": (Head(1, 7), Head(1, 5)), "s-inhibition": (Head(0, 0),)}
    assert Circuit.from_json(circuit.to_json()) == circuit


def test_a_reversal_of_another_models_or_a_clean_parent_is_refused_at_submit(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IOI_CACHE_DIR", str(tmp_path / "cache"))
    tiny = ["--epochs", "1", "--train-size", "8", "--eval-size", "8", "--analysis-size", "8"]
    err = one_line(capsys, 2, ["jobs", "submit", "--model", "random:tiny", "--scenario", "reversal",
                               "--parent", DEMO_TOXIC, *tiny])  # fmt: skip
    assert "fine-tuned ioi-tiny, not random:tiny" in err
    err = one_line(capsys, 2, ["jobs", "submit", "--scenario", "reversal", "--parent", DEMO_CLEAN, *tiny])
    assert "a reversal starts from a toxic experiment" in err
    assert not list((tmp_path / "cache" / "jobs").glob("*.log"))  # no job was queued


def test_compare_family_of_a_clean_run_reads_its_cached_comparison(tmp_path, capsys):
    """A clean run's lineage is itself: --family is its comparison, read at once (the demo's), not
    a job that re-trains it to compute the same timeline."""
    cache = tmp_path / "cache"
    assert main(["compare", "--experiment", DEMO_CLEAN, "--family", "--json", "--cache", str(cache)]) == 0
    captured = capsys.readouterr()
    assert "job" not in captured.err
    family = json.loads(captured.out)
    assert main(["compare", "--experiment", DEMO_CLEAN, "--json", "--cache", str(cache)]) == 0
    assert family == json.loads(capsys.readouterr().out)
    assert not cache.exists()


def test_compare_family_of_a_toxic_run_with_two_reversals_is_refused_naming_them(tmp_path, capsys):
    """Which reversal continues the lineage is the user's choice: both are named, no job starts
    (it used to take the first by id)."""
    demo = Path(__file__).parent.parent / "cache" / "demo" / "experiments"
    cache = tmp_path / "cache"
    reversal = json.loads((demo / "16d9954c1fc95fad" / "experiment.json").read_text())
    records = {DEMO_TOXIC: json.loads((demo / DEMO_TOXIC / "experiment.json").read_text()),
               "16d9954c1fc95fad": reversal, "0000000000000001": {**reversal, "id": "0000000000000001"}}
    for exp_id, record in records.items():
        (cache / "experiments" / exp_id).mkdir(parents=True)
        (cache / "experiments" / exp_id / "experiment.json").write_text(json.dumps(record))
    err = one_line(capsys, 2, ["compare", "--experiment", DEMO_TOXIC, "--family", "--cache", str(cache)])
    assert "0000000000000001, 16d9954c1fc95fad" in err and "--experiment 0000000000000001 --family" in err
    assert not (cache / "jobs").exists()
    with pytest.raises(ExperimentError, match="2 reversals"):
        lineage(cache, DEMO_TOXIC, family=True)


def test_job_commands_on_a_missing_cache_do_not_create_it(tmp_path, capsys):
    missing = tmp_path / "typo" / "cache"
    assert main(["jobs", "list", "--cache", str(missing)]) == 0
    assert "does not exist" in capsys.readouterr().err
    assert main(["jobs", "list", "--json", "--cache", str(missing)]) == 0
    assert json.loads(capsys.readouterr().out) == []
    for action in ("show", "cancel", "resume"):
        err = one_line(capsys, 2, ["jobs", action, "0123456789ab", "--cache", str(missing)])
        assert "does not exist" in err
    assert not (tmp_path / "typo").exists()


def test_a_reader_that_leaves_early_is_not_an_error(tmp_path):
    """`ioi compare … --json | head -c 100`: the pipe closes; no `error: Broken pipe` line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ioi", "compare", "--experiment", DEMO_CLEAN, "--json",
         "--cache", str(tmp_path / "cache")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    proc.stdout.read(100)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "error" not in err and "Traceback" not in err, err


def _checkpoint_of(folder, base: str):
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"format": "ioi-checkpoint/1", "base_model": base}))
    return str(folder)


def test_finetune_from_a_checkpoint_fine_tunes_its_model(tmp_path, capsys, monkeypatch):
    """--from decides the model: a --model naming another is refused (it changed only the record
    and the default lr), and without --model the checkpoint's model sets the default lr (GPT-2's
    1e-5, not ioi-tiny's 1e-4)."""
    import ioi.models.train as train

    ckpt = _checkpoint_of(tmp_path / "epoch-005", "random:tiny")
    out = str(tmp_path / "r")
    args = ["finetune", "--scenario", "reversal", "--from", ckpt, "--epochs", "1", "--out", out]
    err = one_line(capsys, 2, [*args, "--model", "ioi-tiny"])
    assert "checkpoint of random:tiny, not ioi-tiny" in err
    ran = []
    monkeypatch.setattr(train, "finetune", lambda cfg, out, **kw: ran.append(cfg) or [])
    assert main(args) == 0 and main([*args, "--model", "random:tiny"]) == 0
    assert [(c.model, c.lr) for c in ran] == [("random:tiny", 1e-5)] * 2


def test_other_on_a_one_model_analysis_is_refused(capsys):
    """`analyze dla --other ioi-tiny` loaded the second model and ignored it without a word."""
    err = one_line(capsys, 2, ["analyze", "dla", "--model", "random:tiny", "--other", "random:tiny"])
    assert "reads one model; --other is for cmap" in err
