"""The Playground and head pages under AppTest, on the shipped demo cache (its shipped weights): a
dataset prompt shows the three default checkpoints' predictions as the cache's metrics say; an
unknown name and an over-long prompt are refused with a message; the head page's DLA is the Logit
attribution page's; the page helpers import no torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from dashboard_support import open_page  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from ioi.runs.cache import demo_root, load_entry  # noqa: E402
from ioi.task.names import analysis_samples  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def demo_env(tmp_path, monkeypatch):
    monkeypatch.setenv("IOI_DEMO_DIR", str(REPO / "cache" / "demo"))
    monkeypatch.setenv("IOI_CACHE_DIR", str(tmp_path / "user"))
    from test_prompt import story

    return story()


def app(page: str, **params: str) -> AppTest:
    return open_page(page, timeout=300, **params)


def test_a_dataset_prompt_shows_each_checkpoints_prediction_as_the_metrics_say(demo_env):
    clean, toxic, reversal = demo_env
    x = analysis_samples(0, 5)[4]  # not the prompt the page opens on
    at = app("app_pages/playground.py")
    at.text_area(key="pg_prompt").input(x.prompt).run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    assert at.multiselect(key="pg_checkpoints").value == [f"{clean}:0", f"{toxic}:3", f"{reversal}:3"]
    predicted = [m.value for m in at.metric if m.label == "predicts"]
    diffs = [float(m.value) for m in at.metric if m.label == "logit difference"]
    cached = [
        load_entry(demo_root(), i, e, "metrics").summary["logit_diff"]
        for i, e in ((clean, 0), (toxic, 3), (reversal, 3))
    ]
    assert [d > 0 for d in cached] == [True, False, True]  # the cache: IO, then S, then IO again
    assert predicted == [x.io, x.s, x.io]
    assert [d > 0 for d in diffs] == [d > 0 for d in cached]
    assert at.query_params["prompt"] == x.prompt


def test_an_unknown_name_and_a_long_prompt_are_refused_with_what_to_change(demo_env):
    at = app(
        "app_pages/playground.py", prompt="When Mary and Zorblax went to the store, Mary gave a drink to"
    )
    assert not at.exception
    assert [e.value for e in at.error] == [
        "name(s) not in this model's vocabulary: Zorblax (it would read them as its unknown token); use "
        "names the model knows"
    ]
    assert not at.metric  # nothing ran
    long = "When Mary and John went to the store" + ", and then" * 30 + ", John gave a drink to"
    at.text_area(key="pg_prompt").input(long).run()
    assert [e.value for e in at.error] == [
        "a prompt is 105 tokens long (with BOS), longer than the model's context of 64; shorten it"
    ]
    at.text_area(key="pg_prompt").input("When Mary and John went to the store, Kate gave a drink to").run()
    assert "no name is repeated" in at.error[0].value


def test_the_head_pages_dla_at_epoch_0_is_the_logit_attribution_pages(demo_env):
    from test_dashboard import chart_frames

    clean, _, _ = demo_env
    at = app("app_pages/attribution.py", exp=clean, epoch="0", mode="one")
    frame = next(f for f in chart_frames(at.get("vega_lite_chart")[0]) if "value" in f)
    row = frame[(frame["layer"] == 1) & (frame["head"] == 7)].iloc[0]
    head = app("app_pages/head.py", head="1.7", exp=clean, epoch="0")
    assert not head.exception and not head.error, [e.value for e in (*head.exception, *head.error)]
    dla = next(m for m in head.metric if m.label.startswith("DLA of 1.7"))
    value, _, interval = dla.value.partition(" [")  # "2.41 [1.95, 2.87]": the value and its 95% interval
    assert "pretrained" in dla.label and float(value) == pytest.approx(row["value"], abs=5e-3)
    lo, hi = map(float, interval.rstrip("]").split(", "))
    assert lo < float(value) < hi
    table = head.dataframe[0].value
    assert table["class"].iloc[0] == "name mover" and len(head.get("vega_lite_chart")) >= 3
    # what the table shows: a dash where an analysis did not run (the browser's grid writes its
    # `placeholder` for a missing value, "None" by default, whatever a Styler says), DLA to 3 decimals
    import pyarrow as pa

    grid = head.dataframe[0].proto
    shown = pa.ipc.open_stream(grid.arrow_data.styler.display_values).read_all()
    cells = [str(v) for column in shown.to_pydict().values() for v in column]
    assert grid.placeholder == "—" and table.isna().any().any() and f"{row['value']:.3f}" in cells


def test_a_head_outside_the_model_is_a_message(demo_env):
    at = app("app_pages/head.py", head="9.9")
    assert not at.exception and "outside" in at.error[0].value


def test_the_page_helpers_import_no_torch():
    code = (
        "import sys, app_pages._prompt, app_pages._ui, ioi.present.prompt_charts, ioi.task.prompt, "
        "ioi.runs.catalog\nprint(sorted(m for m in ('torch', 'transformer_lens') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=os.environ, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_playground_opens_on_the_papers_prompt_where_the_name_movers_write_io(demo_env):
    """The first evaluation prompt, the old default, was one where name mover 1.7 pushes towards
    S; the paper's example shows the circuit at work: every name mover with DLA > 0."""
    from ioi.task.prompt import EXAMPLE

    at = app("app_pages/playground.py")
    assert not at.exception, [e.value for e in at.exception]
    assert at.text_area(key="pg_prompt").value == EXAMPLE
