"""`python -m ioi analyze METHOD`: JSON out, user errors as one line with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_each_declaration_matches_its_function():
    """The light declarations are the functions' keyword options, with the same defaults."""
    import inspect

    from ioi.methods.analyses import BUILTIN, implementation

    for name, entry in BUILTIN.items():
        params = inspect.signature(implementation(name)).parameters
        keywords = {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k != "other"}
        declared = {o.name: o.default for o in entry.options}
        takes_more = any(p.kind is p.VAR_KEYWORD for p in params.values())
        assert set(keywords) <= set(declared) and (takes_more or set(declared) == set(keywords)), name
        for key, default in keywords.items():
            want = default.value if hasattr(default, "value") else default  # an Enum default
            assert declared[key] == want or (declared[key] == () and want == ()), (name, key)


def test_classify_threshold_declarations_are_its_thresholds():
    from dataclasses import fields

    from ioi.methods.analyses import BUILTIN
    from ioi.methods.classify import ClassifyThresholds

    declared = {o.name: o.default for o in BUILTIN["classify"].options}
    assert {f.name: f.default for f in fields(ClassifyThresholds)}.items() <= declared.items()


def test_listing_the_registry_and_checking_options_import_no_torch():
    code = (
        "import sys; from ioi.methods.analyses import ANALYSES, analysis;"
        "opts = analysis('path-patch').check({'receiver': 'q', 'heads': '9.9', 'frozen_mlp': 'true'});"
        "assert opts == {'receiver': 'q', 'heads': '9.9', 'frozen_mlp': True}, opts;"
        "assert len(ANALYSES) >= 9 and 'torch' not in sys.modules"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    "option, message",
    [
        ({"foo": 1}, "unknown patch options foo; its options: position, normalize"),
        ({"position": "s3"}, "one of end, io, s1, s1+1, s2"),
        ({"normalize": "maybe"}, "option normalize is bool"),
    ],
)
def test_options_are_refused_before_anything_runs(option, message):
    """run_analysis checks the declaration first: no model is even needed to be refused."""
    from ioi.methods.analyses import OptionError, run_analysis

    with pytest.raises(OptionError, match=message.replace("+", r"\+")):
        run_analysis("patch", None, None, None, **option)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--analyses", "dla,bogus"], "unknown analysis 'bogus'; known: attention, circuit-tests, classify"),
        (["--model", "no-such-model"], "'no-such-model' is neither a directory"),
        (["--model", "/no/such/dir"], "model directory /no/such/dir does not exist"),
    ],
)
def test_jobs_submit_refuses_unknown_analyses_and_models_at_once(argv, message, tmp_path, capsys):
    assert main(["jobs", "submit", "--cache", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not (tmp_path / "jobs").exists() and not list(tmp_path.glob("experiments/*"))
