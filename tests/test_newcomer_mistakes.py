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
DEMO_REVERSAL = "16d9954c1fc95fad"  # the subject-duplication run's reversal


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
    # nor any record: a stub of the demo's clean run here hid its results (listed "new", retrained)
    assert not list((tmp_path / "cache").glob("experiments/*/experiment.json"))
    assert main(["experiments", "--json"]) == 0
    listed = {e["id"]: e for e in json.loads(capsys.readouterr().out)}
    assert listed[DEMO_CLEAN]["demo"] and listed[DEMO_CLEAN]["status"] == "done"


def test_a_reversal_of_a_demo_run_copies_the_shipped_weights_and_keeps_the_demos_results(tmp_path, capsys):
    """The demo ships its subject-duplication run's final weights: a reversal from it starts from
    a copy (no re-training), and the parent's copy in the user's cache (weights only) does not hide
    the demo's results from `ioi experiments` or `compare`."""
    from ioi.runs.cache import demo_root, experiment_dir
    from ioi.runs.catalog import find_experiment
    from ioi.runs.experiment import ExperimentConfig, parent_checkpoint

    demo = demo_root() / "experiments"
    record = json.loads((demo / DEMO_REVERSAL / "experiment.json").read_text())
    cfg = ExperimentConfig.from_json(record["config"])
    user, notes = tmp_path / "cache", []
    final = Path(parent_checkpoint(cfg, user, "cpu", notes.append))
    assert notes == [f"copied the weights of parent {DEMO_TOXIC} from the demo cache"]
    shipped = demo / DEMO_TOXIC / "checkpoints" / "epoch-003" / "model.safetensors"
    assert final == experiment_dir(user, DEMO_TOXIC) / "checkpoints" / "epoch-003"
    assert (final / "model.safetensors").read_bytes() == shipped.read_bytes()
    assert find_experiment(DEMO_TOXIC, user) == demo_root()  # the copy holds weights, the demo results
    assert main(["experiments", "--cache", str(user), "--json"]) == 0
    listed = [(e["id"], e["demo"]) for e in json.loads(capsys.readouterr().out)]
    assert (DEMO_TOXIC, True) in listed and (DEMO_TOXIC, False) not in listed
    notes.clear()
    assert parent_checkpoint(cfg, user, "cpu", notes.append) == str(final) and notes == []  # once


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


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["faithfulness", "--option", "circuit=c.json"], "--circuit FILE, not --option circuit="),
        (["dla", "--circuit", "c.json"], "dla uses no circuit; these do: circuit-tests, cmap, faithfulness"),
    ],
)
def test_a_circuit_given_the_wrong_way_is_answered_with_the_right_one(args, says, tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.json").write_text('{"classes": {"name mover": ["1.0"]}}')
    assert says in one_line(capsys, 2, ["analyze", *args, "--model", "random:tiny"])


def test_an_experiment_is_named_by_the_start_of_its_id_as_listings_print_it(tmp_path, capsys, monkeypatch):
    from ioi.runs import jobs

    cache = tmp_path / "cache"
    assert main(["experiments", DEMO_TOXIC[:8], "--cache", str(cache)]) == 0
    assert capsys.readouterr().out.startswith(f"{DEMO_TOXIC}: subject_duplication")
    monkeypatch.setattr(jobs, "_launch", lambda root, job_id: None)  # record the job, run nothing
    tiny = ["--epochs", "1", "--train-size", "8", "--eval-size", "8", "--analysis-size", "8"]
    submit = ["jobs", "submit", "--scenario", "reversal", "--parent", DEMO_TOXIC[:8], "--cache", str(cache)]
    assert main([*submit, *tiny]) == 0
    assert [j.config["parent"] for j in jobs.list_jobs(cache)] == [DEMO_TOXIC]
    for twin in ("abcdef0123456789", "abcdef01ffffffff"):
        (cache / "experiments" / twin).mkdir(parents=True)
        (cache / "experiments" / twin / "experiment.json").write_text('{"config": {}}')
    err = one_line(capsys, 2, ["experiments", "abcdef01", "--cache", str(cache)])
    assert "abcdef01 starts 2 experiment ids (abcdef0123456789, abcdef01ffffffff): give more of it" in err


def test_a_model_that_does_not_load_leaves_no_empty_out_folder(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"model_type": "gpt2"}')
    out = tmp_path / "a" / "ft"
    err = one_line(capsys, 2, ["finetune", "--model", str(tmp_path / "m"), "--out", str(out)])
    assert "has no weights" in err
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--analysis-size", "0"], "analysis size must be at least 1 and at most 200,000, got 0"),
        (["--batch-size", "0"], "batch size must be from 1 to 4,096, got 0"),
        (["--checkpoint-epochs", "2,7"], "checkpoint epoch(s) 7 outside the run's epochs 1..3"),
    ],
)
def test_a_submit_with_a_bad_size_or_checkpoint_names_which(args, says, tmp_path, capsys):
    assert one_line(capsys, 2, ["jobs", "submit", "--cache", str(tmp_path), *args]) == f"error: {says}"
    assert not list(tmp_path.iterdir())


