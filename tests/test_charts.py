"""Chart builders produce valid Vega-Lite specs (Altair validates on to_dict) with the right data."""

from __future__ import annotations

import pandas as pd
import pytest

from ioi.present import charts
from ioi.task.circuit import Circuit, Head
from ioi.task.reference import reference_points


def heads(values: list[list[float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"layer": l_, "head": h, "value": v} for l_, row in enumerate(values) for h, v in enumerate(row)]
    )


CIRCUIT = Circuit("toy", {"name mover": (Head(1, 2),), "induction": (Head(0, 0),)})


def data_of(spec: dict) -> list[dict]:
    return next(iter(spec["datasets"].values()))


def test_head_heatmap_outlines_circuit_heads_and_centres_at_zero():
    frame = heads([[0.5, -2.0, 0.0], [1.0, 0.25, -0.5]])
    spec = charts.head_heatmap(frame, circuit=CIRCUIT, value_title="DLA").to_dict()
    rows = {r["label"]: r for r in data_of(spec)}
    assert rows["1.2"]["class"] == "name mover" and rows["0.0"]["class"] == "induction"
    assert rows["0.1"]["class"] == "" and rows["0.1"]["value"] == -2.0
    cells, outline = spec["layer"]
    scale = cells["encoding"]["color"]["scale"]
    assert scale["domain"] == [-2.0, 2.0] and scale["domainMid"] == 0
    assert outline["mark"]["stroke"] == "black"
    assert "transform" in outline  # only circuit heads are outlined
    assert {t["title"] for t in cells["encoding"]["tooltip"]} >= {"head (L.H)", "DLA"}


def test_head_heatmap_uses_class_column_without_circuit_and_refuses_empty():
    frame = heads([[1.0, 2.0]]).assign(**{"class": ["s-inhibition", None]})
    rows = data_of(charts.head_heatmap(frame).to_dict())
    assert [r["class"] for r in rows] == ["s-inhibition", ""]
    with pytest.raises(ValueError, match="empty"):
        charts.head_heatmap(frame.iloc[:0])


def test_difference_frame_matches_a_loop():
    a = heads([[1.0, 2.0], [3.0, -1.0]])
    b = heads([[0.5, 2.5], [0.0, 4.0]]).sample(frac=1.0, random_state=0)  # order must not matter
    diff = charts.difference_frame(a, b).set_index(["layer", "head"])["value"]
    for _, row in a.iterrows():
        other = b[(b["layer"] == row["layer"]) & (b["head"] == row["head"])]["value"].item()
        assert diff[(row["layer"], row["head"])] == pytest.approx(other - row["value"])
    charts.difference_heatmap(a, b).to_dict()
    with pytest.raises(ValueError, match="different heads"):
        charts.difference_frame(a, heads([[1.0]]))


def test_epoch_curves_with_band_and_reference():
    frame = pd.DataFrame({
        "epoch": [0, 1, 2, 0, 1, 2], "value": [1.0, 2.0, 3.0, 1.0, 0.0, -1.0],
        "series": ["clean"] * 3 + ["toxic"] * 3,
    })  # fmt: skip
    frame["low"], frame["high"] = frame["value"] - 0.1, frame["value"] + 0.1
    ref = reference_points("logit_diff")
    spec = charts.epoch_curves(frame, reference=ref).to_dict()
    marks = [
        layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]
    ]
    assert marks == ["area", "line", "point", "text", "text"]  # labels rightwards, or leftwards at the end
    no_band = charts.epoch_curves(frame.drop(columns=["low", "high"])).to_dict()
    assert len(no_band["layer"]) == 1


def test_reference_points_are_the_papers_numbers():
    faith = reference_points("faithfulness", ["clean"])
    assert sorted(faith["value"]) == [0.87, 0.9989]
    assert reference_points("logit_diff", ["subject_duplication"])["value"].item() == -11.06


def test_knockout_and_class_bars():
    ko = pd.DataFrame({"target": ["name mover", "induction"] * 2, "value": [1.0, 2.0, 0.5, 1.5],
                       "checkpoint": ["epoch 0", "epoch 0", "epoch 5", "epoch 5"]})  # fmt: skip
    spec = charts.knockout_bars(ko, baseline=3.0).to_dict()
    assert len(spec["layer"]) == 2
    cls = pd.DataFrame({"class": ["name mover", "induction"], "value": [0.4, -0.1],
                        "ci_low": [0.3, -0.2], "ci_high": [0.5, 0.0]})  # fmt: skip
    spec = charts.class_bars(cls).to_dict()
    assert spec["layer"][1]["mark"]["type"] == "errorbar"
    with pytest.raises(ValueError):
        charts.class_bars(cls.iloc[:0])


