"""Edge-level circuits: exact edge scores and edge sets against a plain loop of hooked forwards."""

from __future__ import annotations

import pytest
import torch
from analysis_data import ioi_batches

from ioi.methods.edge_sets import edge_set_logit_diffs
from ioi.methods.edges import (
    EMBED,
    LOGITS,
    edge_graph,
    edge_runs,
    exact_edge_scores,
)
from ioi.task.metrics import logit_diff_per_prompt


@pytest.fixture(scope="module")
def data(tiny_random):
    clean, abc = ioi_batches(tiny_random, 6)
    return clean, abc, edge_runs(tiny_random, clean, abc)


def slow_edge_score(model, clean, runs, sender: int, receiver: str, scale: float = 1.0) -> float:
    """One hooked forward: the receiver's input gets the sender's change (times `scale`), nothing
    else changes."""
    bridge = model.bridge
    delta = runs.delta[sender] * scale
    if receiver == LOGITS:
        name, fn = f"blocks.{model.n_layers - 1}.hook_resid_post", lambda x, hook: x + delta
    elif receiver.startswith("mlp"):
        name, fn = f"blocks.{receiver[3:]}.hook_mlp_in", lambda x, hook: x + delta
    else:
        layer, head, site = receiver.split(".")

        def fn(x, hook, head=int(head)):
            x = x.clone()
            x[:, :, head] += delta
            return x

        name = f"blocks.{layer}.hook_{site}_input"
    bridge.set_use_hook_mlp_in(True)
    try:
        logits = bridge.run_with_hooks(clean.tokens, fwd_hooks=[(name, fn)])
    finally:
        bridge.set_use_hook_mlp_in(False)
    return logit_diff_per_prompt(logits, clean).mean().item() - runs.acts.f_clean


def test_graph_has_every_edge_once(tiny_random):
    g = edge_graph(tiny_random)  # 2 layers, 4 heads
    assert len(g.senders) == 1 + 2 * 5 and len(g.receivers) == 2 * 13 + 1
    assert "1.3->logits" in g.names and "0.2->1.0.k" in g.names and "0.1->mlp0" in g.names
    assert "1.0->1.2.q" not in g.names and "mlp0->0.1.v" not in g.names and "mlp1->mlp1" not in g.names
    # embed -> 27 receivers; layer-0 heads -> 13 + 1 + 1 each; mlp0 -> 14; layer-1 heads -> 2; mlp1 -> 1
    assert len(g.edges) == 27 + 4 * 15 + 14 + 4 * 2 + 1


def test_exact_scores_equal_a_slow_per_edge_loop(tiny_random, data):
    clean, abc, runs = data
    g = edge_graph(tiny_random)
    fast = exact_edge_scores(tiny_random, clean, abc, runs=runs)
    slow = torch.tensor([slow_edge_score(tiny_random, clean, runs, i, g.receivers[j]) for i, j in g.edges])
    assert fast.abs().max() > 1e-3  # the scores are not all trivially zero
    assert torch.allclose(fast, slow, atol=1e-5), (fast - slow).abs().max()


def test_small_chunks_change_nothing(tiny_random, data):
    clean, abc, runs = data
    a = exact_edge_scores(tiny_random, clean, abc, runs=runs)
    b = exact_edge_scores(tiny_random, clean, abc, runs=runs, max_elements=1)
    assert torch.allclose(a, b, atol=1e-6)


def test_edge_sets_none_is_clean_all_is_abc_one_is_its_score(tiny_random, data):
    clean, abc, runs = data
    g = edge_graph(tiny_random)
    scores = exact_edge_scores(tiny_random, clean, abc, runs=runs)
    n = len(g.edges)
    picks = [
        g.index("embed->logits"),
        g.index("0.1->1.2.k"),
        g.index("mlp0->mlp1"),
        g.index("0.3->0.3.q") if "0.3->0.3.q" in g.names else g.index(f"{EMBED}->0.3.q"),
    ]
    masks = torch.zeros(2 + len(picks), n, dtype=torch.bool)
    masks[1] = True
    for row, e in enumerate(picks, start=2):
        masks[row, e] = True
    f = edge_set_logit_diffs(tiny_random, clean, runs, masks).mean(1)
    assert f[0].item() == pytest.approx(runs.acts.f_clean, abs=1e-5)
    assert f[1].item() == pytest.approx(runs.acts.f_abc, abs=1e-5)
    for row, e in enumerate(picks, start=2):
        assert f[row].item() - runs.acts.f_clean == pytest.approx(scores[e].item(), abs=1e-5)


