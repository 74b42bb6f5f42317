"""`python -m ioi analyze METHOD`: JSON out, user errors as one line with exit status 2."""

from __future__ import annotations

import json

import pytest

from ioi.cli import main
from ioi.cli.analyze import parse_options


def test_parse_options_keeps_head_lists_as_text():
    assert parse_options(["heads=10.10", "frozen_mlp=true", "name-mover=0.1", "receiver=q"]) == {
        "heads": "10.10", "frozen_mlp": True, "name_mover": 0.1, "receiver": "q",
    }  # fmt: skip
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_options(["oops"])


def test_analyze_patch_prints_one_json_object_with_every_head(capsys, tmp_path):
    out = tmp_path / "r.json"
    status = main(["analyze", "patch", "--model", "random:tiny", "--size", "6", "--json", "--out", str(out)])
    assert status == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["method"] == "patch" and len(printed["heads"]) == 2 * 4
    assert set(printed["heads"][0]) == {"layer", "head", "value"}


def test_analyze_faithfulness_and_classify_fields(capsys):
    assert main(["analyze", "faithfulness", "--model", "random:tiny", "--size", "6", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"faithfulness", "f_model", "f_circuit", "abs_diff", "ablation"} <= set(result)
    assert main(["analyze", "classify", "--model", "random:tiny", "--size", "6", "--json"]) == 0
    assert "classes" in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    "argv",
    [
        ["analyze", "no-such-method", "--model", "random:tiny", "--size", "4"],
        ["analyze", "knockout", "--model", "random:tiny", "--size", "4", "--option", "heads=9.9"],
        ["analyze", "knockout", "--model", "random:tiny", "--size", "4", "--option", "ablation=avg"],
        ["analyze", "patch", "--model", "random:tiny", "--size", "4", "--option", "nonsense=1"],
        ["analyze", "patch", "--model", "random:tiny", "--size", "0"],
    ],
)
def test_analyze_user_errors_exit_2_with_one_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
