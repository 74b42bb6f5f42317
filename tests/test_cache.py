"""The result cache: round trips, damaged files detected and recomputed, concurrent writers."""

from __future__ import annotations

import multiprocessing as mp

import pandas as pd
import pytest
import torch
from jobs_support import TOY, tiny_config

from ioi.methods.analyses import AnalysisResult
from ioi.runs import cache, catalog
from ioi.runs.experiment import experiment_id, is_complete, run_experiment

EXP = "0123456789abcdef"


def _result(scale: float = 1.0) -> AnalysisResult:
    heads = pd.DataFrame({"layer": [0, 0, 1], "head": [0, 1, 0], "value": [0.5 * scale, -1.0, 2.0]})
    classes = pd.DataFrame({"c": ["nm"]})
    return AnalysisResult("dla", heads, {"faithfulness": 0.87 * scale}, {"classes": classes})


def test_analysis_round_trip(tmp_path):
    cache.write_analysis(tmp_path, EXP, 3, "dla", _result())
    back = cache.load_analysis(tmp_path, EXP, 3, "dla")
    pd.testing.assert_frame_equal(back.heads, _result().heads)
    pd.testing.assert_frame_equal(back.tables["classes"], _result().tables["classes"])
    assert back.summary == {"faithfulness": 0.87} and back.method == "dla"
    assert cache.load_analysis(tmp_path, EXP, 4, "dla") is None
    # no temporary files are left beside the entry
    assert not [p for p in (tmp_path / "experiments").rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("victim", ["dla.json", "dla.heads.parquet"])
def test_truncated_file_is_detected_and_quarantined(tmp_path, victim):
    cache.write_analysis(tmp_path, EXP, 1, "dla", _result())
    path = cache.epoch_dir(tmp_path, EXP, 1) / victim
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(cache.CorruptEntry, match=victim):
        cache.read_entry(tmp_path, EXP, 1, "dla")
    reports: list[str] = []
    assert cache.load_entry(tmp_path, EXP, 1, "dla", report=reports.append) is None
    assert "recomputed" in reports[0]
    assert list(cache.epoch_dir(tmp_path, EXP, 1).glob("dla.json.*.corrupt"))  # kept for inspection
    assert cache.read_entry(tmp_path, EXP, 1, "dla") is None  # now simply absent


def test_edited_value_fails_checksum(tmp_path):
    path = cache.write_analysis(tmp_path, EXP, 1, "dla", _result())
    path.write_text(path.read_text().replace("0.87", "0.97"))
    with pytest.raises(cache.CorruptEntry, match="checksum"):
        cache.read_entry(tmp_path, EXP, 1, "dla")


def test_paths_come_only_from_ids_and_names(tmp_path):
    with pytest.raises(ValueError, match="not an experiment id"):
        cache.experiment_dir(tmp_path, "../../etc")
    with pytest.raises(ValueError, match="not a valid analysis name"):
        cache.write_entry(tmp_path, EXP, 0, "../x", {})


def test_truncated_result_is_recomputed_by_the_next_run(tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_config()
    first = run_experiment(cfg, tmp_path)
    original = cache.load_analysis(tmp_path, first.id, 2, TOY)
    table = cache.epoch_dir(tmp_path, first.id, 2) / f"{TOY}.heads.parquet"
    assert is_complete(cfg, tmp_path)
    table.write_bytes(table.read_bytes()[:20])
    again = run_experiment(cfg, tmp_path)
    assert not again.trained  # checkpoints were still there: only the analysis ran again
    assert any("recomputed" in n for n in again.notes)
    assert is_complete(cfg, tmp_path)
    redone = cache.load_analysis(tmp_path, first.id, 2, TOY)
    table.write_bytes(b"")
    with pytest.warns(UserWarning, match="recomputed"):
        assert not is_complete(cfg, tmp_path)
    run_experiment(cfg, tmp_path)
    pd.testing.assert_frame_equal(redone.heads, original.heads)
    assert redone.summary == original.summary
    series = cache.load_metrics_series(tmp_path, first.id)
    assert series["epoch"].tolist() == [0, 1, 2]
    assert series[f"{TOY}.logit_diff"].iloc[-1] == pytest.approx(original.summary["logit_diff"])
    assert series["logit_diff"].tolist() == [first.metrics[e]["logit_diff"] for e in (0, 1, 2)]
    [info] = catalog.list_experiments(tmp_path)
    assert info.id == experiment_id(cfg) and sorted(info.epochs) == [0, 1, 2]


def _writer(root: str, worker: int, n: int) -> None:
    for i in range(n):
        cache.write_analysis(root, EXP, i % 3, "dla", _result(scale=worker + 1))
        cache.write_analysis(root, EXP, i % 3, f"w{worker}", _result(scale=i + 1))


def test_concurrent_writers_leave_only_whole_entries(tmp_path):
    ctx = mp.get_context("fork")  # the writers need no torch; fork starts them at once
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 15)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    for epoch in range(3):
        shared = cache.read_entry(tmp_path, EXP, epoch, "dla")  # last writer wins, whole
        assert shared.summary["summary"]["faithfulness"] in {0.87 * (w + 1) for w in range(3)}
        for w in range(3):
            assert cache.read_entry(tmp_path, EXP, epoch, f"w{w}") is not None
    with cache.connect(tmp_path) as db:
        assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 3 * 4
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_stored_verdicts_go_stale_when_an_input_is_added_or_were_judged_from_other_inputs(tmp_path):
    import json

    cache.register_experiment(tmp_path, EXP, {"config": {"scenario": "clean"}})
    cache.write_analysis(tmp_path, EXP, 3, "dla", _result())
    catalog.write_verdicts(tmp_path, [{"finding": "amplification"}])
    assert catalog.read_verdicts(tmp_path) == ([{"finding": "amplification"}], True)
    cache.write_analysis(tmp_path, EXP, 3, "compare-family", _result())  # read by the edge revival
    assert catalog.read_verdicts(tmp_path)[1] is False
    catalog.write_verdicts(tmp_path, [{"finding": "amplification"}])
    assert catalog.read_verdicts(tmp_path)[1] is True
    # A file an older release wrote from fewer inputs, its fingerprint right for those: stale.
    path = tmp_path / catalog.VERDICTS
    stored = json.loads(path.read_text()) | {"inputs": ["cmap", "faithfulness"]}
    stored["fingerprint"] = catalog.fingerprint(tmp_path, stored["inputs"])
    path.write_text(json.dumps(stored))
    assert catalog.read_verdicts(tmp_path)[1] is False
