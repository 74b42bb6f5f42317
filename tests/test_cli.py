import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ioi.cli import main
from ioi.task.defaults import SCENARIOS, TOXIC_DATASETS, default_lr

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ioi", *args], capture_output=True, text=True, timeout=300)


def test_module_entry_point_lists_every_command():
    out = run_cli("--help")
    assert out.returncode == 0
    for cmd in ("dataset", "eval", "finetune", "pretrain-tiny"):
        assert cmd in out.stdout


@pytest.mark.parametrize("cmd", ["dataset", "eval", "finetune", "pretrain-tiny"])
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([cmd, "--help"])
    assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["finetune"], ["jobs", "submit"], ["eval"]])
def test_help_states_the_defaults_the_parser_uses(argv, capsys):
    """Each option that has a default says it in --help (flags and unset options say none)."""
    from ioi.cli import HelpFormatter, build_parser

    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    helped = " ".join(capsys.readouterr().out.split())
    parser = build_parser()
    for name in argv:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    shown = [a for a in parser._actions if HelpFormatter._shows_default(a)]
    assert len(shown) >= 2
    for a in shown:  # the option's line (up to the next option) says its default
        line = helped.split(f" {a.option_strings[-1]} ", 1)[1].split(" --", 1)[0]
        assert "default" in line, a.option_strings
    assert "(default: False)" not in helped and "(default: None)" not in helped


