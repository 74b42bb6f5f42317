"""Dashboard pages under Streamlit's AppTest: every page renders on a cache, forms refuse bad input,
launching a job creates it, damaged entries offer a recompute. Pure form helpers are tested directly."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from app_pages import _common  # noqa: E402
from ioi.task.data import make_dataset  # noqa: E402

APP = str(Path(__file__).resolve().parent.parent / "streamlit_app.py")
# page -> (element kinds that must be present on the demo cache)
PAGES = {
    "app_pages/overview.py": ("graphviz_chart",),
    "app_pages/datasets.py": ("dataframe",),
    "app_pages/experiments.py": ("dataframe",),
    "app_pages/attribution.py": ("vega_lite_chart",),
    "app_pages/circuit.py": ("graphviz_chart",),
    "app_pages/faithfulness.py": ("vega_lite_chart",),
    "app_pages/knockout.py": ("vega_lite_chart",),
    "app_pages/cmap.py": ("vega_lite_chart",),
}
HAS_CACHE = _common.cache_layer() is not None
needs_cache = pytest.mark.skipif(not HAS_CACHE, reason="the result cache (ioi/cache.py) is not in this build")


@pytest.fixture()
def dash_env(tmp_path, monkeypatch):
    """A synthetic demo cache and an empty user cache, selected through the environment."""
    if HAS_CACHE:
        from dashboard_support import build_cache

        build_cache(tmp_path / "demo")
    monkeypatch.setenv("IOI_DEMO_DIR", str(tmp_path / "demo"))
    monkeypatch.setenv("IOI_CACHE_DIR", str(tmp_path / "user"))
    return tmp_path


def app(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    if page != "app_pages/overview.py":
        at.switch_page(page)
    return at.run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@needs_cache
@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_renders_on_the_demo_cache(dash_env, page):
    at = app(page)
    assert_clean(at)
    for kind in PAGES[page]:
        found = at.dataframe if kind == "dataframe" else at.get(kind)
        assert found, f"{page} shows no {kind}"
    if "vega_lite_chart" in PAGES[page]:
        assert at.caption, "every chart has a caption"
        assert {b.label for b in at.get("download_button")} >= {"CSV", "PNG", "SVG"}


@pytest.mark.parametrize("page", list(PAGES))
def test_pages_without_results_show_empty_states(tmp_path, monkeypatch, page):
    monkeypatch.setenv("IOI_DEMO_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("IOI_CACHE_DIR", str(tmp_path / "user"))
    at = app(page)
    assert not at.exception, [e.value for e in at.exception]
    if page in (
        "app_pages/attribution.py",
        "app_pages/faithfulness.py",
        "app_pages/knockout.py",
        "app_pages/cmap.py",
    ):
        assert any("No " in i.value and "run" in i.value.lower() for i in at.info), [i.value for i in at.info]


@needs_cache
def test_attribution_compares_two_checkpoints(dash_env):
    at = app("app_pages/attribution.py")
    at.sidebar.radio(key="dla_mode").set_value("side by side").run()
    assert_clean(at)
    assert len(at.get("vega_lite_chart")) == 2
    at.sidebar.radio(key="dla_mode").set_value("difference B − A").run()
    assert_clean(at)
    assert len(at.get("vega_lite_chart")) == 1 and "B − A" in at.caption[0].value


@needs_cache
def test_damaged_entry_is_reported_with_a_recompute_button(dash_env):
    entry = dash_env / "demo" / "experiments" / "aaaa000000000001" / "epoch-002" / "dla.json"
    body = json.loads(entry.read_text())
    body["payload"]["summary"]["summary"]["logit_diff"] = 99.0  # edited: checksum no longer matches
    entry.write_text(json.dumps(body))
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["opened_experiment"] = f"{(dash_env / 'demo').resolve()}|aaaa000000000001"
    at.switch_page("app_pages/attribution.py")
    at.run()
    assert not at.exception
    assert any("damaged" in e.value for e in at.error), [e.value for e in at.error]
    assert any(b.label == "Recompute dla" for b in at.button)


@needs_cache
def test_experiment_form_refuses_bad_values(dash_env):
    from ioi.runs.jobs import list_jobs

    at = app("app_pages/experiments.py")
    at.text_input(key="form_lr").set_value("fast")
    at.text_input(key="form_checkpoints").set_value("1, 9")
    at.button(key="form_launch").click().run()
    assert not at.exception
    messages = " ".join(e.value for e in at.error)
    assert "learning rate" in messages and "outside 1..3" in messages
    assert not (dash_env / "user" / "index.sqlite3").exists() or not list_jobs(dash_env / "user")


@needs_cache
def test_launching_a_tiny_job_creates_it(dash_env):
    from ioi.runs.jobs import cancel, list_jobs

    at = app("app_pages/experiments.py")
    at.selectbox(key="form_model").set_value("random:tiny")
    at.number_input(key="form_epochs").set_value(1)
    at.text_input(key="form_checkpoints").set_value("")
    at.text_input(key="form_lr").set_value("1e-3")
    at.number_input(key="form_train").set_value(16)
    at.number_input(key="form_eval").set_value(8)
    at.number_input(key="form_analysis").set_value(4)
    picker = at.multiselect(key="form_analyses")
    picker.set_value([a for a in ("dla",) if a in picker.options])  # metrics alone when none is registered
    at.button(key="form_launch").click().run()
    assert_clean(at)
    jobs = list_jobs(dash_env / "user")
    try:
        assert len(jobs) == 1 and jobs[0].config["model"] == "random:tiny" and jobs[0].config["epochs"] == 1
        assert any(jobs[0].id in s.value for s in at.success)
    finally:
        for job in jobs:
            cancel(job.id, dash_env / "user")


def test_parse_epochs_and_lr():
    assert _common.parse_epochs("5, 1,3 3", 5) == (1, 3, 5)
    assert _common.parse_epochs("", 5) == ()
    with pytest.raises(_common.UserError, match="outside 1..5"):
        _common.parse_epochs("0, 6", 5)
    with pytest.raises(_common.UserError, match="whole numbers"):
        _common.parse_epochs("one", 5)
    assert _common.parse_lr("1e-4") == 1e-4
    for bad in ("x", "0", "-1e-3", "2"):
        with pytest.raises(_common.UserError):
            _common.parse_lr(bad)


@needs_cache
def test_experiment_config_lists_every_bad_field():
    cfg, errors = _common.experiment_config(
        {
            "model": "no-such-model",
            "scenario": "reversal",
            "epochs": 2,
            "checkpoints": "3",
            "lr": "x",
            "analyses": [],
        }  # fmt: skip
    )
    assert cfg is None and set(errors) == {"model", "checkpoints", "lr", "parent"}
    cfg, errors = _common.experiment_config(
        {
            "model": "random:tiny",
            "scenario": "clean",
            "epochs": 2,
            "checkpoints": "1",
            "lr": "1e-3",
            "analyses": ["dla"],
            "train_size": 16,
        }  # fmt: skip
    )
    assert errors == {} and cfg.checkpoint_epochs == (1,) and cfg.lr == 1e-3 and cfg.train_size == 16


def test_role_words_mark_io_s1_s2_end():
    import re

    clean = make_dataset(30, 0, "eval")
    for x in clean:
        words = re.split(r"(\W+)", x.prompt)
        roles = {r: words[i] for i, r in _common.role_words(x).items()}
        assert roles["IO"] == x.io and roles["S1"] == x.s and roles["S2"] == x.s
        assert words.index(x.io) == [i for i, r in _common.role_words(x).items() if r == "IO"][0]
        assert "END" in roles  # the last word, where the model predicts
    markdown = _common.highlighted(clean[0].prompt, _common.role_words(clean[0]))
    assert f":blue-background[{clean[0].io} (IO)]" in markdown


def test_env_selects_the_demo_root(tmp_path, monkeypatch):
    monkeypatch.setenv("IOI_DEMO_DIR", str(tmp_path))
    assert _common.demo_root() == tmp_path.resolve()
    assert os.environ["IOI_DEMO_DIR"] == str(tmp_path)
    shutil.rmtree(tmp_path)
    assert tmp_path.resolve() not in _common.roots()


@needs_cache
def test_guided_tour_walks_every_step_with_demo_results(dash_env):
    at = app("app_pages/overview.py")
    shown = []
    for step in range(7):
        assert_clean(at)
        assert f"Step {step + 1} of 7" in at.get("progress")[0].proto.text
        shown.append(len(at.get("vega_lite_chart")))
        if step < 6:
            at.button(key="tour_next").click().run()
    assert shown[1] == shown[3] == shown[4] == shown[5] == 1  # DLA, faithfulness, knockout, CMAP previews
    assert at.button(key="tour_next").disabled
    at.button(key="tour_back").click().run()
    assert "Step 6 of 7" in at.get("progress")[0].proto.text


@needs_cache
def test_reversal_curve_continues_after_its_toxic_run(dash_env):
    import pyarrow as pa

    def reversal_epochs(at: AppTest) -> list[int]:
        datasets = at.get("vega_lite_chart")[0].proto.datasets
        frames = [pa.ipc.open_stream(d.data.data).read_pandas() for d in datasets]
        rows = next(f for f in frames if "series" in f)  # the curves, not the reference points
        return sorted(rows.loc[rows["scenario"] == "reversal", "epoch"])

    at = app("app_pages/faithfulness.py")
    at.sidebar.radio(key="faith_metric").set_value("logit_diff").run()
    assert_clean(at)
    assert reversal_epochs(at) == [2, 3, 4]  # its parent ran 2 epochs
    at.sidebar.checkbox(key="faith_follow").uncheck().run()
    assert reversal_epochs(at) == [0, 1, 2]


def test_parse_heads_checks_the_model_shape():
    assert _common.parse_heads("1.0, 0.3", 2, 4) == ["1.0", "0.3"]
    assert _common.parse_heads("", 2, 4) == []
    with pytest.raises(_common.UserError, match="9.9 are outside this model"):
        _common.parse_heads("1.0 9.9", 2, 4)
    with pytest.raises(ValueError, match="L.H"):
        _common.parse_heads("x", 2, 4)
