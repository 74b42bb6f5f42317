import json
import subprocess
import sys

import pytest

from ioi.cli import main


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
    capsys.readouterr()
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
