"""The timeline and the matrices across checkpoints, on known cases: a checkpoint against itself,
and a planted change (one head's W_O zeroed in a constructed "epoch")."""

from __future__ import annotations

import pytest
import torch
from analysis_data import ioi_batches

from ioi.methods.evolution import profile_checkpoint, timeline
from ioi.methods.transfer import cmap_matrix, transfer_faithfulness
from ioi.models.load import LoadedModel, load_hf, wrap
from ioi.task.circuit import Head

pytestmark = pytest.mark.slow  # three ioi-tiny checkpoints profiled (≈1 min idle): run with --runslow


def zero_head_output(model: LoadedModel, layer: int, head: int) -> LoadedModel:
    """A fresh copy of `model` whose head layer.head writes nothing (its rows of W_O are zero)."""
    hf, _, _ = load_hf(model.name)  # the wrapped module's weights are the bridge's: load anew
    d_head = hf.config.n_embd // hf.config.n_head
    with torch.no_grad():
        hf.transformer.h[layer].attn.c_proj.weight[head * d_head : (head + 1) * d_head] = 0
    return LoadedModel(
        name=f"{model.name} without {layer}.{head}",
        bridge=wrap(hf, model.tokenizer, "cpu"),
        hf_model=hf,
        tokenizer=model.tokenizer,
        source="planted",
        device="cpu",
    )


@pytest.fixture(scope="module")
def family(ioi_tiny):
    clean, abc = ioi_batches(ioi_tiny, 24)
    base = profile_checkpoint(ioi_tiny, clean, abc, "epoch 0")
    # the planted head: the strongest direct effect on the logits
    direct = base.roles["name_mover"].mean(-1)
    layer, head = divmod(int(direct.abs().argmax()), ioi_tiny.n_heads)
    planted = zero_head_output(ioi_tiny, layer, head)
    same = profile_checkpoint(ioi_tiny, clean, abc, "epoch 1", name_movers=base.name_movers)
    changed = profile_checkpoint(planted, clean, abc, "epoch 2", name_movers=base.name_movers)
    return clean, abc, [base, same, changed], Head(layer, head), [ioi_tiny, ioi_tiny, planted]


def test_a_checkpoint_with_itself_has_jaccard_one(family):
    _, _, profiles, _, _ = family
    t = timeline(profiles[:2], n_boot=100)
    row = t["overlap"].iloc[1]
    assert row["edge_jaccard"] == 1.0 and row["node_jaccard"] == 1.0 and row["head_circuit_jaccard"] == 1.0
    assert row["edge_jaccard_lo"] == 1.0 and row["edge_jaccard_hi"] == 1.0  # same resamples, same sets
    assert t["changes"].iloc[1]["edges_entering"] == "" and t["changes"].iloc[1]["heads_leaving"] == ""
    assert not t["roles"]["changed"].any() and not t["roles"]["sign_flip"].any()
    assert 0 <= row["stability"] <= 1 and row["resamples"] == 100


def test_a_planted_change_shows_at_its_epoch_and_head_only(family):
    _, _, profiles, planted, _ = family
    t = timeline(profiles, n_boot=200)
    roles = t["roles"]
    changed = roles[roles["changed"]]
    assert set(changed["checkpoint"]) == {"epoch 2"}
    assert {(r.layer, r.head) for r in changed.itertuples()} == {tuple(planted)}
    gone = roles[
        (roles["checkpoint"] == "epoch 2")
        & (roles["layer"] == planted.layer)
        & (roles["head"] == planted.head)
    ]
    assert gone.set_index("role").loc["name_mover", "value"] == pytest.approx(0.0, abs=1e-6)
    changes = t["changes"].iloc[2]
    assert changes["heads_leaving"] == str(planted) and changes["heads_entering"] == ""
    touches = lambda e: str(planted) in (e.split("->")[0], e.split("->")[1].rsplit(".", 1)[0])  # noqa: E731
    assert changes["edges_leaving"] and all(touches(e) for e in changes["edges_leaving"].split())
    assert t["overlap"].iloc[2]["edge_jaccard"] < 1.0


def test_transfer_diagonal_is_in_model_faithfulness(family):
    clean, abc, profiles, _, models = family
    m = transfer_faithfulness(models, [p.circuit_edges for p in profiles], clean, abc)
    for i, p in enumerate(profiles):
        assert m["value"][i, i].item() == pytest.approx(p.faithfulness.value, abs=1e-5)
    assert m["value"][0, 1].item() == pytest.approx(m["value"][0, 0].item(), abs=1e-6)  # same model
    reused = transfer_faithfulness(
        models, [p.circuit_edges for p in profiles], clean, abc, runs=[p.runs for p in profiles]
    )
    assert torch.allclose(reused["value"], m["value"], atol=1e-6, equal_nan=True)
    c = cmap_matrix(models, [Head.parse(h) for h in profiles[0].heads], clean, n_boot=100)
    given = cmap_matrix(
        models,
        [Head.parse(h) for h in profiles[0].heads],
        clean,
        acts=[p.runs.acts for p in profiles],
        n_boot=100,
    )
    assert torch.allclose(given["value"], c["value"], atol=1e-6, equal_nan=True)
    assert torch.all(c["value"].diagonal() == 0)
    assert c["value"][0, 1].abs().item() < 1e-5  # identical models: patching changes nothing
    # CMAP patches head outputs before W_O (hook_z): a zeroed W_O leaves them, and every head
    # upstream of the planted one, as they were, so no pair differs
    assert c["value"].abs().max().item() < 1e-4
