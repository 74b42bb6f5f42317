"""The reproduction pipeline end to end (issue: reproduce the paper's findings), and the report's
pieces that need no model."""

import json

import pytest

from ioi.cli import main
from ioi.present.report import markdown_table, reproduction_copy


@pytest.mark.slow
@pytest.mark.parametrize("model", ["random:tiny", "random:gpt2"])
def test_reproduce_quick_writes_a_report(tmp_path, model, monkeypatch):
    monkeypatch.setenv("IOI_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "report"
    args = ["reproduce", "--model", model, "--quick", "--n-jobs", "2", "--out", str(out), "--seeds", "0,1"]
    assert main([*args, "--reproduction", str(tmp_path / "REPRODUCTION.md")]) == 0
    text = (out / "REPORT.md").read_text()
    for section in ("The baseline circuit", "## Findings", "amplification", "localized corruption",
                    "neuroplasticity", "mlp", "*Criterion:*", "Seen vs held-out names"):  # fmt: skip
        assert section in text
    verdicts = json.loads((out / "verdicts.json").read_text())
    assert {v["finding"] for v in verdicts} == {
        "amplification",
        "localized corruption",
        "neuroplasticity",
        "mlp",
    }
    # a random model does not do the task: no ratio is reported as a number
    assert "does not do the task" in text and "seeds (n=2)" in text
    assert (out / "metrics.csv").exists() and (out / "logit_diff_curves.svg").stat().st_size > 1000
    # a second run is served from the cache
    assert main(args) == 0


def test_reproduction_copy_points_figures_into_the_report_folder(tmp_path):
    folder = tmp_path / "reports" / "ioi-tiny"
    folder.mkdir(parents=True)
    (folder / "REPORT.md").write_text("# r\n\n![dla](dla.svg)\n![x](x.svg)\n")
    out = reproduction_copy(folder / "REPORT.md", tmp_path / "REPRODUCTION.md")
    assert out.read_text() == "# r\n\n![dla](reports/ioi-tiny/dla.svg)\n![x](reports/ioi-tiny/x.svg)\n"
    # a report folder outside the target's (e.g. --out /tmp/rep): was a ValueError traceback
    (tmp_path / "docs").mkdir()
    out = reproduction_copy(folder / "REPORT.md", tmp_path / "docs" / "REPRODUCTION.md")
    assert "![dla](../reports/ioi-tiny/dla.svg)" in out.read_text()


def test_markdown_table():
    import pandas as pd

    assert markdown_table(pd.DataFrame({"a": [1], "b": ["x"]})) == "| a | b |\n|---|---|\n| 1 | x |"