def test_attention_scatter_and_circuit_dot():
    frame = pd.DataFrame({"label": ["9.9"], "end_to_io": [0.7], "end_to_s": [0.1], "class": ["name mover"]})
    charts.attention_scatter(frame).to_dict()
    dot = charts.circuit_dot(CIRCUIT)
    assert dot.startswith("digraph") and "1.2" in dot and '"s-inhibition" -> "name mover"' in dot


def test_chart_bytes_renders_png_and_svg():
    chart = charts.head_heatmap(heads([[1.0, -1.0]]))
    assert charts.chart_bytes(chart, "png").startswith(b"\x89PNG")
    assert b"<svg" in charts.chart_bytes(chart, "svg")[:500]
    with pytest.raises(ValueError, match="png or svg"):
        charts.chart_bytes(chart, "gif")


def test_circuit_dot_draws_classes_outside_the_papers():
    circuit = Circuit("toy", {"name mover": (Head(1, 2),), "other heads carrying the effect": (Head(0, 1),)})
    dot = charts.circuit_dot(circuit)
    assert '"other heads carrying the effect" -> "logits" [style=dashed' in dot and "0.1" in dot


def test_heatmap_shares_a_scale_and_keeps_its_cells():
    a, b = heads([[1.0, -1.0]]), heads([[4.0, 0.5]])
    span = charts.color_span(a, b)
    specs = [charts.head_heatmap(f, span=span).to_dict() for f in (a, b)]
    assert [s["layer"][0]["encoding"]["color"]["scale"]["domain"] for s in specs] == [[-4.0, 4.0]] * 2
    assert (
        specs[0]["autosize"]["type"] == "pad"
        and specs[0]["layer"][0]["encoding"]["x"]["axis"]["labelAngle"] == 0
    )


def test_lineage_colours_are_fixed_whatever_is_shown():
    assert charts.lineage("reversal", "subject_duplication") == "reversal of subject duplication"
    few = charts.lineage_color("lineage", domain=["reversal of name moving", "clean"]).to_dict()["scale"]
    assert few["domain"] == ["clean", "reversal of name moving"]
    assert few["range"] == [charts.LINEAGE_COLORS["clean"], charts.LINEAGE_COLORS["reversal of name moving"]]


def test_recovery_curve_draws_the_pretrained_band_the_floor_and_the_revive_step():
    from ioi.present.evolution_charts import recovery_curve

    pts = pd.DataFrame({"run": ["toxic"] * 2 + ["reversal"] * 2, "step": [0, 100] * 2,
                        "logit_diff": [9.0, 1.0, 1.0, 9.5], "jaccard": [1.0, 0.2, 0.2, 0.8]})  # fmt: skip
    spec = recovery_curve(
        pts, pretrained=(9.0, 10.0), floor=0.76, baseline=(0.03, 0.25), revive=100
    ).to_dict()
    top, bottom = spec["vconcat"]
    datasets = spec["datasets"].values()
    assert [{"lo": 9.0, "hi": 10.0}] in datasets and [{"lo": 0.03, "hi": 0.25}] in datasets
    # the reversal starts from the toxic model: its steps (and the revive step) follow the toxic run's
    assert [{"y": 0.76}] in datasets and [{"step": 200}] in datasets
    reversal = [r["step"] for d in datasets for r in d if r.get("run") == "reversal"]
    assert reversal == [100, 200]
    jaccard = [la for la in bottom["layer"] if la["encoding"].get("y", {}).get("field") == "jaccard"][0]
    assert jaccard["encoding"]["y"]["scale"]["domain"] == [0, 1]  # its own 0-1 axis, not F's
    assert len(top["layer"]) == 3 and len(bottom["layer"]) == 4
    no_revive = recovery_curve(pts, pretrained=(9.0, 10.0), floor=0.76, baseline=(0.0, 0.2)).to_dict()
    assert len(no_revive["vconcat"][0]["layer"]) == 2


def test_a_long_title_wraps_into_lines_and_a_short_one_is_one_line():
    long = "DLA B − A: (subject duplication, epoch 3) − (subject duplication, pretrained)"
    text = charts._title(long).to_dict()["text"]
    assert len(text) > 1 and " ".join(text) == long
    assert all(len(line) <= 56 for line in text)
    assert charts._title("DLA — clean, pretrained").to_dict()["text"] == ["DLA — clean, pretrained"]


def test_circuit_dot_draws_classes_without_heads_dashed_and_labelled():
    circuit = Circuit("toy", {"name mover": (Head(1, 2),), "s-inhibition": ()})
    assert circuit.empty_classes == ("backup name mover", "negative name mover", "s-inhibition", "induction",
                                     "duplicate token", "previous token")  # fmt: skip
    dot = charts.circuit_dot(circuit)
    assert '"induction" [label="induction\\n(no head)", style="rounded,dashed' in dot
    assert '"name mover" [label="name mover\\n1.2", fillcolor=' in dot
    assert "(no head)" not in charts.circuit_dot()  # the bare diagram (no circuit) claims nothing
