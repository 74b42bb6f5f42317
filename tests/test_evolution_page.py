"""The Evolution page under AppTest, on a comparison entry built by the real timeline code from
synthetic per-checkpoint profiles (no model), plus the page's import hygiene."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("streamlit")
from dashboard_support import open_page  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "streamlit_app.py")
PAGE = "app_pages/evolution.py"
EXP = "bbbb000000000001"


def synthetic_comparison(root: Path) -> list[str]:
    """A clean experiment with a "compare" entry over three checkpoints (head 1.0 fades out)."""
    from ioi.methods.analyses import AnalysisResult
    from ioi.methods.edges import EdgeGraph
    from ioi.methods.evolution import CheckpointProfile, timeline
    from ioi.methods.stats import Estimate
    from ioi.runs.cache import register_experiment, write_analysis
    from ioi.runs.compare import _matrix_frame

    graph, gen, labels = EdgeGraph(2, 4), torch.Generator().manual_seed(0), ["clean 0", "clean 1", "clean 2"]
    base = torch.randn(len(graph.edges), 1, generator=gen) * 2
    profiles = []
    for t, label in enumerate(labels):
        scores = base + 0.3 * torch.randn(len(graph.edges), 16, generator=gen)
        scores[graph.index("1.0->logits")] *= 1 - t / 2  # fades out
        top = scores.mean(1).abs().argsort(descending=True)[:12]
        roles = {
            r: torch.randn(2, 4, 16, generator=gen) + (2.0 if r == "dla" else 0)
            for r in ("dla", "name_mover", "s_inhibition")
        }
        profiles.append(
            CheckpointProfile(
                label,
                graph,
                scores,
                tuple(graph.names[i] for i in top.tolist()),
                Estimate(0.8, 0.7, 0.9, "prompts"),
                ("1.0", "0.2"),
                ("1.0",),
                roles,
                torch.rand(2, 4, generator=gen),
                torch.full((16,), 3.0),
            )
        )
    tables = timeline(profiles, n_boot=100)
    eye = {k: torch.eye(3, dtype=torch.float64) for k in ("value", "lo", "hi")}
    tables["transfer"] = _matrix_frame(eye, labels, ("circuit_of", "model"))
    tables["cmap"] = _matrix_frame(eye | {"share": torch.zeros(3, 3)}, labels, ("source", "receiver"))
    heads = (
        tables["roles"][tables["roles"]["checkpoint"] == labels[-1]]
        .pivot_table(index=["layer", "head"], columns="role", values="value")
        .reset_index()
        .assign(value=0.0)
    )
    config = {
        "model": "random:tiny",
        "scenario": "clean",
        "epochs": 2,
        "seed": 0,
        "lr": 1e-3,
        "checkpoint_epochs": [1, 2],
        "parent": None,
        "analyses": ["compare"],
    }
    register_experiment(root, EXP, {"id": EXP, "config": config})
    summary = {
        "experiment": EXP,
        "family": False,
        "checkpoints": labels,
        "reference": labels[0],
        "experiments": [EXP] * 3,
        "scenarios": ["clean"] * 3,
        "epochs": [0, 1, 2],
        "cmap_heads": ["1.0", "0.2"],
        "resamples": 100,
    }
    write_analysis(root, EXP, 2, "compare", AnalysisResult("compare", heads, summary, tables))
    return labels


@pytest.fixture()
def evo_env(tmp_path, monkeypatch):
    labels = synthetic_comparison(tmp_path / "demo")
    monkeypatch.setenv("IOI_DEMO_DIR", str(tmp_path / "demo"))
    monkeypatch.setenv("IOI_CACHE_DIR", str(tmp_path / "user"))
    return labels


def run_page(**params: str) -> AppTest:
    return open_page(PAGE, **params)


def test_evolution_page_shows_tracks_heatmap_and_matrices(evo_env):
    at = run_page()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("vega_lite_chart")) == 5  # overlap, role heatmap, role tracks, transfer, CMAP
    shown = ["clean, pretrained", "clean, epoch 1", "clean, epoch 2"]  # evo_env's labels, in words
    assert at.select_slider[0].value == "clean 2" and list(at.select_slider[0].options) == shown
    assert at.query_params["checkpoint"] in ("clean 2", ["clean 2"])


def test_the_checkpoint_and_role_come_from_the_url(evo_env):
    at = run_page(checkpoint="clean 1", role="s_inhibition")
    assert not at.exception
    assert at.select_slider[0].value == "clean 1"
    assert any("S-inhibition score at clean, epoch 1" in c.proto.spec for c in at.get("vega_lite_chart"))


def test_no_comparison_is_an_empty_state(tmp_path, monkeypatch):
    monkeypatch.setenv("IOI_DEMO_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("IOI_CACHE_DIR", str(tmp_path / "user"))
    at = run_page()
    assert not at.exception and any("No comparisons" in i.value for i in at.info)


def test_the_page_imports_no_torch(evo_env):
    code = (
        "import sys; from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({APP!r}, default_timeout=120)\n"
        f"at.switch_page({PAGE!r}); at.run(); assert not at.exception\n"
        "print(sorted(m for m in ('torch', 'transformer_lens', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=os.environ, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_role_scores_are_named_with_their_unit_not_their_field(evo_env):
    at = run_page()
    specs = [c.proto.spec for c in at.get("vega_lite_chart")]
    assert any("DLA at clean, epoch 2" in s for s in specs) and any("DLA (logits)" in s for s in specs)
    assert not any('"dla (logits)"' in s or "dla at clean" in s for s in specs)


def test_checkpoints_are_named_in_words_and_the_url_keeps_the_stored_label(evo_env):
    """The slider and the reference metric show "clean, epoch 1" (the run's checkpoint label), the
    URL keeps the stored label ("clean 1") so links stay valid."""
    at = run_page(checkpoint="clean 1")
    assert not at.exception, [e.value for e in at.exception]
    slider = at.select_slider[0]
    assert slider.value == "clean 1" and "clean, epoch 1" in slider.options
    assert at.query_params["checkpoint"] in ("clean 1", ["clean 1"])
    assert next(m for m in at.metric if m.label == "reference").value == "clean, pretrained"
    # every chart (titles, axes, matrix cells, tooltips) names checkpoints as the slider does
    specs = " ".join(c.proto.spec for c in at.get("vega_lite_chart"))
    assert '"clean, epoch 1"' in specs and '"clean 1"' not in specs and '"clean 0"' not in specs


def test_the_lineage_view_opens_on_the_subject_duplication_family(tmp_path, monkeypatch):
    from app_pages import _store

    demo = REPO / "cache" / "demo"
    monkeypatch.setenv("IOI_DEMO_DIR", str(demo))
    monkeypatch.setenv("IOI_CACHE_DIR", str(tmp_path / "user"))
    at = run_page(scope="compare-family")
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="evo_exp").value in {
        e.id for e in _store.experiments() if e.scenario == "subject_duplication"
    }
    assert list(at.select_slider[0].options) == [
        "subject duplication, pretrained",
        "subject duplication, epoch 3",
        "reversal of subject duplication, epoch 3",
    ]


def test_the_tracks_write_checkpoints_level_on_two_lines(evo_env):
    """Upright labels ("reversal of subject duplication, epoch 3") took the tracks' height from
    the plot; level ones, broken at ", ", leave it to the lines."""
    at = run_page()
    tracks = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    axes = [layer["encoding"]["x"]["axis"] for spec in tracks for layer in spec.get("layer", [])
            if layer.get("encoding", {}).get("x", {}).get("field") == "checkpoint"]  # fmt: skip
    assert len(axes) >= 2
    assert all(a["labelAngle"] == 0 and "split(datum.label, ', ')" in a["labelExpr"] for a in axes)


def test_a_model_that_prefers_the_subject_has_its_faithfulness_explained(tmp_path, monkeypatch):
    """On the demo's subject-duplication lineage F(M) is about −12 at epoch 3: the tracks and the
    transfer matrix say its edge circuit carries the wrong preference (its 0.81 is not the IOI
    circuit working); the clean run's captions say nothing of the kind."""
    monkeypatch.setenv("IOI_DEMO_DIR", str(REPO / "cache" / "demo"))
    monkeypatch.setenv("IOI_CACHE_DIR", str(tmp_path / "user"))
    at = run_page(scope="compare-family", exp="666e7915f018ae23")
    assert not at.exception, [e.value for e in at.exception]
    said = [c.value for c in at.caption if "prefers the subject" in c.value]
    assert len(said) == 2 and all("subject duplication, epoch 3 (F(M) -12." in c for c in said)
    at = run_page(scope="compare", exp="beb0361aac0eeba0")
    assert not [c for c in at.caption if "prefers the subject" in c.value]