def test_the_wait_bar_says_queued_then_the_epoch_without_stray_punctuation(tmp_path, capsys, monkeypatch):
    from types import SimpleNamespace

    from ioi.cli.runs import _wait_with_bar
    from ioi.runs import jobs

    def wait(job_id, root, on_update):
        for epochs, status, phase in ((0, "queued", ""), (3, "running", "training")):
            on_update(SimpleNamespace(status=status, epoch=min(1, epochs), epochs=epochs, phase=phase,
                                      fraction=0.3 * epochs / 3))  # fmt: skip
        return SimpleNamespace(status="done", experiment="0" * 16)

    monkeypatch.setattr(jobs, "wait", wait)
    assert _wait_with_bar("0123456789ab", tmp_path) == 0
    err = capsys.readouterr().err
    assert "0123456789ab queued" in err and "0123456789ab running epoch 1/3 training" in err
    assert "0/0" not in err and ", queued" not in err


def test_submitting_a_run_the_demo_ships_is_answered_from_the_demo(tmp_path, capsys):
    """The README's `jobs submit --scenario subject_duplication` is the demo's run: its checkpoint
    epochs "" and "3" save the same epochs, so it is one experiment, done at once, not re-trained."""
    from dataclasses import replace

    from ioi.runs import jobs
    from ioi.runs.cache import demo_root
    from ioi.runs.experiment import ExperimentConfig, experiment_id

    record = json.loads((demo_root() / "experiments" / DEMO_TOXIC / "experiment.json").read_text())
    shipped = ExperimentConfig.from_json(record["config"])
    assert shipped.checkpoint_epochs == (3,)
    assert experiment_id(replace(shipped, checkpoint_epochs=())) == DEMO_TOXIC
    assert experiment_id(replace(shipped, checkpoint_epochs=(1,))) != DEMO_TOXIC  # saves epoch 1 too
    cache = tmp_path / "cache"
    assert main(["jobs", "submit", "--scenario", "subject_duplication", "--cache", str(cache), "--wait"]) == 0
    assert f"results: {demo_root() / 'experiments' / DEMO_TOXIC}" in capsys.readouterr().err
    (job,) = jobs.list_jobs(cache)
    assert job.status == "done" and "already cached in the demo cache" in job.log
    assert not list(cache.glob("experiments/*/experiment.json"))  # no stub hiding the demo's copy


def test_a_comparison_run_on_a_demo_experiment_does_not_hide_the_demos_results(tmp_path, capsys):
    """`compare --experiment` on a demo run computes the comparison in the user's cache: that copy
    holds the comparison (and metrics) at two epochs, the demo's every analysis; the demo's is
    the one listed and shown (the most cached entries, not the most epochs)."""
    from ioi.runs import cache as store
    from ioi.runs.catalog import find_experiment

    user = tmp_path / "cache"
    record = json.loads((store.demo_root() / "experiments" / DEMO_REVERSAL / "experiment.json").read_text())
    store.register_experiment(user, DEMO_REVERSAL, record)
    for epoch, name in ((0, "metrics"), (3, "metrics"), (3, "compare")):
        store.write_entry(user, DEMO_REVERSAL, epoch, name, {"logit_diff": 1.0})
    assert find_experiment(DEMO_REVERSAL, user) == store.demo_root()
    assert main(["experiments", DEMO_REVERSAL, "--cache", str(user), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["cache"] == str(store.demo_root()) and "dla" in shown["epochs"][-1]["analyses"]


def test_a_job_is_named_by_the_start_of_its_id_and_an_experiment_id_is_answered(tmp_path, capsys,
                                                                                monkeypatch):
    from ioi.runs import jobs

    cache = tmp_path / "cache"
    monkeypatch.setattr(jobs, "_launch", lambda root, job_id: None)
    tiny = ["--model", "random:tiny", "--epochs", "1", "--train-size", "8", "--eval-size", "8",
            "--analysis-size", "8"]
    assert main(["jobs", "submit", "--cache", str(cache), *tiny]) == 0
    job = capsys.readouterr().out.strip()
    assert main(["jobs", "show", job[:6], "--cache", str(cache)]) == 0
    assert capsys.readouterr().out.startswith(job)
    err = one_line(capsys, 2, ["jobs", "show", DEMO_TOXIC[:8], "--cache", str(cache)])
    assert err == (f"error: {DEMO_TOXIC[:8]} is an experiment, not a job: `ioi experiments {DEMO_TOXIC}` "
                   "shows it")
    err = one_line(capsys, 2, ["experiments", DEMO_TOXIC[:7], "--cache", str(cache)])
    assert "too short for an id: give at least its first 8 characters" in err
    assert main(["jobs", "cancel", job[:6], "--cache", str(cache)]) == 0
    assert "cancel requested" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--scenario", "reversal"], "a reversal starts from a toxic run: give its id as --parent"),
        (["--parent", DEMO_TOXIC], "--parent is for --scenario reversal; a clean run starts from the"),
    ],
)
def test_a_reversal_without_a_parent_or_a_parent_without_a_reversal_says_what_to_give(args, says, tmp_path,
                                                                                     capsys):
    assert says in one_line(capsys, 2, ["jobs", "submit", "--cache", str(tmp_path), *args])


