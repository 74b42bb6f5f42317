"""A newcomer's mistakes at the command line, found by trying the product: each one ends in one
`error: …` line and exit status 2 (Ctrl-C: one `stopped…` line, 130), never a traceback, and no
value the user typed is silently replaced by a default."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings

import pytest

from ioi import cli
from ioi.cli import main


def one_line(capsys, code: int, args: list[str]) -> str:
    """Run `ioi ARGS`, check it ends with status `code` and one line on stderr; that line."""
    assert main(args) == code
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    "args",
    [
        ["sweep", "--seeds", "a,b", "--epochs", "1"],
        ["sweep", "--seeds", "", "--epochs", "1"],
        ["reproduce", "--quick", "--model", "random:tiny", "--seeds", "x"],
        ["precompute", "--quick", "--out", "pc", "--seeds", "0,x"],
    ],
)
def test_seeds_that_are_not_numbers_are_refused(args, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "seed" in one_line(capsys, 2, args)
    assert not (tmp_path / "pc").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["finetune", "--model", "random:tiny", "--lr", "0", "--train-size", "8", "--out", "ft"],
        ["finetune", "--model", "random:tiny", "--lr", "nan", "--train-size", "8", "--out", "ft"],
        ["jobs", "submit", "--model", "random:tiny", "--lr", "0"],
        ["jobs", "submit", "--model", "random:tiny", "--weight-decay", "-1"],
        ["sweep", "--model", "random:tiny", "--lr", "0"],
    ],
)
def test_a_zero_or_nan_learning_rate_is_refused_not_replaced_by_the_default(
    args, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IOI_CACHE_DIR", str(tmp_path / "cache"))
    err = one_line(capsys, 2, args)
    assert "learning rate" in err or "weight decay" in err
    assert not (tmp_path / "ft").exists()


def test_reproduce_from_an_empty_cache_is_a_user_error(capsys, tmp_path):
    err = one_line(
        capsys, 2, ["reproduce", "--from-cache", "--model", "random:tiny", "--cache", str(tmp_path)]
    )
    assert "no cached clean experiment" in err


def test_ctrl_c_is_one_line_not_a_traceback(capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    assert cli._run(argparse.Namespace(run=interrupted)) == 130
    assert capsys.readouterr().err.strip() == "stopped: interrupted (Ctrl-C)"


def test_ctrl_c_in_finetune_says_where_the_checkpoints_are(capsys, tmp_path, monkeypatch):
    from ioi.models import train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "finetune", interrupted)
    out = tmp_path / "ft"
    err = one_line(
        capsys, 130, ["finetune", "--model", "random:tiny", "--train-size", "8", "--out", str(out)]
    )
    assert err.startswith("stopped: interrupted") and str(out) in err and "resumes" in err


def test_ctrl_c_while_waiting_for_a_job_leaves_it_running_and_says_how_to_follow_it(
    capsys, tmp_path, monkeypatch
):
    from ioi.runs import jobs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "submit", lambda *a, **k: "0123456789ab")
    monkeypatch.setattr(jobs, "wait", interrupted)
    args = ["jobs", "submit", "--model", "random:tiny", "--cache", str(tmp_path), "--wait"]
    assert main(args) == 130
    captured = capsys.readouterr()
    assert captured.out.strip() == "0123456789ab"  # the id was printed before the wait began
    err = captured.err.strip().splitlines()[-1]
    assert "Traceback" not in captured.err and "background" in err and "jobs show 0123456789ab" in err


def test_a_finished_job_says_where_its_results_are(capsys, tmp_path, monkeypatch):
    from jobs_support import tiny_config

    from ioi.runs import jobs
    from ioi.runs.experiment import experiment_id

    cfg = tiny_config()
    job_id = jobs.submit(cfg, tmp_path, launch=False)
    assert main(["jobs", "show", job_id, "--cache", str(tmp_path)]) == 0
    where = str(tmp_path / "experiments" / experiment_id(cfg))
    assert f"results: {where}" in capsys.readouterr().out
    assert main(["jobs", "show", job_id, "--cache", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"] == where


def test_a_detached_process_is_started_without_a_resource_warning(tmp_path):
    """`jobs submit` used to print "warning: subprocess N is still running" (the dropped Popen)."""
    from ioi.runs.daemon import spawn_detached
    from ioi.runs.jobs import pid_alive

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pid = spawn_detached([sys.executable, "-c", "import time; time.sleep(2)"], tmp_path / "x" / "log")
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert pid_alive(pid) and (tmp_path / "x" / "log").is_file()


# --- analysis options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["attention", "--option", "k=0"], "option k is at least 1"),  # was: copy scores all 0
        (["attention", "--option", "k=-1"], "option k is at least 1"),  # was: a topk traceback
        (["cmap", "--other", "random:tiny", "--option", "n_boot=0"], "option n_boot is at least 1"),
        (["eap", "--option", "max_rows=0"], "option max_rows is at least 1"),
        (["classify", "--option", "backup=-1"], "option backup is at least 0"),
        (["edges", "--option", "points=-2"], "option points is at least 1"),
        (["dla", "--out", "no/such/folder/x.json"], "does not exist"),  # was: said after the analysis
    ],
)
def test_analysis_numbers_out_of_range_are_refused_before_a_model_loads(
    args, message, capsys, tmp_path, monkeypatch
):
    from ioi.models import load

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(load, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    assert message in one_line(capsys, 2, ["analyze", *args, "--model", "random:tiny"])


def test_option_minimum_is_part_of_the_help():
    from ioi.methods.analyses import OptionError, analysis

    k = next(o for o in analysis("attention").options if o.name == "k")
    assert "≥ 1" in k.describe() and k.parse("3") == 3
    with pytest.raises(OptionError):
        k.parse(0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["knockout", "--option", "mlps=7"], "layers 7 are outside this model"),  # was: IndexError
        (["knockout", "--option", "heads=5.5"], "heads 5.5 are outside this model"),
        (["path-patch", "--option", "heads=abc"], "receiver 'logits'"),  # was: heads silently ignored
        (["path-patch", "--option", "heads=1.1"], "receiver 'logits'"),
        (["path-patch", "--option", "position=s2"], "receiver 'logits'"),
        (["attention", "--option", "k=60000"], "top-k must be from 1 to the vocabulary's 50257"),
    ],
)
def test_analysis_options_the_model_cannot_take_are_one_line(args, message, capsys, tmp_path):
    assert message in one_line(capsys, 2, ["analyze", *args, "--model", "random:tiny", "--size", "4"])


def test_a_cross_model_result_names_both_models(capsys, monkeypatch):
    import pandas as pd

    from ioi.methods import analyses

    def fake(name, model, clean, abc, *, other=None, **options):
        assert other is not None
        return analyses.AnalysisResult(name, pd.DataFrame({"layer": [0], "head": [0], "value": [1.0]}))

    monkeypatch.setattr(analyses, "run_analysis", fake)
    args = ["analyze", "cmap", "--model", "random:tiny", "--other", "random:pythia", "--size", "4", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "random:tiny" and out["other"] == "random:pythia"


# --- a user's own prompts -----------------------------------------------------------------------

WHEN = "When Mary and John went to the store, "


@pytest.mark.parametrize(
    "row, message",
    [  # each of these used to give a number: logit diff 0, a wrong END, or S2 read at S1 / at -1
        ({"prompt": WHEN + "John gave a drink to", "io": "Mary", "s": "Mary"}, "IO and S are both 'Mary'"),
        ({"prompt": WHEN + "John gave a drink to ", "io": "Mary", "s": "John"}, "ends with whitespace"),
        ({"prompt": WHEN + "he gave a drink to", "io": "Mary", "s": "John"}, "must name 'John' again"),
        ({"prompt": WHEN + "John gave a drink to", "io": "John", "s": "Mary"}, "IO and S look swapped"),
        (
            {"prompt": "When John and Mary went out, Mary", "io": "Mary", "s": "John"},
            "ends with the name Mary",  # (and never repeats John) the name to predict is not in a prompt
        ),
    ],
)
def test_own_prompts_that_are_not_ioi_prompts_are_refused(row, message, capsys, tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps(row) + "\n")
    assert message in one_line(capsys, 2, ["eval", "--model", "random:tiny", "--dataset", str(data)])


def test_every_generated_and_toxic_prompt_still_tokenizes(gpt2_tok):
    from ioi.task.corruptions import CORRUPTIONS, corrupt
    from ioi.task.data import make_dataset, tokenize

    clean = make_dataset(300, seed=0)
    for name in ["clean", *CORRUPTIONS]:
        samples = clean if name == "clean" else corrupt(clean, name)
        batch = tokenize(samples, gpt2_tok)
        assert bool((batch.s2_pos > batch.s1_pos).all() and (batch.s2_pos > batch.io_pos).all())


# --- fine-tuning into a folder that holds another run -------------------------------------------


def test_finetune_into_another_runs_folder_is_refused_and_the_same_run_continues(capsys, tmp_path):
    out = tmp_path / "ft"
    base = ["finetune", "--model", "random:tiny", "--train-size", "8", "--eval-size", "4", "--out", str(out)]
    assert main([*base, "--epochs", "1"]) == 0
    capsys.readouterr()
    before = (out / "epoch-001" / "model.safetensors").read_bytes()
    # was: "resumed" from the seed-0 clean checkpoint and returned it as this run's result
    err = one_line(capsys, 2, [*base, "--epochs", "1", "--seed", "1"])
    assert "another run" in err and "seed 0, not 1" in err
    err = one_line(capsys, 2, [*base, "--epochs", "2", "--scenario", "name_moving"])
    assert "scenario 'clean', not 'name_moving'" in err and not (out / "epoch-002").exists()
    assert main([*base, "--epochs", "2"]) == 0  # the same run, longer: continues from epoch 1
    assert (out / "epoch-002").is_dir() and (out / "epoch-001" / "model.safetensors").read_bytes() == before


def test_a_reversal_from_a_clean_checkpoint_is_refused(capsys, tmp_path):
    # it trained without a word, although a reversal is defined as retraining a toxic model
    out = tmp_path / "clean"
    base = ["--model", "random:tiny", "--train-size", "8", "--eval-size", "4", "--epochs", "1"]
    assert main(["finetune", *base, "--out", str(out)]) == 0
    capsys.readouterr()
    start = ["--scenario", "reversal", "--from", str(out / "epoch-001"), "--out", str(tmp_path / "rev")]
    err = one_line(capsys, 2, ["finetune", *base[2:], *start])
    assert "is a clean checkpoint; a reversal retrains a toxic one" in err and not (tmp_path / "rev").exists()


# --- model names and settings -------------------------------------------------------------------


def test_every_bundled_model_can_be_submitted_and_an_unknown_random_one_cannot(tmp_path):
    from ioi.models import load
    from ioi.models.checks import BUNDLED, RANDOM_MODELS, model_problem

    assert RANDOM_MODELS == tuple(load._RANDOM_CONFIGS)
    for name in BUNDLED:  # ioi-small loads in `eval` but a job of it was refused as "not in the HF cache"
        assert model_problem(name) is None
    # random:bogus was accepted at submit and failed in the background with "download it once"
    assert "unknown random model 'random:bogus'" in model_problem("random:bogus")
    with pytest.raises(load.ModelUnavailableError, match="unknown random model"):
        load.load_hf("random:bogus")


def test_a_misspelt_bundled_model_name_is_answered_with_the_right_one(capsys, tmp_path, monkeypatch):
    from ioi.models.checks import did_you_mean, model_problem

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "did you mean 'ioi-small'?" in model_problem("IOI-small")
    assert "did you mean" not in model_problem("someone/llama-7b")
    assert did_you_mean("gpt2") == "" and did_you_mean("GPT2") == "did you mean 'gpt2'? Else "
    err = one_line(capsys, 2, ["eval", "--model", "ioi_tiny", "--size", "5"])
    assert "did you mean 'ioi-tiny'?" in err


def test_ids_are_read_in_any_case(capsys, tmp_path):
    """Ids are lower-case hex; one typed in capitals names the same job."""
    err = one_line(capsys, 2, ["jobs", "show", "ABCDEF12", "--cache", str(tmp_path)])
    assert "'abcdef12'" in err
    err = one_line(capsys, 2, ["compare", "--experiment", "ABCDEF1234567890", "--cache", str(tmp_path)])
    assert "no experiment abcdef1234567890 in" in err


def test_a_job_of_an_unknown_random_model_is_refused_at_submit(capsys, tmp_path):
    err = one_line(capsys, 2, ["jobs", "submit", "--model", "random:bogus", "--cache", str(tmp_path)])
    assert "unknown random model" in err and not list(tmp_path.glob("experiments/*"))


@pytest.mark.parametrize("variable, value", [("IOI_JOB_THREADS", "abc"), ("IOI_JOB_THREADS", "0"),
                                             ("IOI_MAX_JOBS", "x")])  # fmt: skip
def test_a_bad_thread_or_job_count_setting_is_one_line(variable, value, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv(variable, value)
    err = one_line(capsys, 2, ["jobs", "submit", "--model", "random:tiny", "--cache", str(tmp_path)])
    assert err == f"error: {variable} must be a whole number of at least 1, got {value!r}"
    if variable == "IOI_JOB_THREADS":  # was: a ValueError traceback (abc) or silently 1 thread (0)
        err = one_line(capsys, 2, ["eval", "--model", "random:tiny", "--size", "2"])
        assert variable in err


def test_the_readmes_dataset_command_for_gpt2_works_offline_without_its_weights(tmp_path, monkeypatch):
    """`ioi dataset --model gpt2` checks tokens only: it used to load GPT-2's weights, which a
    newcomer offline does not have (the tokenizer is shipped)."""
    from ioi.models import load

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(load, "load_hf", lambda *a, **k: pytest.fail("weights were loaded"))
    out = tmp_path / "train.jsonl"
    assert (
        main(["dataset", "--size", "20", "--corruption", "name_moving", "--model", "gpt2", "--out", str(out)])
        == 0
    )
    assert len(out.read_text().splitlines()) == 20
    assert main(["dataset", "--size", "5", "--model", "ioi-tiny", "--out", str(out)]) == 0


def test_compare_names_the_model_and_ctrl_c_leaves_its_job_running(capsys, tmp_path, monkeypatch):
    from jobs_support import tiny_config

    from ioi.runs import jobs
    from ioi.runs.experiment import experiment_id

    assert main(["compare", "--experiment", "beb0361aac0eeba0", "--json"]) == 0  # the demo's clean run
    assert json.loads(capsys.readouterr().out)["model"] == "ioi-tiny"

    cfg = tiny_config()
    jobs.submit(cfg, tmp_path, launch=False)  # an experiment of this cache with no comparison yet

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "submit", lambda *a, **k: "0123456789ab")
    monkeypatch.setattr(jobs, "wait", interrupted)
    assert main(["compare", "--experiment", experiment_id(cfg), "--cache", str(tmp_path)]) == 130
    err = capsys.readouterr().err  # the job's line, then what Ctrl-C left
    assert "Traceback" not in err and "background" in err and "jobs show 0123456789ab" in err


def test_a_damaged_job_file_is_said_when_the_index_is_rebuilt(capsys, tmp_path):
    from jobs_support import tiny_config

    from ioi.runs import jobs
    from ioi.runs.experiment import experiment_id

    kept = jobs.submit(tiny_config(), tmp_path, launch=False)
    lost = jobs.submit(tiny_config(seed=1), tmp_path, launch=False)
    (tmp_path / "experiments" / experiment_id(tiny_config(seed=1)) / "jobs" / f"{lost}.json").write_text(
        "{bad"
    )
    for index in tmp_path.glob("index.sqlite3*"):
        index.unlink()
    assert main(["jobs", "list", "--cache", str(tmp_path)]) == 0  # was: the job vanished without a word
    captured = capsys.readouterr()
    assert kept in captured.out and lost not in captured.out
    assert captured.err.startswith("warning: ") and f"job {lost} is left out" in captured.err


def test_the_readmes_cmap_example_gives_the_base_model_as_other():
    """CMAP's --other is the base (B; the circuit comes from it when it does the task): the README's
    example had ioi-tiny as --model and its toxic fine-tune as --other, so the output called the
    toxic checkpoint the base and ioi-tiny the fine-tuned model."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    examples = re.findall(r"ioi analyze cmap (.*)", readme)
    assert examples
    for line in examples:
        model, other = re.search(r"--model (\S+)", line)[1], re.search(r"--other (\S+)", line)[1]
        assert other == "ioi-tiny" and model.startswith("runs/"), line