def cli_json(capsys, *args: str) -> dict:
    assert main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def test_dataset_eval_finetune_round_trip(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    assert main(["dataset", "--size", "30", "--seed", "1", "--corruption", "name_moving",
                 "--model", "random:gpt2", "--out", str(data)]) == 0  # fmt: skip
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    assert len(rows) == 30 and all(r["label"] not in (r["io"], r["s"]) for r in rows)

    result = cli_json(capsys, "eval", "--model", "random:gpt2", "--dataset", str(data), "--json")
    assert result["n"] == 30 and {"logit_diff", "accuracy", "io_prob"} <= set(result)

    ck = tmp_path / "ft"
    args = [
        "finetune",
        "--model",
        "random:tiny",
        "--scenario",
        "clean",
        "--epochs",
        "2",  # fmt: skip
        "--checkpoint-epochs",
        "1",
        "--train-size",
        "32",
        "--eval-size",
        "8",
        "--out",
        str(ck),
    ]
    assert main(args) == 0
    assert (ck / "epoch-001" / "manifest.json").exists() and (ck / "epoch-002" / "model.safetensors").exists()
    out, err = capsys.readouterr()
    assert out.split() == [str(ck / "epoch-001"), str(ck / "epoch-002")]
    for epoch in (1, 2):  # each checkpoint's evaluation, as its manifest holds it
        m = json.loads((ck / f"epoch-00{epoch}" / "manifest.json").read_text())["metrics"]
        assert (f"epoch {epoch}: logit diff {m['logit_diff']:.2f} ± {m['logit_diff_se']:.2f}, "
                f"accuracy {m['accuracy']:.3f}, train loss {m['train_loss']:.3f}") in err  # fmt: skip
    assert re.search(r"trained 2 steps in [\d.]+ s: [\d.]+ steps/s, evaluations and checkpoints incl", err)
    assert (
        cli_json(capsys, "eval", "--checkpoint", str(ck / "epoch-002"), "--size", "10", "--json")["n"] == 10
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["dataset", "--size", "0", "--out", "x.jsonl"], "at least 1"),
        (["dataset", "--size", "3", "--corruption", "bogus", "--out", "x.jsonl"], "known:"),
        (["eval", "--model", "/no/such/model", "--size", "3"], "cannot load"),
        (["eval", "--dataset", "/no/such.jsonl", "--model", "random:tiny"], "does not exist"),
        (["finetune", "--scenario", "reversal", "--model", "random:tiny", "--out", "o"], "needs --from"),
        (["finetune", "--checkpoint-epochs", "1,x", "--out", "o"], "separated by commas"),
    ],
)
def test_user_errors_are_one_line(tmp_path, capsys, args, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_installed_entry_points_answer_from_any_directory(tmp_path):
    """`python -m ioi` works outside the repository, and `--help` loads none of the heavy libraries."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "ioi", "jobs", "submit", "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0 and "--analyses" in out.stdout
    heavy = "{'torch', 'transformers', 'transformer_lens', 'pandas'}"
    check = f"import ioi.cli, sys; print(sorted({heavy} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert loaded.returncode == 0 and loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr


def test_help_mirrors_of_the_registries_match_them():
    """The light lists the help texts show are the registries' names, in the same order."""
    from ioi.models.train import SCENARIOS as TRAINED
    from ioi.task.corruptions import CORRUPTIONS

    assert TOXIC_DATASETS == tuple(CORRUPTIONS) and SCENARIOS == TRAINED


@pytest.mark.parametrize("model, lr", [("ioi-tiny", 1e-4), ("gpt2", 1e-5), ("random:gpt2", 1e-5)])
def test_one_default_lr_per_model_for_every_entry_point(model, lr, tmp_path, monkeypatch, capsys):
    """A job submitted without --lr records the model's default, the one the help text states."""
    from ioi.cli import build_parser
    from ioi.cli.runs import experiment_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # gpt2 need not be downloaded to build its config
    args = build_parser().parse_args(["jobs", "submit", "--model", model])
    assert default_lr(model) == lr and experiment_config(args).lr == lr
    with pytest.raises(SystemExit):
        main(["jobs", "submit", "--help"])
    helped = " ".join(capsys.readouterr().out.split())
    assert "ioi-tiny 1e-4" in helped and "other models 1e-5" in helped


CITATION = re.compile(r"METHODS ((?:§\d+(?:[–-]\d+)?(?:, | and )?)+)")


def cited_sections(text: str) -> set[int]:
    """The section numbers `text` cites as "METHODS §n", "§n–m" or "§n, §m"."""
    out: set[int] = set()
    for group in CITATION.findall(text):
        for first, last in re.findall(r"§(\d+)(?:[–-](\d+))?", group):
            out |= set(range(int(first), int(last or first) + 1))
    return out


def test_every_methods_citation_resolves():
    """Each "METHODS §n" in the code, pages, reports and README is a section of docs/METHODS.md."""
    methods = (REPO / "docs" / "METHODS.md").read_text()
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", methods, re.M)}
    files = [*(REPO / "ioi").rglob("*.py"), *(REPO / "app_pages").glob("*.py"),
             *(REPO / "reports").rglob("*.md"), REPO / "README.md", REPO / "streamlit_app.py"]  # fmt: skip
    cited = {f.relative_to(REPO): cited_sections(f.read_text()) for f in files}
    assert cited_sections("METHODS §1–2 and METHODS §4, §7") == {1, 2, 4, 7}
    assert sum(map(len, cited.values())) > 10  # the citations exist to be checked
    missing = {str(f): sorted(n - sections) for f, n in cited.items() if n - sections}
    assert not missing, f"sections not in docs/METHODS.md: {missing}"
    assert sections == set(range(1, max(sections) + 1))  # numbered without gaps


def test_eval_says_what_each_number_is_and_has_no_standard_error_from_one_prompt(capsys, tmp_path):
    assert main(["eval", "--model", "ioi-tiny", "--size", "8"]) == 0
    out = capsys.readouterr().out
    assert "8 prompts, ioi-tiny" in out and "s.e.): logit(IO) − logit(S) at the last position" in out
    assert "accuracy" in out and "share of prompts with logit(IO) > logit(S)" in out
    one = tmp_path / "one.jsonl"
    prompt = "When Mary and John went to the store, John gave a drink to"
    one.write_text(json.dumps({"prompt": prompt, "io": "Mary", "s": "John"}) + "\n")
    assert main(["eval", "--model", "ioi-tiny", "--dataset", str(one), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)  # strict JSON: no NaN
    assert result["n"] == 1 and result["logit_diff_se"] is None and result["logit_diff"] > 0
    assert main(["eval", "--model", "ioi-tiny", "--dataset", str(one)]) == 0
    out = capsys.readouterr().out
    assert "undefined from one prompt" in out and out.startswith("1 prompt, ioi-tiny")


def test_analyze_text_says_what_the_table_is_and_that_it_is_cut(capsys):
    assert main(["analyze", "dla", "--model", "ioi-tiny", "--size", "6"]) == 0
    out = capsys.readouterr().out
    assert "Direct logit attribution of each head on logit(IO) − logit(S) at END." in out
    assert "The 15 of 24 rows with the largest |value| (all: --json or --out):" in out
    assert "NaN" not in out
    # a model against itself: every share of the (zero) gap is undefined, most heads have no class
    for args in (["cmap", "--other", "ioi-tiny"], ["faithfulness"]):
        assert main(["analyze", *args, "--model", "ioi-tiny", "--size", "6"]) == 0
        out = capsys.readouterr().out
        assert "NaN" not in out and not [line for line in out.splitlines() if line.endswith(": ")], out


def test_a_circuit_found_on_another_model_is_used_with_a_warning(capsys, tmp_path):
    found = tmp_path / "circuit.json"
    assert main(["analyze", "classify", "--model", "ioi-tiny", "--size", "6", "--out", str(found)]) == 0
    capsys.readouterr()
    use = ["analyze", "faithfulness", "--circuit", str(found), "--size", "4"]
    assert main([*use, "--model", "ioi-small"]) == 0
    assert f"warning: --circuit {found} was found on ioi-tiny, not on ioi-small" in capsys.readouterr().err
    assert main([*use, "--model", "ioi-tiny"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_version(capsys):
    from ioi import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"ioi {__version__}"


def test_experiments_lists_a_cache_and_the_demo_and_shows_each_epochs_metrics(capsys, tmp_path):
    """A finished run can be read from the command line: the listing names the user's experiment
    beside the demo's (seed by seed, each toxic run followed by its reversal), and one
    experiment's view gives the evaluation the store holds at every cached epoch."""
    from jobs_support import tiny_config

    from ioi.runs.cache import demo_root, load_metrics_series
    from ioi.runs.experiment import run_experiment

    mine = run_experiment(tiny_config(), tmp_path).id
    listed = json.loads(cli_json_text(capsys, "experiments", "--cache", str(tmp_path), "--json"))
    ours = [e for e in listed if not e["demo"]]
    assert [(e["id"], e["cached_epochs"], e["status"]) for e in ours] == [(mine, [0, 1, 2], "done")]
    demo = [e for e in listed if e["demo"]]
    assert {e["cache"] for e in demo} == {str(demo_root())} and len(demo) == 21
    assert main(["experiments", "--cache", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    demo_ids = [ln.split()[0] for ln in lines[lines.index(next(x for x in lines if "(the demo" in x)) + 1 :]
                if ln.startswith("  ")]  # fmt: skip
    by_id = {e["id"]: e["config"] for e in demo}
    for before, after in zip(demo_ids, demo_ids[1:]):
        if by_id[after]["parent"] is not None:  # a reversal follows its toxic parent
            assert before == by_id[after]["parent"]

    shown = json.loads(cli_json_text(capsys, "experiments", mine.upper(), "--cache", str(tmp_path), "--json"))
    series = load_metrics_series(tmp_path, mine)
    assert [r["epoch"] for r in shown["epochs"]] == [0, 1, 2]
    assert [r["logit_diff"] for r in shown["epochs"]] == pytest.approx(series["logit_diff"].tolist())
    assert all("toy-norms" in r["analyses"] for r in shown["epochs"])
    assert main(["experiments", mine, "--cache", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    for r in shown["epochs"]:
        assert f"epoch {r['epoch']:>3}: logit diff {r['logit_diff']:.2f} ± {r['logit_diff_se']:.2f}" in text
    assert main(["experiments", "0123456789abcdef", "--cache", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: no experiment 0123456789abcdef in ")


def cli_json_text(capsys, *args: str) -> str:
    assert main(list(args)) == 0
    return capsys.readouterr().out


def test_one_prompt_has_no_interval(capsys):
    """A bootstrap of one prompt repeats it: its interval was [x, x], as if certain."""
    assert main(["analyze", "faithfulness", "--model", "ioi-tiny", "--size", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["faithfulness"] > 0 and out["faithfulness_lo"] is None and out["faithfulness_hi"] is None
    assert main(["analyze", "faithfulness", "--model", "ioi-tiny", "--size", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["faithfulness_lo"] < out["faithfulness_hi"]


def test_an_empty_table_is_said_in_words_not_as_a_pandas_dump(capsys):
    assert main(["analyze", "faithfulness", "--model", "random:tiny", "--size", "4"]) == 0
    out = capsys.readouterr().out
    assert "Empty DataFrame" not in out and "No rows: the model does not do the task: F(M) = " in out
