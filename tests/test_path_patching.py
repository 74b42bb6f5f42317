"""Path patching: the fast (forward-free / batched) computation against a slow hook loop."""

from __future__ import annotations

import pytest
import torch
from analysis_data import ioi_batches

from ioi.methods.patching import hook_name, patch_head_outputs, position_mask, prepare
from ioi.methods.path_patching import LOGITS, Receivers, path_patch
from ioi.task.circuit import Head
from ioi.task.metrics import logit_diff_per_prompt


@pytest.fixture(scope="module")
def data(tiny_random):
    return ioi_batches(tiny_random, 10)


def freeze_hooks(model, acts, sender, freeze_mlp, sender_where=None):
    """Hooks of the plain reference: every head clean except `sender` (ABC), MLPs optionally clean."""

    def z_hook(z, hook, layer):
        z = acts.z_clean[layer].clone()
        if layer == sender.layer:
            where = torch.ones(z.shape[:2], dtype=torch.bool) if sender_where is None else sender_where
            z[:, :, sender.head][where] = acts.z_abc[layer, :, :, sender.head][where]
        return z

    hooks = [(hook_name(layer, "z"), lambda z, hook, layer=layer: z_hook(z, hook, layer))
             for layer in range(model.n_layers)]  # fmt: skip
    if freeze_mlp:
        hooks += [(hook_name(layer, "mlp_out"), lambda x, hook, layer=layer: acts.mlp_out[layer].clone())
                  for layer in range(model.n_layers)]  # fmt: skip
    return hooks


def slow_path_patch(model, clean, acts, sender, receivers, freeze_mlp, sender_where=None):
    """One forward per sender (then one per receiver set): the method as written in METHODS §6."""
    bridge = model.bridge
    hooks = freeze_hooks(model, acts, sender, freeze_mlp, sender_where)
    if receivers.is_logits:
        logits = bridge.run_with_hooks(clean.tokens, fwd_hooks=hooks)
        return logit_diff_per_prompt(logits, clean).mean().item() - acts.f_clean
    names = {hook_name(h.layer, receivers.site) for h in receivers.heads}
    with bridge.hooks(fwd_hooks=hooks):
        _, cache = bridge.run_with_cache(clean.tokens, names_filter=lambda n: n in names)
    where = position_mask(clean, receivers.position)

    def set_input(x, hook, h):
        x = x.clone()
        x[:, :, h.head][where] = cache[hook_name(h.layer, receivers.site)][:, :, h.head][where]
        return x

    step2 = [
        (hook_name(h.layer, receivers.site), lambda x, hook, h=h: set_input(x, hook, h))
        for h in receivers.heads
    ]
    logits = bridge.run_with_hooks(clean.tokens, fwd_hooks=step2)
    return logit_diff_per_prompt(logits, clean).mean().item() - acts.f_clean


def assert_matches_slow(model, clean, abc, receivers, freeze_mlp, senders, sender_position=None):
    acts = prepare(model, clean, abc)
    grid = path_patch(model, clean, abc, receivers, senders=senders, freeze_mlp=freeze_mlp,
                      normalize=False, sender_position=sender_position, max_rows=25)  # fmt: skip
    where = position_mask(clean, sender_position)
    for layer, head in senders:
        want = slow_path_patch(model, clean, acts, Head(layer, head), receivers, freeze_mlp, where)
        assert grid[layer, head].item() == pytest.approx(want, abs=1e-4), (layer, head)


@pytest.mark.parametrize("freeze_mlp", [False, True])
def test_logits_receiver_matches_slow_reference(tiny_random, data, freeze_mlp):
    assert_matches_slow(tiny_random, *data, LOGITS, freeze_mlp, [(0, 0), (0, 3), (1, 1), (1, 2)])


def test_sender_position_matches_slow_reference(tiny_random, data):
    assert_matches_slow(tiny_random, *data, LOGITS, False, [(0, 1), (1, 3)], sender_position="end")


@pytest.mark.parametrize("site,position", [("q_input", "end"), ("k_input", "s1+1"), ("v_input", "s2")])
@pytest.mark.parametrize("freeze_mlp", [False, True])
def test_receiver_heads_match_slow_reference(tiny_random, data, site, position, freeze_mlp):
    receivers = Receivers((Head(1, 0), Head(1, 3)), site, position)
    assert_matches_slow(tiny_random, *data, receivers, freeze_mlp, [(0, 0), (0, 2), (1, 1)])


def test_last_layer_head_to_logits_equals_its_activation_patching(tiny_random, data):
    clean, abc = data
    last = tiny_random.n_layers - 1
    path = path_patch(tiny_random, clean, abc, LOGITS)
    act = patch_head_outputs(tiny_random, clean, abc, heads=[(last, h) for h in range(tiny_random.n_heads)])
    torch.testing.assert_close(path[last], act[last], atol=1e-4, rtol=1e-4)
    assert path[last].abs().max() > 0


def test_senders_at_or_above_the_receiver_layer_have_no_effect(tiny_random, data):
    grid = path_patch(tiny_random, *data, Receivers((Head(1, 0),), "q_input", "end"), normalize=False)
    assert torch.all(grid[1] == 0)
    assert grid[0].abs().max() > 0


def test_gpt2_shape_sweep_to_logits_matches_slow_reference_on_some_heads(gpt2_random):
    clean, abc = ioi_batches(gpt2_random, 2)
    acts = prepare(gpt2_random, clean, abc)
    grid = path_patch(gpt2_random, clean, abc, LOGITS, normalize=False)
    assert grid.shape == (12, 12) and not grid.isnan().any()
    for layer, head in [(0, 1), (9, 9), (11, 10)]:
        want = slow_path_patch(gpt2_random, clean, acts, Head(layer, head), LOGITS, False)
        assert grid[layer, head].item() == pytest.approx(want, abs=1e-4)


def test_heads_that_cannot_reach_the_receivers_have_no_value(tiny_random, data):
    """A layer-1 receiver's inputs come from layer 0 only: the analysis once ranked the layer-1 rows
    among the results, every one a structural 0.000000."""
    from ioi.methods.analyses import run_analysis

    result = run_analysis("path-patch", tiny_random, *data, receiver="q", heads="1.0")
    later = result.heads[result.heads["layer"] >= 1]["value"]
    assert later.isna().all() and result.heads[result.heads["layer"] == 0]["value"].notna().all()
    assert result.summary["no_value"] == "heads of layer 1 and later cannot send to the receivers"
