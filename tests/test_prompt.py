"""One prompt through one checkpoint (ioi.task.prompt, ioi.methods.prompt): the roles found in a
prompt, the checks before a model runs, and readings equal to the methods they reuse; the shipped
checkpoints predict what the demo cache's metrics say."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ioi.methods.analyses import run_analysis
from ioi.methods.attention import attention_scores
from ioi.methods.prompt import end_row, head_profile, pattern_frame, prompt_batch, read_prompt, samples_batch
from ioi.present import prompt_charts
from ioi.task.data import ORDERS, TEMPLATES, DatasetError, make_dataset, render, tokenize
from ioi.task.metrics import logit_diff_per_prompt
from ioi.task.prompt import MAX_PROMPT_CHARS, find_roles, prompt_sample

PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.mark.parametrize("order", ORDERS)
def test_find_roles_on_every_template(order):
    for t in range(len(TEMPLATES)):
        x = render(t, order, "Mary", "John", "John", "store", "drink")
        assert find_roles(x.prompt) == ("Mary", "John"), x.prompt


def test_find_roles_and_sample_refuse_what_is_not_an_ioi_prompt():
    with pytest.raises(DatasetError, match="no name is repeated"):
        find_roles("When Mary and John went to the store, Kate gave a drink to")
    with pytest.raises(DatasetError, match="names only John"):
        find_roles("Then, John went to the store. John gave a drink to")
    with pytest.raises(DatasetError, match="at least twice"):
        prompt_sample(PROMPT, "John", "Mary")
    with pytest.raises(DatasetError, match="does not occur"):
        prompt_sample(PROMPT, "Kate", "John")
    with pytest.raises(DatasetError, match="empty"):
        prompt_sample("   ", "Mary", "John")
    with pytest.raises(DatasetError, match=f"more than the {MAX_PROMPT_CHARS}"):
        prompt_sample(PROMPT + " x" * MAX_PROMPT_CHARS, "Mary", "John")
    assert find_roles("When Mary and Zorblax went to the store, Mary gave a drink to") == ("Zorblax", "Mary")


def test_reading_equals_the_full_forward_pass_and_the_dla_analysis(tiny_random):
    m = tiny_random
    batch = prompt_batch(m, PROMPT, "Mary", "John")
    r = read_prompt(m, batch, k=5)
    assert r.positions == {"io": 2, "s1": 4, "s2": 10, "end": 14}  # BOS, When, Mary, and, John, …
    assert r.tokens[2] == " Mary" and len(r.tokens) == 15
    logits = m.bridge(batch.tokens)[0, -1].double()
    probs = logits.softmax(-1)
    assert r.top["token"].tolist() == [m.tokenizer.decode([t]) for t in probs.topk(5).indices.tolist()]
    np.testing.assert_allclose(r.top["prob"], probs.topk(5).values, rtol=1e-4)
    assert r.logit_diff == pytest.approx(logit_diff_per_prompt(logits[None].float(), batch).item(), abs=1e-4)
    dla = run_analysis("dla", m, batch, batch)  # the analysis on the same one-prompt batch
    np.testing.assert_allclose(r.heads["value"], dla.heads["value"], atol=1e-6)
    _, cache = m.bridge.run_with_cache(batch.tokens)
    np.testing.assert_allclose(r.patterns[1], cache["blocks.1.attn.hook_pattern"][0].numpy(), atol=1e-6)
    row = end_row(r, 1, 2)
    assert row["attention"].sum() == pytest.approx(1.0, abs=1e-5)
    assert row.loc[2, "role"] == "IO" and row.loc[4, "role"] == "S1" and row.loc[14, "role"] == "END"
    grid = pattern_frame(r, 1, 2)
    assert len(grid) == 15 * 16 // 2 and (grid["key"] <= grid["query"]).all()


def test_head_profile_means_equal_the_analyses_and_lie_in_their_intervals(tiny_random):
    batch = tokenize(make_dataset(12, seed=3, split="eval"), tiny_random.tokenizer)
    prof = head_profile(tiny_random, batch)
    dla = run_analysis("dla", tiny_random, batch, batch)
    np.testing.assert_allclose(prof["value"], dla.heads["value"], atol=1e-6)
    scores = attention_scores(tiny_random.bridge, batch)
    np.testing.assert_allclose(prof["end_to_io"], scores["end_to_io"].flatten().double(), atol=1e-6)
    for name, col in (("dla", "value"), ("end_to_io", "end_to_io"), ("end_to_s", "end_to_s")):
        assert (prof[f"{name}_lo"] <= prof[col] + 1e-9).all() and (
            prof[col] <= prof[f"{name}_hi"] + 1e-9
        ).all()
    assert prof["copy_score"].between(0, 1).all()


def test_selectable_heatmap_and_its_click():
    from ioi.present.charts import head_heatmap

    prof = pd_heads()
    spec = prompt_charts.selectable(head_heatmap(prof)).to_dict()
    assert [p["name"] for p in spec["params"]] == [prompt_charts.HEAD_SELECTION]
    assert spec["params"][0]["select"]["fields"] == ["layer", "head"]
    assert prompt_charts.clicked_head({"selection": {"head": [{"layer": 1, "head": 3}]}}) == (1, 3)
    assert prompt_charts.clicked_head({"selection": {"head": []}}) is None


def test_panels_of_three_checkpoints_are_one_chart_on_one_colour_scale():
    frames = {"a": pd_heads(), "b": pd_heads().assign(value=[0.5, -9.0, 0.0, 1.0])}
    stacked = prompt_charts.stack(frames)
    assert list(stacked[prompt_charts.PANEL]) == ["a"] * 4 + ["b"] * 4
    spec = prompt_charts.selectable(prompt_charts.head_heatmaps(stacked, ["b", "a"], cell=26)).to_dict()
    assert spec["facet"]["column"]["sort"] == ["b", "a"] and "resolve" not in spec  # axes drawn once
    (rows,) = spec["datasets"].values()
    assert len(rows) == 8
    color = spec["spec"]["layer"][0]["encoding"]["color"]["scale"]
    assert color["domain"] == [-9.0, 9.0] and color["domainMid"] == 0  # one scale: the largest |value|
    assert spec["params"][0]["select"]["fields"] == ["layer", "head", prompt_charts.PANEL]
    event = {"selection": {"head": [{"layer": 1, "head": 3, prompt_charts.PANEL: "b"}]}}
    assert prompt_charts.clicked_head(event) == (1, 3) and prompt_charts.clicked_panel(event) == "b"
    assert prompt_charts.clicked_panel({"selection": {"head": []}}) is None


def pd_heads():
    import pandas as pd

    return pd.DataFrame({"layer": [0, 0, 1, 1], "head": [2, 3, 2, 3], "value": [1.0, -2.0, 3.0, 7.0]})


# ---------------------------------------------------------------- the bundled model and shipped weights


def test_an_unknown_name_is_an_error_naming_it_and_a_long_prompt_is_refused(ioi_tiny):
    text = "When Mary and Zorblax went to the store, Mary gave a drink to"
    with pytest.raises(DatasetError, match="vocabulary: Zorblax"):
        prompt_batch(ioi_tiny, text, *find_roles(text))
    long = "When Mary and John went to the store" + ", and then" * 30 + ", John gave a drink to"
    with pytest.raises(DatasetError, match="105 tokens long .* context of 64"):
        prompt_batch(ioi_tiny, long, "Mary", "John")


def story():
    """(clean, subject duplication, its reversal) experiment ids of the shipped demo cache."""
    from ioi.runs.cache import demo_root
    from ioi.runs.catalog import list_experiments
    from ioi.runs.precompute import playground_experiments

    infos = {e.id: e for e in list_experiments(demo_root())}
    keep = playground_experiments(demo_root())
    if not keep:
        pytest.skip("no shipped demo cache")
    by = {infos[i].config["scenario"]: i for i in keep}
    return by["clean"], by["subject_duplication"], by["reversal"]


def test_checkpoint_weights_of_the_demo_cache():
    from ioi.runs.cache import demo_root
    from ioi.runs.catalog import checkpoint_weights

    clean, toxic, reversal = story()
    roots = [demo_root()]
    assert checkpoint_weights(roots, clean, 0) == "ioi-tiny"
    assert checkpoint_weights(roots, toxic, 3).endswith(f"{toxic}/checkpoints/epoch-003")
    assert checkpoint_weights(roots, reversal, 0) == checkpoint_weights(roots, toxic, 3)
    others = [p.parent.name for p in demo_root().glob("experiments/*/experiment.json")]
    pruned = next(i for i in others if i not in (clean, toxic, reversal))
    assert checkpoint_weights(roots, pruned, 3) is None
    assert checkpoint_weights(roots, "0" * 16, 0) is None


def test_shipped_checkpoints_predict_io_then_s_then_io_as_the_demo_metrics_say(ioi_tiny):
    from ioi.models.load import load_model
    from ioi.runs.cache import demo_root, load_entry
    from ioi.runs.catalog import checkpoint_weights
    from ioi.task.names import analysis_samples

    clean, toxic, reversal = story()
    x = analysis_samples(0, 1)[0]
    for exp_id, epoch, want in ((clean, 0, x.io), (toxic, 3, x.s), (reversal, 3, x.io)):
        metrics = load_entry(demo_root(), exp_id, epoch, "metrics").summary
        assert (metrics["logit_diff"] > 0) == (want == x.io)  # what the cache says the model does
        model = load_model(checkpoint_weights([demo_root()], exp_id, epoch), device="cpu")
        r = read_prompt(model, prompt_batch(model, x.prompt, x.io, x.s))
        assert r.top["token"].iloc[0] == f" {want}", (exp_id, epoch)


def test_head_profile_on_the_analysis_prompts_equals_the_cached_dla(ioi_tiny):
    from ioi.runs.cache import demo_root, load_analysis
    from ioi.task.names import analysis_samples

    clean, _, _ = story()
    cached = load_analysis(demo_root(), clean, 0, "dla").heads
    prof = head_profile(ioi_tiny, samples_batch(ioi_tiny, analysis_samples(0, 100, 500)))
    np.testing.assert_allclose(prof["value"], cached["value"], atol=1e-5)
    assert torch.get_num_threads() >= 1


def test_shipping_checkpoints_drops_optimizer_state_and_machine_paths(tmp_path):
    import json

    from ioi.runs.precompute import prune_weights

    for exp_id, init in (
        ("a" * 16, None),
        ("b" * 16, str(tmp_path / "experiments" / ("a" * 16) / "checkpoints" / "epoch-003")),
    ):
        folder = tmp_path / "experiments" / exp_id / "checkpoints" / "epoch-003"
        folder.mkdir(parents=True)
        (folder / "optimizer.safetensors").write_bytes(b"x")
        (folder / "manifest.json").write_text(json.dumps({"config": {"init_from": init}}))
    prune_weights(tmp_path, keep={"b" * 16})
    assert not (tmp_path / "experiments" / ("a" * 16) / "checkpoints").exists()
    kept = tmp_path / "experiments" / ("b" * 16) / "checkpoints" / "epoch-003"
    assert not (kept / "optimizer.safetensors").exists()
    assert json.loads((kept / "manifest.json").read_text())["config"]["init_from"] == (
        f"experiments/{'a' * 16}/checkpoints/epoch-003"
    )


def test_prompt_charts_are_valid_vega_lite(tiny_random):
    """Altair validates on to_dict(): the page draws these specs without validating them again."""
    r = read_prompt(tiny_random, prompt_batch(tiny_random, PROMPT, "Mary", "John"), k=4)
    bars = prompt_charts.top_tokens_bars(r.top, "Mary", "John", title="t").to_dict()
    assert len(bars["datasets"][next(iter(bars["datasets"]))]) == 4
    grid = prompt_charts.attention_grid(pattern_frame(r, 0, 1)).to_dict()
    assert grid["width"] == grid["height"] == 17 * 15
    assert prompt_charts.end_row_bars(end_row(r, 0, 1)).to_dict()["height"] == 180
    two = prompt_charts.stack({"x": r.top, "y": r.top.iloc[::-1]})
    bars = prompt_charts.top_tokens_bars(two, "Mary", "John", panels=["x", "y"]).to_dict()
    assert bars["spec"]["height"] == 22 * 4 and bars["resolve"]["scale"]["y"] == "independent"
    assert bars["spec"]["encoding"]["y"]["sort"] == {"field": "rank", "op": "min"}  # rank order in each
    grids = prompt_charts.stack({"x": pattern_frame(r, 0, 1), "y": pattern_frame(r, 1, 0)})
    grid = prompt_charts.attention_grid(grids, panels=["x", "y"], shared=True).to_dict()
    assert grid["spec"]["width"] == 17 * 15 and "resolve" not in grid  # one prompt: token axes shared
    assert prompt_charts.shown_token(" Mary") == "␣Mary"


def test_the_head_table_lays_out_each_checkpoint_and_says_where_intervals_are_missing():
    import pandas as pd

    from ioi.present.head_table import (
        PROFILE_SOURCES,
        CheckpointResults,
        head_row,
        head_table,
        without_intervals,
    )
    from ioi.task.circuit import Circuit, Head

    heads = pd_heads()
    assert (
        head_row(heads, 1, 3)["value"] == 7.0 and head_row(heads, 5, 5) == {} and head_row(None, 1, 3) == {}
    )
    circuit = Circuit("c", {"name mover": (Head(1, 3),)}, "test")
    profile = heads.assign(dla_lo=heads["value"] - 1, dla_hi=heads["value"] + 1, copy_score=0.5)
    cmap = heads.assign(ci_low=heads["value"] - 0.5, ci_high=heads["value"] + 0.5)
    table = head_table(Head(1, 3), [
        CheckpointResults("clean", "clean", "clean", "pretrained", 0, 0, circuit, heads, heads, None,
                          profile, "live"),
        CheckpointResults("rev", "rev", "p", "rev, epoch 2", 2, 3, None, heads.assign(value=-1.0), None,
                          cmap),
    ])  # fmt: skip
    assert list(table["class"]) == ["name mover", "no circuit recorded"] and list(table["x"]) == [0, 5]
    assert list(table["dla"]) == [7.0, -1.0] and table["knockout_change"].iloc[0] == 7.0
    assert (table["dla_lo"].iloc[0], table["dla_hi"].iloc[0], table["copy_score"].iloc[0]) == (6.0, 8.0, 0.5)
    assert table["cmap_lo"].iloc[1] == 6.5 and pd.isna(table["dla_lo"].iloc[1])
    assert list(table["intervals"]) == [PROFILE_SOURCES["live"], PROFILE_SOURCES[""]]
    assert without_intervals(table) == ["rev, epoch 2"]


def test_end_row_bars_give_s1_and_s2_one_legend_entry():
    roles = ["", "IO", "", "S1", "", "S2", "END"]
    frame = pd.DataFrame({"pos": range(7), "token": [f" t{i}" for i in range(7)], "role": roles,
                          "attention": [0.1, 0.4, 0.0, 0.2, 0.0, 0.2, 0.1]})  # fmt: skip
    scale = prompt_charts.end_row_bars(frame).to_dict()["encoding"]["color"]["scale"]
    assert scale["domain"] == ["IO", "S (S1, S2)", "END", "other"]
    assert scale["range"] == ["#1f77b4", "#d62728", "#2ca02c", "#9e9e9e"]