def slow_edge_set(model, clean, runs, patched) -> float:
    """One hooked forward with the edges of `patched` [edge] patched: every receiver reads the
    running residual minus, over its patched edges, (sender's output now − its ABC output)."""
    g, bridge, n_heads = edge_graph(model), model.bridge, model.n_heads
    off = g.matrix(patched.float())  # [sender, receiver]
    now: dict[int, torch.Tensor] = {}  # sender -> its output in this run
    resid: dict[int, torch.Tensor] = {}

    def minus_patched(x, receiver: int):
        for u, out in now.items():
            if off[u, receiver]:
                x = x - (out - runs.out_abc[u])
        return x

    def pre(x, hook, layer):
        resid[layer] = x
        if layer == 0:
            now[0] = x
        return x

    def site_input(x, hook, layer, k):
        x = x.clone()
        for h in range(n_heads):
            x[:, :, h] = minus_patched(resid[layer], layer * (3 * n_heads + 1) + 3 * h + k)
        return x

    def z(x, hook, layer):
        for h in range(n_heads):
            now[1 + layer * (n_heads + 1) + h] = x[:, :, h] @ bridge.W_O[layer, h]

    def mlp_in(x, hook, layer):
        return minus_patched(x, layer * (3 * n_heads + 1) + 3 * n_heads)

    def mlp_out(x, hook, layer):
        now[1 + layer * (n_heads + 1) + n_heads] = x

    hooks = []
    for layer in range(model.n_layers):
        hooks += [(f"blocks.{layer}.hook_resid_pre", lambda x, hook, la=layer: pre(x, hook, la))]
        hooks += [
            (f"blocks.{layer}.hook_{s}_input", lambda x, hook, la=layer, k=k: site_input(x, hook, la, k))
            for k, s in enumerate("qkv")
        ]
        hooks += [
            (f"blocks.{layer}.attn.hook_z", lambda x, hook, la=layer: z(x, hook, la)),
            (f"blocks.{layer}.hook_mlp_in", lambda x, hook, la=layer: mlp_in(x, hook, la)),
            (f"blocks.{layer}.hook_mlp_out", lambda x, hook, la=layer: mlp_out(x, hook, la)),
        ]
    final = f"blocks.{model.n_layers - 1}.hook_resid_post"
    hooks.append((final, lambda x, hook: minus_patched(x, len(g.receivers) - 1)))
    bridge.set_use_hook_mlp_in(True)
    try:
        logits = bridge.run_with_hooks(clean.tokens, fwd_hooks=hooks)
    finally:
        bridge.set_use_hook_mlp_in(False)
    return logit_diff_per_prompt(logits, clean).mean().item()


def test_edge_sets_equal_a_hooked_forward_per_set(tiny_random, data):
    """Random sets and the nested top-k sets the greedy circuit evaluates, against one hooked
    forward each (receivers with all edges kept, all patched, and mixed all occur)."""
    clean, abc, runs = data
    g = edge_graph(tiny_random)
    n = len(g.edges)
    gen = torch.Generator().manual_seed(0)
    order = exact_edge_scores(tiny_random, clean, abc, runs=runs).abs().argsort(descending=True)
    masks = [torch.rand(n, generator=gen) < p for p in (0.1, 0.5, 0.9)]
    for k in (0, 3, 20, 60, n):
        masks.append(torch.ones(n, dtype=torch.bool).index_fill_(0, order[:k], False))
    masks = torch.stack(masks)
    fast = edge_set_logit_diffs(tiny_random, clean, runs, masks).mean(1)
    slow = torch.tensor([slow_edge_set(tiny_random, clean, runs, m) for m in masks])
    assert (fast.max() - fast.min()).item() > 1e-3  # the sets differ
    assert torch.allclose(fast, slow, atol=1e-5), (fast - slow).abs().max()
