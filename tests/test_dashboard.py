"""Dashboard pages under Streamlit's AppTest: every page renders on a cache and shows what the cache
holds (read back through the store), defaults tell the story (the clean run's pretrained model),
labels are distinct, the URL carries the view, result pages import no torch, forms refuse bad
input, damaged entries offer a recompute. Pure helpers are tested directly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from dashboard_support import open_page  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from app_pages import _forms, _live, _store, _text, _views  # noqa: E402
from ioi.runs import cache  # noqa: E402
from ioi.task.corruptions import readable  # noqa: E402
from ioi.task.data import make_dataset  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "streamlit_app.py")
# page -> (element kinds that must be present on the demo cache)
PAGES = {
    "app_pages/overview.py": ("graphviz_chart", "vega_lite_chart"),
    "app_pages/datasets.py": ("dataframe",),
    "app_pages/experiments.py": ("dataframe",),
    "app_pages/attribution.py": ("vega_lite_chart",),
    "app_pages/circuit.py": ("graphviz_chart",),
    "app_pages/faithfulness.py": ("vega_lite_chart",),
    "app_pages/knockout.py": ("vega_lite_chart",),
    "app_pages/cmap.py": ("vega_lite_chart",),
}
RESULT_PAGES = [p for p in PAGES if p not in ("app_pages/experiments.py",)]
CLEAN, TOXIC, REVERSAL = "aaaa000000000001", "aaaa000000000002", "aaaa000000000003"


@pytest.fixture()
def dash_env(tmp_path, monkeypatch):
    """A synthetic demo cache and an empty user cache, selected through the environment."""
    from dashboard_support import build_cache

    build_cache(tmp_path / "demo")
    monkeypatch.setenv("IOI_DEMO_DIR", str(tmp_path / "demo"))
    monkeypatch.setenv("IOI_CACHE_DIR", str(tmp_path / "user"))
    return tmp_path


def app(page: str, **params: str) -> AppTest:
    return open_page(page, **params)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def chart_frames(chart) -> list:
    import pyarrow as pa

    return [pa.ipc.open_stream(d.data.data).read_pandas() for d in chart.proto.datasets]


def chart_spec(chart) -> dict:
    return json.loads(chart.proto.spec)


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
    if page in ("app_pages/attribution.py", "app_pages/faithfulness.py", "app_pages/knockout.py",
                "app_pages/cmap.py", "app_pages/circuit.py"):  # fmt: skip
        assert any("No " in i.value and "run" in i.value.lower() for i in at.info), [i.value for i in at.info]


def imported_after(pages: list[str]) -> list[str]:
    """In a fresh interpreter (this one has torch from conftest), render `pages`, then look which of
    torch, TransformerLens and transformers it imported."""
    code = (
        "import sys; from streamlit.testing.v1 import AppTest\n"
        f"for page in {pages!r}:\n"
        f"    at = AppTest.from_file({APP!r}, default_timeout=120)\n"
        "    at.switch_page(page) if page != 'app_pages/overview.py' else None\n"
        "    at.run(); assert not at.exception, page\n"
        "print(sorted(m for m in ('torch', 'transformer_lens', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=os.environ, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_result_pages_import_neither_torch_nor_transformer_lens(dash_env):
    assert imported_after([*RESULT_PAGES, "app_pages/findings.py"]) == []


def test_the_findings_page_reads_the_stored_verdicts_without_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("IOI_DEMO_DIR", str(REPO / "cache" / "demo"))
    monkeypatch.setenv("IOI_CACHE_DIR", str(tmp_path / "user"))
    assert imported_after(["app_pages/findings.py"]) == []


def test_pickers_open_on_the_clean_runs_pretrained_checkpoint(dash_env):
    at = app("app_pages/attribution.py")
    assert_clean(at)
    assert at.selectbox(key="dla_exp_A").value == CLEAN
    assert at.selectbox(key=f"dla_epoch_A-{CLEAN}").value == 0
    assert dict(at.query_params).items() >= {"exp": CLEAN, "epoch": "0", "mode": "one"}.items()
    at = app("app_pages/cmap.py")
    assert at.selectbox(key="cmap_exp").value == CLEAN


def test_circuit_page_lists_the_pretrained_models_name_movers(dash_env):
    stored = cache.load_analysis(dash_env / "demo", CLEAN, 0, "faithfulness").summary["circuit"]
    at = app("app_pages/circuit.py")
    assert_clean(at)
    assert at.selectbox(key="circ_exp").value == CLEAN and at.selectbox(key=f"circ_epoch-{CLEAN}").value == 0
    shown = at.dataframe[0].value
    movers = sorted(shown.loc[shown["class"] == "name mover", "L.H"])
    assert movers == sorted(stored["classes"]["name mover"]) and movers
    assert "pretrained" in at.caption[0].value and all(h in at.caption[0].value for h in movers)


def test_a_reversal_at_epoch_0_is_called_the_toxic_model(dash_env):
    at = app("app_pages/circuit.py", exp=REVERSAL, epoch="0")
    assert at.selectbox(key="circ_exp").value == REVERSAL
    assert any("toxic model" in w.value for w in at.warning), [w.value for w in at.warning]
    at = app("app_pages/cmap.py", exp=REVERSAL, epoch="2")
    assert any("not the pretrained" in w.value for w in at.warning)
    assert "toxic start" in at.metric[1].label


@pytest.mark.parametrize("page", RESULT_PAGES)
def test_no_two_experiment_labels_in_a_picker_are_equal(dash_env, page):
    at = app(page)
    for box in [*at.selectbox, *at.multiselect]:
        assert len(set(box.options)) == len(box.options), (box.label, box.options)


def test_labels_name_the_lineage_and_stay_distinct():
    assert _store.unique_labels(["a", "a", "b"], [{"lr": 1e-4}, {"lr": 1e-3}, {}], ["1", "2", "3"]) == [
        "a · lr 0.0001", "a · lr 0.001", "b",
    ]  # fmt: skip
    assert _store.unique_labels(["a", "a"], [{}, {}], ["12345678aa", "87654321bb"]) == [
        "a · 12345678", "a · 87654321",
    ]  # fmt: skip


def test_reversal_label_names_the_toxic_run(dash_env):
    labels = {e.id: e.label for e in _store.experiments()}
    assert labels[REVERSAL].startswith("reversal of subject duplication · 2 epochs · seed 0")


def test_url_state_reproduces_a_view(dash_env):
    """Set a view, read the URL it writes, open a fresh session on that URL: the same view."""
    at = app("app_pages/attribution.py")
    at.radio(key="dla_mode").set_value("side").run()
    at.selectbox(key="dla_exp_A").set_value(TOXIC).run()
    at.selectbox(key=f"dla_epoch_A-{TOXIC}").set_value(1).run()
    url = dict(at.query_params)
    assert url["mode"] == "side" and url["exp"] == TOXIC and url["epoch"] == "1" and url["compare"]
    again = app("app_pages/attribution.py", **url)
    assert_clean(again)
    assert again.radio(key="dla_mode").value == "side"
    assert (
        again.selectbox(key="dla_exp_A").value == TOXIC
        and again.selectbox(key=f"dla_epoch_A-{TOXIC}").value == 1
    )
    assert dict(again.query_params) == url
    titles = [chart_spec(c)["title"] for c in again.get("vega_lite_chart")]
    assert titles == [chart_spec(c)["title"] for c in at.get("vega_lite_chart")] and len(titles) == 2


def test_side_by_side_shares_a_scale_outlines_each_panel_and_shows_both_logit_differences(dash_env):
    at = app("app_pages/attribution.py", mode="side")
    assert_clean(at)
    a, b = at.get("vega_lite_chart")
    assert dict(at.query_params)["compare"] != f"{CLEAN}:0", "B must differ from A by default"
    domains = [chart_spec(c)["layer"][0]["encoding"]["color"]["scale"]["domain"] for c in (a, b)]
    assert domains[0] == domains[1]
    stored = [cache.load_analysis(dash_env / "demo", CLEAN, e, "dla").summary["logit_diff"] for e in (0, 2)]
    assert [m.value for m in at.metric] == [f"{v:.2f}" for v in stored]
    at.radio(key="dla_scale").set_value("own").run()
    assert at.get("vega_lite_chart")[0].proto.spec != a.proto.spec or domains[0] == domains[1]


def test_difference_mode_draws_b_minus_a(dash_env):
    at = app("app_pages/attribution.py", mode="diff")
    assert_clean(at)
    assert len(at.get("vega_lite_chart")) == 1 and "B − A" in at.caption[0].value


def test_knockout_draws_every_selected_checkpoint_and_the_intact_model(dash_env):
    at = app("app_pages/knockout.py", exp=TOXIC, epoch="0,2")
    assert_clean(at)
    rows = next(f for f in chart_frames(at.get("vega_lite_chart")[0]) if "checkpoint" in f)
    assert sorted(set(rows["checkpoint"])) == [
        "subject duplication, epoch 2",
        "subject duplication, pretrained",
    ]
    intact = rows[rows["target"].str.startswith("(nothing")]
    stored = cache.load_analysis(dash_env / "demo", TOXIC, 2, "knockout").summary["f_model"]
    assert len(intact) == 2 and stored in list(intact["value"])
    assert set(rows.loc[rows["target"] == "name mover", "heads"]) == {"1.0"}


def test_faithfulness_defaults_to_the_logit_difference_in_panels_with_fixed_colours(dash_env):
    at = app("app_pages/faithfulness.py")
    assert_clean(at)
    assert at.radio(key="faith_metric").value == "logit_diff"
    spec = chart_spec(at.get("vega_lite_chart")[0])
    assert "facet" in spec and spec["resolve"]["scale"]["x"] == "independent"
    line = next(la for la in spec["spec"]["layer"] if "line" in json.dumps(la.get("mark")))
    color = line["encoding"]["color"]["scale"]
    assert color["domain"][0] == "clean" and color["range"][0] == "#1f77b4"


def test_reversal_curve_continues_after_its_toxic_run(dash_env):
    def reversal_epochs(at: AppTest) -> list[int]:
        rows = chart_frames(at.get("vega_lite_chart")[0])[0]
        rows = rows[rows["_kind"] == "curve"]
        return sorted(rows.loc[rows["scenario"] == "reversal", "epoch"])

    at = app("app_pages/faithfulness.py")
    assert_clean(at)
    assert reversal_epochs(at) == [2, 3, 4]  # its parent ran 2 epochs
    at.checkbox(key="faith_follow").uncheck().run()
    assert reversal_epochs(at) == [0, 1, 2]


def test_guided_tour_walks_every_step_with_a_chart(dash_env):
    at = app("app_pages/overview.py")
    n = int(at.get("progress")[0].proto.text.split(" of ")[1].split(":")[0])
    assert n >= 6
    for step in range(1, n + 1):
        assert_clean(at)
        assert f"Step {step} of {n}" in at.get("progress")[0].proto.text
        assert at.get("vega_lite_chart"), f"tour step {step} shows no chart"
        assert dict(at.query_params)["step"] == str(step)
        if step < n:
            at.button(key="tour_next").click().run()
    assert at.button(key="tour_next").disabled
    at.button(key="tour_back").click().run()
    assert f"Step {n - 1} of {n}" in at.get("progress")[0].proto.text
    reopened = app("app_pages/overview.py", step=str(n - 1))
    assert f"Step {n - 1} of {n}" in reopened.get("progress")[0].proto.text


def test_tour_text_quotes_the_data_it_shows(dash_env):
    """A checkpoint's logit difference is its evaluation, with its s.e. and prompt set, on every
    step (the DLA entries' own logit differences, on other prompts, once gave a second number)."""
    at = app("app_pages/overview.py")
    stored = cache.load_entry(dash_env / "demo", CLEAN, 0, "metrics").summary
    text = " ".join(m.value for m in at.markdown)
    ld, se = stored["logit_diff"], stored["logit_diff_se"]
    quoted = f"by {ld:.1f} ± {se:.1f} logits (mean over {stored['n']} held-out"
    assert quoted in text and "name movers 1.0" in text


def test_damaged_entry_is_reported_with_a_recompute_button(dash_env):
    entry = dash_env / "demo" / "experiments" / CLEAN / "epoch-002" / "dla.json"
    body = json.loads(entry.read_text())
    body["payload"]["summary"]["summary"]["logit_diff"] = 99.0  # edited: checksum no longer matches
    entry.write_text(json.dumps(body))
    at = app("app_pages/attribution.py", epoch="2")
    assert not at.exception
    assert any("damaged" in e.value for e in at.error), [e.value for e in at.error]
    assert any(b.label == "Recompute dla" for b in at.button)


def test_no_machine_path_on_any_page(dash_env):
    for page in PAGES:
        at = app(page)
        shown = [m.value for m in [*at.markdown, *at.caption, *at.info, *at.warning]]
        shown += [o for box in at.selectbox for o in box.options]
        assert not [s for s in shown if str(dash_env) in s or "/work/" in s or "/home/" in s], page


def test_experiment_form_refuses_bad_values(dash_env):
    from ioi.runs.jobs import list_jobs

    at = app("app_pages/experiments.py")
    model = at.selectbox(key="form_model").value
    at.text_input(key=f"form_lr-{model}").set_value("fast")
    at.text_input(key="form_checkpoints").set_value("1, 9")
    at.button(key="form_launch").click().run()
    assert not at.exception
    messages = " ".join(e.value for e in at.error)
    assert "learning rate" in messages and "outside 1..3" in messages
    assert not (dash_env / "user" / "index.sqlite3").exists() or not list_jobs(dash_env / "user")


def test_launching_a_tiny_job_creates_it(dash_env):
    from ioi.runs.jobs import cancel, list_jobs

    at = app("app_pages/experiments.py")
    at.selectbox(key="form_model").set_value("random:tiny").run()
    at.number_input(key="form_epochs").set_value(1)
    at.text_input(key="form_checkpoints").set_value("")
    at.text_input(key="form_lr-random:tiny").set_value("1e-3")
    at.number_input(key="form_train").set_value(16)
    at.number_input(key="form_eval").set_value(8)
    at.number_input(key="form_analysis").set_value(4)
    at.multiselect(key="form_analyses").set_value(["dla"])
    at.button(key="form_launch").click().run()
    assert_clean(at)
    jobs = list_jobs(dash_env / "user")
    try:
        assert len(jobs) == 1 and jobs[0].config["model"] == "random:tiny" and jobs[0].config["epochs"] == 1
        assert any(jobs[0].id in s.value for s in at.success)
    finally:
        for job in jobs:
            cancel(job.id, dash_env / "user")


def test_form_defaults_are_the_configs_and_the_clis():
    from ioi.runs.experiment import ExperimentConfig
    from ioi.task.defaults import default_lr, lr_text

    assert _forms.form_defaults()["train_size"] == ExperimentConfig().train_size
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("app_pages/experiments.py").run()
    model = at.selectbox(key="form_model").value
    assert at.text_input(key=f"form_lr-{model}").value == lr_text(default_lr(model))


def test_parse_epochs_and_lr():
    assert _forms.parse_epochs("5, 1,3 3", 5) == (1, 3, 5)
    assert _forms.parse_epochs("", 5) == ()
    with pytest.raises(_store.UserError, match="outside 1..5"):
        _forms.parse_epochs("0, 6", 5)
    with pytest.raises(_store.UserError, match="whole numbers"):
        _forms.parse_epochs("one", 5)
    assert _forms.parse_lr("1e-4") == 1e-4
    for bad in ("x", "0", "-1e-3", "2"):
        with pytest.raises(_store.UserError):
            _forms.parse_lr(bad)


def test_experiment_config_lists_every_bad_field():
    cfg, errors = _forms.experiment_config(
        {
            "model": "no-such-model",
            "scenario": "reversal",
            "epochs": 2,
            "checkpoints": "3",
            "lr": "x",
            "analyses": (),
        }  # fmt: skip
    )
    assert cfg is None and set(errors) == {"model", "checkpoints", "lr", "parent"}
    cfg, errors = _forms.experiment_config(
        {
            "model": "random:tiny",
            "scenario": "clean",
            "epochs": 2,
            "checkpoints": "1",
            "lr": "1e-3",
            "analyses": ("dla",),
            "train_size": 16,
        }  # fmt: skip
    )
    assert errors == {} and cfg.checkpoint_epochs == (1,) and cfg.lr == 1e-3 and cfg.train_size == 16


def test_role_words_mark_io_s1_s2_end():
    import re

    clean = make_dataset(30, 0, "eval")
    for x in clean:
        words = re.split(r"(\W+)", x.prompt)
        roles = {r: words[i] for i, r in _text.role_words(x).items()}
        assert roles["IO"] == x.io and roles["S1"] == x.s and roles["S2"] == x.s
        assert words.index(x.io) == [i for i, r in _text.role_words(x).items() if r == "IO"][0]
        assert "END" in roles  # the last word, where the model predicts
    markdown = _text.highlighted(clean[0].prompt, _text.role_words(clean[0]))
    assert f":blue-background[{clean[0].io} (IO)]" in markdown


def test_env_selects_the_demo_root(tmp_path, monkeypatch):
    monkeypatch.setenv("IOI_DEMO_DIR", str(tmp_path))
    assert cache.demo_root() == tmp_path.resolve()
    shutil.rmtree(tmp_path)
    assert tmp_path.resolve() not in _store.roots()


def test_parse_heads_checks_the_model_shape():
    assert _live.parse_heads("1.0, 0.3", 2, 4) == ["1.0", "0.3"]
    assert _live.parse_heads("", 2, 4) == []
    with pytest.raises(_store.UserError, match="9.9 are outside this model"):
        _live.parse_heads("1.0 9.9", 2, 4)
    with pytest.raises(ValueError, match="L.H"):
        _live.parse_heads("x", 2, 4)


def test_example_heads_fit_the_model(dash_env):
    assert _live.example_heads(2, 4) == "1.0"  # the synthetic clean run's pretrained name mover
    assert _live.example_heads(1, 2) == "0.0 0.1"


def test_findings_page_shows_three_verdicts_with_the_reports_numbers(tmp_path, monkeypatch):
    """On the shipped demo cache: the page shows amplification, localized corruption and
    neuroplasticity, each verdict's numbers as `findings(roots)` gives them and as REPRODUCTION.md
    writes them."""
    from ioi.methods.verdicts import fmt, holds_word
    from ioi.present.findings import findings, lead, verdict_json
    from ioi.runs import catalog

    demo = REPO / "cache" / "demo"
    monkeypatch.setenv("IOI_DEMO_DIR", str(demo))
    monkeypatch.setenv("IOI_CACHE_DIR", str(tmp_path / "user"))
    three = ("amplification", "localized corruption", "neuroplasticity")
    verdicts = [v for v in findings([demo]) if v.finding in three]
    assert {v.finding for v in verdicts} == set(three)
    stored = catalog.read_verdicts(demo)
    assert stored is not None and stored[1], "the demo cache's stored verdicts are those of its results"
    assert [verdict_json(v, "ioi-tiny") for v in verdicts] == [v for v in stored[0] if v["finding"] in three]
    for v in verdicts:  # each summary opens with the verdict its heading shows
        assert v.summary.startswith(f"{lead(v)} {holds_word(v.holds)} over "), v.summary[:120]
    at = app("app_pages/findings.py")
    assert_clean(at)
    shown = [t.value for t in at.dataframe]
    report = (REPO / "REPRODUCTION.md").read_text()
    for v in verdicts:
        numbers = [fmt(e, 3) for e in v.numbers.values()]
        assert any(list(t["value [95% interval]"]) == numbers for t in shown), (v.finding, v.scope)
        assert all(n in report for n in numbers), f"{v.finding} {v.scope}: REPRODUCTION.md has other numbers"
    assert len({c.value for c in at.markdown if c.value.startswith("#### ")}) == 3
    # Each reversal's edge revival (its lineage comparison, as the report's timeline judges it) is
    # shown with that reversal's neuroplasticity verdict, its numbers as the report writes them.
    edges = [v for v in findings([demo]) if v.finding == "edge revival"]
    datasets = ("duplication", "name_moving", "subject_duplication")
    assert {v.scope for v in edges} == {f"reversal of {d}" for d in datasets}
    assert sum(c.value.startswith("**At the level of edges**") for c in at.markdown) == len(edges)
    for v in edges:
        numbers = [fmt(e, 3) for e in v.numbers.values()]
        assert any(list(t["value [95% interval]"]) == numbers for t in shown), v.scope
        assert v.summary in report, f"{v.scope}: REPRODUCTION.md words its edge revival otherwise"
        assert v.view["page"] == "evolution" and v.view["scope"] == "compare-family"


def test_a_stopped_job_whose_model_is_missing_offers_no_resume(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # no GPT-2 here
    assert "HuggingFace" in _forms.resume_problem({"model": "gpt2"})
    assert _forms.resume_problem({"model": str(tmp_path / "gone")}) == "its model directory is missing"
    assert _forms.resume_problem({"model": "random:tiny"}) is None
    assert _forms.resume_problem({"model": "ioi-tiny"}) is None


def test_page_scripts_hold_no_bare_strings_that_streamlit_would_print():
    """Streamlit's magic writes a page script's bare expressions on the page: a string under a
    constant (as a module's attribute docstring) would appear as text."""
    import ast

    for path in sorted((REPO / "app_pages").glob("[!_]*.py")):
        body = ast.parse(path.read_text()).body[1:]  # the module docstring is not shown
        bare = [n.lineno for n in body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)]
        assert not bare, f"{path.name}: a bare string at line(s) {bare} would be printed on the page"


def test_cmap_class_bars_say_the_class_is_patched_jointly(dash_env):
    at = app("app_pages/cmap.py")
    assert_clean(at)
    captions = [c.value for c in at.caption]
    per_class = [c for c in captions if c.startswith("Per circuit class")]
    assert per_class and "taken together" in per_class[0] and "one head at a time" not in per_class[0]
    assert any("one head at a time" in c for c in captions)  # the per-head heatmap's caption


@pytest.fixture()
def demo_env(tmp_path, monkeypatch):
    """The shipped demo cache (ioi-tiny's results) and an empty user cache."""
    demo = REPO / "cache" / "demo"
    monkeypatch.setenv("IOI_DEMO_DIR", str(demo))
    monkeypatch.setenv("IOI_CACHE_DIR", str(tmp_path / "user"))
    return demo


def test_tour_step_one_names_the_outlined_heads_that_are_in_no_ioi_class(demo_env):
    """The outline is the circuit: its classes and the heads carrying the effect unclassified (on
    ioi-tiny the strongest head, 1.2, is one of them); the text must not call them all classified."""
    from ioi.task.circuit import OTHER

    circuit = _store.circuit_at(_store.clean_run("dla"), 0)
    other = [str(h) for h in circuit.classes.get(OTHER, ())]
    assert other, "the demo's pretrained circuit holds heads outside the IOI classes"
    text = next(m.value for m in app("app_pages/overview.py").markdown if "Outlined" in m.value)
    assert "classified as its circuit" not in text
    verb = "carries" if len(other) == 1 else "carry"
    assert f"{' '.join(other)}, which {verb} the effect without passing any IOI class's test" in text


def test_tour_states_no_finding_of_its_own_but_the_findings_pages_verdicts(demo_env):
    """Its steps on amplification, corruption and neuroplasticity ask the question and quote the
    stored verdict, word for word, that the Findings page shows; the shipped demo's amplification and
    subject-duplication reversal are undetermined, which the tour once stated as settled."""
    from ioi.methods.verdicts import holds_word
    from ioi.runs.catalog import read_verdicts

    assert {h: holds_word(h).removeprefix("is ") for h in (True, False, None)} == _store.VERDICT_WORDS
    stored = {(v["finding"], v["scope"]): v for v in read_verdicts(demo_env)[0]}
    at = app("app_pages/overview.py")
    n = int(at.get("progress")[0].proto.text.split(" of ")[1].split(":")[0])
    quoted = set()
    for step in range(1, n + 1):
        text = " ".join(m.value for m in at.markdown)
        assert "strengthened the existing mechanism" not in text and "restores the circuit." not in text
        for (finding, scope), v in stored.items():
            if f"**Verdict (Findings page): {finding} {_store.VERDICT_WORDS[v['holds']]}.**" in text and (
                readable(v["summary"]) in text
            ):
                quoted.add((finding, scope))
        if step < n:
            at.button(key="tour_next").click().run()
    assert {("amplification", ""), ("localized corruption", "subject_duplication"),
            ("neuroplasticity", "reversal of subject_duplication")} <= quoted  # fmt: skip
    assert stored[("amplification", "")]["holds"] is None  # what the tour used to call settled


def test_faithfulness_page_points_to_the_findings_and_explains_its_lines(demo_env):
    """The intro asserts no finding (on ioi-tiny faithfulness is ≈1 from epoch 0; the verdict is the
    Findings page's); the caption says that lines of one colour are seeds and that a reversal is the
    darker shade."""
    at = app("app_pages/faithfulness.py", metric="faithfulness")
    assert_clean(at)
    intro = at.markdown[0].value
    assert "is circuit amplification" not in intro and "Findings page" in intro
    assert any(p.proto.page == "findings" for p in at.get("page_link"))
    caption = next(c.value for c in at.caption if "across epochs" in c.value or "checkpoint" in c.value)
    assert "runs of one lineage with different seeds (0, 1, 2)" in caption
    assert "darker shade of its toxic run's colour" in caption


def test_circuit_page_says_which_classes_no_head_met(dash_env):
    """The synthetic circuit has name movers and S-inhibition only: the other classes are named as
    empty, and drawn dashed with "(no head)" in the diagram."""
    at = app("app_pages/circuit.py")
    assert_clean(at)
    line = next(m.value for m in at.markdown if m.value.startswith("No head met the criteria of"))
    assert "backup name mover, negative name mover, induction, duplicate token, previous token" in line
    assert "name mover," not in line.replace("backup name mover,", "").replace("negative name mover,", "")
    dot = at.get("graphviz_chart")[0].proto.spec
    assert '"induction" [label="induction\\n(no head)"' in dot and "1.0" in dot


def test_cmap_page_names_receiver_and_source_by_the_chosen_direction(demo_env):
    """On the demo the entry's first direction runs B (the starting model) with A's heads: the page
    names that receiver and source, gives the gap as F(source) − F(receiver) with its sign, and the
    caption writes the positions as END."""
    at = app("app_pages/cmap.py")
    assert_clean(at)
    line = next(m.value for m in at.markdown if m.value.startswith("Receiver: "))
    heatmap = next(c.value for c in at.caption if "one head at a time" in c.value)
    assert "at END" in heatmap and "positions end" not in heatmap
    receiver = heatmap.split("the receiver (")[1].split(")")[0]
    source = heatmap.split("from the source (")[1].split(")")[0]
    assert f"Receiver: **{receiver}**; source: **{source}**" in line
    assert "F(B) − F(A)" not in " ".join(m.value for m in at.markdown)
    metrics = {m.label: float(m.value) for m in at.metric if m.label.startswith("F(")}
    f = {label.split(" — ")[1]: value for label, value in metrics.items()}
    gap = float(line.split("F(source) − F(receiver) = ")[1].split(" ")[0])
    assert gap == pytest.approx(f[source] - f[receiver], abs=0.02)
    assert ("negative" in line) == (gap < 0)
    picker = next(r for r in at.radio if r.label == "Direction")
    picker.set_value("a<-b" if picker.value == "b<-a" else "b<-a").run()
    flipped = next(m.value for m in at.markdown if m.value.startswith("Receiver: "))
    assert f"Receiver: **{source}**; source: **{receiver}**" in flipped


def test_findings_page_writes_dataset_names_in_words(demo_env):
    """The stored verdicts name datasets by their keys (subject_duplication); the page shows them
    in words, in headings, tabs and the verdict sentences alike."""
    from ioi.task.corruptions import readable

    assert readable("Localized corruption (subject_duplication), reversal of name_moving") == (
        "Localized corruption (subject duplication), reversal of name moving"
    )
    at = app("app_pages/findings.py")
    assert_clean(at)
    shown = [m.value for m in at.markdown] + [t.label for t in at.tabs]
    assert any("subject duplication" in t for t in shown)
    assert not [t for t in shown if "subject_duplication" in t or "name_moving" in t]


def _demo_run(scenario: str, seed: int = 0, parent: bool = False) -> str:
    from ioi.runs.catalog import list_experiments

    return next(e.id for e in list_experiments(REPO / "cache" / "demo") if e.config["scenario"] == scenario
                and e.config["seed"] == seed and (e.config["parent"] is not None) == parent)  # fmt: skip


def test_pickers_follow_a_switched_experiment(demo_env):
    """Checkpoints left in the URL by another run do not shrink this run's defaults to the one they
    share (the knockout opened on the toxic start alone); a run without a lineage comparison says
    which run is shown instead; opening a run from the Experiments page shows its last checkpoint."""
    toxic, clean = _demo_run("subject_duplication"), _demo_run("clean")
    at = app("app_pages/knockout.py", exp=toxic, epoch="0,10")  # the clean run's checkpoints
    assert_clean(at)
    assert at.multiselect(key=f"ko_ep-{toxic}").value == [0, 3]
    at = app("app_pages/evolution.py", exp=clean, scope="compare-family")
    assert_clean(at)
    assert any("has no lineage" in i.value and "showing subject duplication" in i.value for i in at.info)
    assert not app("app_pages/evolution.py", exp=toxic, scope="compare-family").info
    reversal = _demo_run("reversal", parent=True)
    at = app("app_pages/experiments.py")
    at.session_state["open_requested"] = reversal
    at.run()
    assert dict(at.query_params).get("epoch") == "3"


def test_cmap_share_view_says_what_a_positive_share_means(demo_env):
    """A share of a negative gap is positive when the head lowers F: the caption must not say that
    positive raises F there (it did, for both views)."""
    toxic = _demo_run("subject_duplication")
    share = app("app_pages/cmap.py", exp=toxic, epoch="3", field="share_of_gap")
    assert_clean(share)
    text = " ".join(c.value for c in share.caption)
    assert "as a share of the gap F(source) − F(receiver)" in text and "when the gap is negative" in text
    assert "Positive: the source's head raises the receiver's F" not in text
    logits = " ".join(c.value for c in app("app_pages/cmap.py", exp=toxic, epoch="3").caption)
    assert "Positive: the source's head raises the receiver's F" in logits


def test_model_card_opens_full_width_from_the_overview(demo_env):
    at = app("app_pages/overview.py")
    assert not [m for m in at.markdown if m.value.startswith("# ioi-tiny — model card")]  # closed at first
    at.button(key="model_card").click().run()
    assert_clean(at)
    card = (REPO / "ioi" / "assets" / "ioi-tiny" / "MODEL_CARD.md").read_text()
    assert [m for m in at.markdown if m.value.strip() == card.strip()]


def test_checkpoint_b_follows_a_to_its_runs_other_end(dash_env):
    """B opens on A's own run at its other end (what that fine-tuning changed); picking another A
    moves B with it, though B was written to the URL; a URL's B is kept when the page opens."""
    at = app("app_pages/attribution.py", mode="diff")
    assert dict(at.query_params)["compare"] == f"{CLEAN}:2"  # A: the clean run's pretrained model
    at.selectbox(key="dla_exp_A").set_value(TOXIC).run()
    assert_clean(at)
    assert at.selectbox(key="dla_exp_B").value == TOXIC and dict(at.query_params)["compare"] == f"{TOXIC}:2"
    assert "B − A" in at.caption[0].value
    again = app("app_pages/attribution.py", mode="diff", exp=TOXIC, epoch="0", compare=f"{CLEAN}:2")
    assert again.selectbox(key="dla_exp_B").value == CLEAN


def test_knockout_bars_carry_the_stored_intervals(demo_env):
    """Each class's bar and the intact model's have error bars from the entry's 95% interval; a
    knocked-out class lowers F beyond its interval on the demo's pretrained model."""
    clean = next(e for e in _store.experiments() if e.scenario == "clean")
    at = app("app_pages/knockout.py", exp=clean.id, epoch="0")
    assert_clean(at)
    chart = at.get("vega_lite_chart")[0]
    assert any(layer["mark"]["type"] == "errorbar" for layer in chart_spec(chart)["layer"])
    rows = next(f for f in chart_frames(chart) if "lo" in f).set_index("target")
    stored = cache.load_analysis(demo_env, clean.id, 0, "knockout")
    classes = stored.tables["classes"].set_index("class")
    for c, row in classes.iterrows():
        assert (rows.loc[c, "lo"], rows.loc[c, "hi"]) == (row.f_knockout_lo, row.f_knockout_hi)
        assert row.f_knockout_hi < stored.summary["f_model_lo"]  # apart from the intact model's interval
    assert rows.loc[_views.INTACT, "lo"] == stored.summary["f_model_lo"]
    assert "95% bootstrap intervals over the evaluation prompts" in " ".join(c.value for c in at.caption)


def test_findings_cards_say_what_their_badge_sums_up(demo_env):
    """Each card's line is its verdict over every seed or checkpoint, in the badge's words: the
    amplification card once showed seed 0's epoch-10 numbers (which fail) beside "undetermined"."""
    from ioi.runs.catalog import read_verdicts

    at = app("app_pages/findings.py")
    assert_clean(at)
    captions = [c.value for c in at.caption]
    for v in read_verdicts(demo_env)[0]:
        if v["finding"] not in ("amplification", "localized corruption", "neuroplasticity"):
            continue  # not on a card of its own
        line = next(c for c in captions if c == readable(v["summary"].split(". ")[0]) + ".")
        assert f" {_store.VERDICT_WORDS[v['holds']].split()[-1]} " in f" {line} ", line
    amplification = next(c for c in captions if c.startswith("Amplification is"))
    assert "over 4 checkpoints" in amplification and "gain:" not in amplification


def test_faithfulness_picks_runs_by_lineage_and_seed(demo_env):
    """21 runs as chips filled the page and were cut off: runs are picked by lineage and seed, and
    a URL naming some runs opens on their lineages and seeds."""
    seed0 = [e.id for e in _store.experiments() if e.seed == 0]
    at = app("app_pages/faithfulness.py", exps=",".join(seed0))
    assert_clean(at)
    assert len(at.multiselect(key="faith_lineages").value) == 7 and len(seed0) == 7
    rows = next(f for f in chart_frames(at.get("vega_lite_chart")[0]) if "seed" in f)
    assert set(rows.loc[rows["_kind"] == "curve", "seed"]) == {0}
    assert set(dict(at.query_params)["exps"].split(",")) == set(seed0)


def test_the_circuit_page_says_why_a_corrupted_model_has_no_circuit(demo_env):
    toxic = next(e for e in _store.experiments() if e.scenario == "subject_duplication" and e.seed == 0)
    at = app("app_pages/circuit.py", exp=toxic.id, epoch="3")
    assert_clean(at)
    (info,) = [i.value for i in at.info if i.value.startswith("No circuit at this checkpoint")]
    assert "F(M) = -12.324 < 0.5 logits" in info and "Cross-model patching" in info
    assert any(p.proto.page == "cmap" for p in at.get("page_link"))
    assert not [i for i in app("app_pages/circuit.py").info if i.value.startswith("No circuit")]


def test_cmap_class_bars_follow_the_value_choice(demo_env):
    """'share of the gap' redrew only the heatmap; the per-class bars stayed in logits."""
    toxic = next(e for e in _store.experiments() if e.scenario == "subject_duplication" and e.seed == 0)
    at = app("app_pages/cmap.py", exp=toxic.id, epoch="3", field="share_of_gap")
    assert_clean(at)
    bars = chart_spec(at.get("vega_lite_chart")[1])
    assert bars["layer"][0]["encoding"]["x"]["field"] == "share_of_gap"
    said = " ".join(c.value for c in at.caption)
    assert "share of the gap F(source) − F(receiver) (1: the class closes it alone)" in said
    assert "blue here means towards the source" in said


def test_a_clicked_row_of_the_cached_experiments_opens_its_results(demo_env):
    """A presenter clicks a run in the table (a selectbox under it was the only way): its Open
    button switches to that run's attribution at its last checkpoint."""
    found = _store.experiments()
    at = app("app_pages/experiments.py")
    assert_clean(at)
    assert not [b for b in at.button if b.key == "open_row"]  # nothing selected, nothing to open
    at.session_state["cached_rows"] = {"selection": {"rows": [2], "columns": [], "cells": []}}
    at.run()
    (button,) = [b for b in at.button if b.key == "open_row"]
    assert button.label == f"Open {found[2].label}"
    button.click().run()
    assert_clean(at)
    assert at.session_state["opened_experiment"] == found[2].id
    url = dict(at.query_params)
    assert url["exp"] == found[2].id and url["epoch"] == str(found[2].epochs_with("dla")[-1])