def test_wrong_paths_are_said_in_words(tmp_path, capsys):
    """A mistyped --cache hid the user's results silently; a missing --from or --circuit, or a
    folder as --out, gave an OS error's words or a misleading one."""
    assert main(["experiments", "--cache", str(tmp_path / "typo")]) == 0
    assert f"warning: cache {tmp_path / 'typo'} does not exist" in capsys.readouterr().err
    err = one_line(capsys, 2, ["finetune", "--model", "random:tiny", "--scenario", "reversal", "--from",
                               str(tmp_path / "nope"), "--out", str(tmp_path / "ft")])  # fmt: skip
    assert "does not exist (give a checkpoint directory" in err
    err = one_line(capsys, 2, ["analyze", "knockout", "--model", "random:tiny", "--circuit",
                               str(tmp_path / "c.json")])  # fmt: skip
    assert err.startswith(f"error: --circuit {tmp_path / 'c.json'}: No such file")
    err = one_line(capsys, 2, ["dataset", "--out", str(tmp_path)])
    assert "is a directory; give a file name" in err


@pytest.mark.parametrize(
    ("value", "says"), [("-1", "at least 0.01"), ("nan", "at least 0.01"), ("1.5", "at most 1")]
)
def test_an_edge_circuit_target_outside_0_1_is_refused(value, says, capsys):
    err = one_line(capsys, 2, ["analyze", "edges", "--model", "random:tiny", "--option",
                               f"faithfulness={value}"])  # fmt: skip
    assert f"option faithfulness is {says}" in err


def test_a_demo_run_asked_with_more_analyses_computes_only_those(tmp_path):
    """The README's reversal from the demo's subject-duplication run, with the default analyses:
    the demo holds its dla, faithfulness and cmap, so the job is left with the others (it once
    computed everything again)."""
    from dataclasses import replace

    from ioi.runs import jobs
    from ioi.runs.cache import demo_root
    from ioi.runs.experiment import DEFAULT_ANALYSES, ExperimentConfig, plan

    record = json.loads((demo_root() / "experiments" / DEMO_REVERSAL / "experiment.json").read_text())
    cfg = replace(ExperimentConfig.from_json(record["config"]), analyses=DEFAULT_ANALYSES)
    user = tmp_path / "cache"
    jobs.submit(cfg, user, launch=False)
    todo = plan(cfg, user, DEMO_REVERSAL, print)
    shipped = {"dla", "faithfulness", "cmap", "metrics"}
    assert todo and not shipped & {name for names in todo.values() for name in names}
    assert {"knockout", "circuit-tests"} & {name for names in todo.values() for name in names}


def test_an_analysis_named_twice_runs_once(tmp_path, capsys, monkeypatch):
    from ioi.runs import jobs

    monkeypatch.setattr(jobs, "_launch", lambda root, job_id: None)
    cache = tmp_path / "cache"
    assert main(["jobs", "submit", "--model", "random:tiny", "--epochs", "1", "--analyses", "cmap,dla,cmap",
                 "--cache", str(cache)]) == 0  # fmt: skip
    assert [j.config["analyses"] for j in jobs.list_jobs(cache)] == [["cmap", "dla"]]
