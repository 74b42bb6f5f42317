"""The reproduction pipeline end to end (issue: reproduce the paper's findings)."""

import pytest

from ioi.cli import main


@pytest.mark.slow
@pytest.mark.parametrize("model", ["random:tiny", "random:gpt2"])
def test_reproduce_quick_writes_a_report(tmp_path, model, monkeypatch):
    monkeypatch.setenv("IOI_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "report"
    assert main(["reproduce", "--model", model, "--quick", "--n-jobs", "1", "--out", str(out)]) == 0
    text = (out / "REPORT.md").read_text()
    for section in ("Circuit amplification", "Localized corruption", "Neuroplasticity", "MLPs"):
        assert section in text
    assert "n/a" not in text.split("## 1.")[1].split("##")[0]  # the amplification numbers exist
    assert (out / "metrics.csv").exists() and (out / "logit_diff_curves.svg").stat().st_size > 1000
    # a second run is served from the cache
    assert main(["reproduce", "--model", model, "--quick", "--n-jobs", "1", "--out", str(out)]) == 0