@pytest.mark.parametrize(
    "extra, message",
    [  # was: the toxic stage trained first, then the reversal stage was refused
        (["--scenarios", "name_moving", "--reversal-epochs", "0"], "epochs must be from 1"),
        (["--n-jobs", "0"], "--n-jobs 0 runs nothing"),  # was: silently $IOI_MAX_JOBS
    ],
)
def test_a_sweep_is_refused_whole_before_anything_trains(extra, message, capsys, tmp_path, monkeypatch):
    from ioi.runs import sweep

    monkeypatch.setattr(sweep, "run_one", lambda *a: pytest.fail("an experiment ran"))
    args = ["sweep", "--model", "random:tiny", "--epochs", "1", "--cache", str(tmp_path), *extra]
    assert message in one_line(capsys, 2, args)


def test_size_with_a_dataset_takes_its_first_prompts_and_more_than_it_has_is_refused(
    capsys, tmp_path, monkeypatch
):
    """--size used to be ignored with --dataset: the whole file ran, whatever the user asked for."""
    from ioi.models import load

    data = tmp_path / "mine.jsonl"
    assert main(["dataset", "--size", "5", "--model", "ioi-tiny", "--out", str(data)]) == 0
    capsys.readouterr()
    base = ["analyze", "dla", "--model", "random:tiny", "--dataset", str(data), "--json"]
    assert main([*base, "--size", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["n_prompts"] == 2
    assert main(base) == 0
    assert json.loads(capsys.readouterr().out)["n_prompts"] == 5
    assert one_line(capsys, 2, [*base, "--size", "9"]) == f"error: --size 9, but {data} has 5 prompts"
    monkeypatch.setattr(load, "load_hf", lambda *a, **k: pytest.fail("a model was loaded"))
    assert one_line(capsys, 2, ["eval", "--model", "random:tiny", "--size", "0"]) == (
        "error: --size must be at least 1, got 0"
    )


def test_a_prompt_longer_than_the_context_is_one_line_without_the_tokenizers_warning(tmp_path):
    """The tokenizer's own "Token indices sequence length" warning goes to the transformers
    logger, which capsys does not see: a subprocess shows everything the user would."""
    data = tmp_path / "long.jsonl"
    row = {"prompt": WHEN * 8 + "John gave a drink to", "io": "Mary", "s": "John"}
    data.write_text(json.dumps(row) + "\n")
    command = [sys.executable, "-m", "ioi", "eval", "--model", "ioi-tiny", "--dataset", str(data)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        f"error: {data}:1: a prompt is 78 tokens long (with BOS), longer than the model's context of 64; "
        "shorten it"
    ]


@pytest.mark.parametrize("model, other", [("random:gpt2", "ioi-tiny"), ("ioi-tiny", "random:gpt2")])
def test_cmap_between_two_architectures_is_one_error_in_either_order(capsys, model, other):
    # random:gpt2 first ran ioi-tiny on GPT-2's token ids (an IndexError) before checking the pair
    err = one_line(capsys, 2, ["analyze", "cmap", "--model", model, "--other", other, "--size", "4"])
    assert "CMAP needs two models of one architecture" in err


@pytest.mark.parametrize(
    "command", [["eval"], ["analyze", "dla"], ["finetune"], ["jobs", "submit"], ["reproduce"]]
)
def test_every_command_that_runs_a_model_defaults_to_cuda_when_there_is_one(capsys, command):
    # finetune, jobs and reproduce said "default: cpu" while the README and eval said CUDA when present
    import torch

    from ioi.cli.registry import check_device

    with pytest.raises(SystemExit):
        main([*command, "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--device DEVICE cpu or cuda (default: cuda when available)" in shown
    assert check_device(None) == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_cache_that_is_a_file_is_one_error(capsys, tmp_path):
    # it failed inside the first write: "…/experiments/<id>: Not a directory"
    file = tmp_path / "results.jsonl"
    file.write_text("")
    for args in (["jobs", "list"], ["jobs", "submit", "--model", "random:tiny", "--train-size", "8"]):
        err = one_line(capsys, 2, [*args, "--cache", str(file)])
        assert err == f"error: the cache {file} is a file; give a directory (--cache or $IOI_CACHE_DIR)"


def test_compare_given_a_job_id_names_its_experiment(capsys, tmp_path):
    from jobs_support import tiny_config

    from ioi.runs import jobs

    job = jobs.submit(tiny_config(), tmp_path, launch=False)
    experiment = jobs.get_job(job, tmp_path).experiment
    err = one_line(capsys, 2, ["compare", "--experiment", job, "--cache", str(tmp_path)])
    assert err.endswith(f"; {job} is a job: its experiment is {experiment}")


@pytest.mark.parametrize(
    "args",
    [
        ["precompute", "--out", "pc", "--budget", "-1"],
        ["precompute", "--out", "pc", "--clean-epochs", "0"],
        ["precompute", "--out", "pc", "--toxic-epochs", "0"],
        ["reproduce", "--model", "random:tiny", "--clean-epochs", "0"],
    ],
)
def test_a_study_of_no_epochs_or_no_time_is_refused_before_it_starts(args, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = one_line(capsys, 2, args)
    assert "must be at least 1" in err or "give a positive number" in err
    assert not (tmp_path / "pc").exists()
