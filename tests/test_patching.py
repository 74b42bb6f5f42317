"""The patching engine against plain hook runs."""

from __future__ import annotations

import pytest
import torch
from analysis_data import ioi_batches

from ioi.methods.hooks import read
from ioi.methods.patching import (
    Patch,
    hook_name,
    patch_head_outputs,
    patch_hooks,
    position_mask,
    prepare,
    read_activations,
    run_patched,
)
from ioi.task.metrics import logit_diff_per_prompt


@pytest.fixture(scope="module")
def data(tiny_random):
    return ioi_batches(tiny_random, 12)


def test_prepare_matches_plain_runs(tiny_random, data):
    clean, abc = data
    acts = prepare(tiny_random, clean, abc)
    with torch.no_grad():
        ld_clean = logit_diff_per_prompt(tiny_random.bridge(clean.tokens), clean)
        ld_abc = logit_diff_per_prompt(tiny_random.bridge(abc.tokens), abc)
    torch.testing.assert_close(acts.ld_clean, ld_clean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(acts.ld_abc, ld_abc, atol=1e-4, rtol=1e-4)
    assert prepare(tiny_random, clean, abc) is acts  # memoised


def test_patching_a_head_with_its_own_clean_output_changes_nothing(tiny_random, data):
    clean, abc = data
    acts = prepare(tiny_random, clean, abc)
    variants = [[Patch(1, 2, acts.z_clean[1, :, :, 2])], [Patch(0, 1, acts.z_clean[0, :, :, 1])]]
    out = run_patched(tiny_random, clean, variants, resid_pre=acts.resid_pre)
    torch.testing.assert_close(out, acts.ld_clean.expand(2, -1), atol=1e-4, rtol=1e-4)


def test_patching_every_head_and_mlp_from_abc_gives_the_abc_run(tiny_random, data):
    clean, abc = data
    acts = prepare(tiny_random, clean, abc)
    _, cache = tiny_random.bridge.run_with_cache(abc.tokens)
    variant = [Patch(layer, head, acts.z_abc[layer, :, :, head])
               for layer in range(tiny_random.n_layers) for head in range(tiny_random.n_heads)]  # fmt: skip
    variant += [Patch(layer, None, cache[hook_name(layer, "mlp_out")], site="mlp_out")
                for layer in range(tiny_random.n_layers)]  # fmt: skip
    # END's token is the same in both runs, so its final residual is then the ABC run's
    got = run_patched(tiny_random, clean, [variant])[0]
    torch.testing.assert_close(got, acts.ld_abc, atol=1e-4, rtol=1e-4)


def test_patch_head_outputs_matches_one_hook_run_per_head(tiny_random, data):
    clean, abc = data
    acts = prepare(tiny_random, clean, abc)
    where = position_mask(clean, "end")
    for position in (None, "end"):
        grid = patch_head_outputs(tiny_random, clean, abc, position=position, normalize=False, max_rows=30)
        for layer in range(tiny_random.n_layers):
            for head in range(tiny_random.n_heads):
                mask = torch.ones_like(where) if position is None else where

                def hook(z, hook, layer=layer, head=head, mask=mask):
                    z = z.clone()
                    z[:, :, head][mask] = acts.z_abc[layer, :, :, head][mask]
                    return z

                hooks = [(hook_name(layer, "z"), hook)]
                logits = tiny_random.bridge.run_with_hooks(clean.tokens, fwd_hooks=hooks)
                want = logit_diff_per_prompt(logits, clean).mean() - acts.f_clean
                assert grid[layer, head].item() == pytest.approx(want.item(), abs=1e-4)


def test_normalized_effect_is_zero_for_clean_and_scaled_by_the_gap(tiny_random, data):
    clean, abc = data
    acts = prepare(tiny_random, clean, abc)
    raw = patch_head_outputs(tiny_random, clean, abc, normalize=False)
    norm = patch_head_outputs(tiny_random, clean, abc)
    torch.testing.assert_close(norm, raw / (acts.f_clean - acts.f_abc))


def test_read_activations_and_patch_hooks_match_the_bridge(tiny_random, data):
    clean, abc = data
    acts = prepare(tiny_random, clean, abc)
    names = [hook_name(0, "z"), "blocks.1.hook_resid_post", hook_name(1, "q_input")]
    got = read_activations(tiny_random, clean, names, chunk=5)
    _, cache = tiny_random.bridge.run_with_cache(clean.tokens, names_filter=lambda n: n in names)
    for n in names:
        torch.testing.assert_close(got[n], cache[n])
    variant = [Patch(0, 2, acts.z_abc[0, :, :, 2], position_mask(clean, "s2"))]
    logits = tiny_random.bridge.run_with_hooks(
        clean.tokens, fwd_hooks=patch_hooks([variant], tiny_random.n_layers)
    )
    want = logit_diff_per_prompt(logits, clean)
    torch.testing.assert_close(run_patched(tiny_random, clean, [variant])[0], want, atol=1e-4, rtol=1e-4)


def test_reading_early_blocks_stops_with_the_bridges_stop_at_layer_and_same_numbers(tiny_random, data):
    """Names in block 0 only end the pass with TransformerBridge's stop_at_layer=1 (no unembedding)."""
    clean, _ = data
    names = [hook_name(0, "z"), "blocks.0.hook_resid_post", hook_name(0, "pattern")]
    calls = []
    unembed = (lambda x, hook: calls.append(hook.name), "unembed.hook_in")
    got = read(tiny_random.bridge, clean.tokens, names, hooks=[(unembed[1], unembed[0])], chunk=5)
    tiny_random.bridge.set_use_split_qkv_input(False)  # as the reader runs a pass without q/k/v-input hooks
    try:
        _, cache = tiny_random.bridge.run_with_cache(clean.tokens, names_filter=lambda n: n in names)
    finally:
        tiny_random.bridge.set_use_split_qkv_input(True)
    for n in names:
        torch.testing.assert_close(got[n], cache[n], atol=0, rtol=0)
    assert calls == []  # the unembedding never ran
    at_end = read(tiny_random.bridge, clean.tokens, ["blocks.0.hook_resid_post"], at=clean.end)
    torch.testing.assert_close(at_end["blocks.0.hook_resid_post"], cache["blocks.0.hook_resid_post"][
        torch.arange(len(clean)), clean.end])  # fmt: skip


def test_end_only_patches_recompute_only_end_and_match_the_full_forward(ioi_tiny):
    """The END-row engine (taken when every patch is at END and resid_pre is given) equals the
    hooked forward over whole sequences (taken without resid_pre), for every patch site."""
    clean, abc = ioi_batches(ioi_tiny, 12)
    acts = prepare(ioi_tiny, clean, abc)
    end = position_mask(clean, "end")
    names = [hook_name(layer, "pattern") for layer in range(ioi_tiny.n_layers)]
    patterns = read_activations(ioi_tiny, abc, names)
    variants: list[list[Patch]] = [[]]
    for layer in range(ioi_tiny.n_layers):
        resid = acts.resid_pre[layer][end]
        other = resid.roll(1, 0)  # another prompt's END residual (LayerNorm cancels plain rescaling)
        variants += [
            [Patch(layer, 1, acts.z_abc[layer, :, :, 1], end)],
            [Patch(layer, 0, other, end, "q_input")],
            [Patch(layer, 0, other, end, "k_input"), Patch(layer, 1, other, end, "v_input")],
            [Patch(layer, 1, patterns[hook_name(layer, "pattern")][:, 1][end], end, "pattern")],
            [Patch(layer, None, acts.mlp_out[layer][end] * 2, end, "mlp_out")],
        ]
    fast = run_patched(ioi_tiny, clean, variants, resid_pre=acts.resid_pre, max_rows=1)  # many chunks
    full = run_patched(ioi_tiny, clean, variants)
    assert (full - acts.ld_clean).abs().amax(1)[1:].min() > 1e-3  # every variant changes something
    torch.testing.assert_close(fast, full, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast[0], acts.ld_clean, atol=1e-4, rtol=1e-4)


def test_passes_without_qkv_input_hooks_skip_the_per_head_copies_with_the_same_numbers(tiny_random, data):
    """A pass that neither reads nor patches hook_q/k/v_input runs without the bridge's per-head
    residual copies (faster), and gives what a pass with them gives; the flag is back on after."""
    clean, _ = data
    final = "blocks.1.hook_resid_post"
    seen = []
    plain = read(tiny_random.bridge, clean.tokens, [final])
    forked = read(tiny_random.bridge, clean.tokens, [final],
                  hooks=[("blocks.1.hook_q_input", lambda x, hook: seen.append(x.shape))])  # fmt: skip
    assert seen and len(seen[0]) == 4  # the per-head copies existed in that pass: [batch, pos, head, d]
    torch.testing.assert_close(plain[final], forked[final], atol=1e-5, rtol=1e-5)
    assert tiny_random.bridge.cfg.use_split_qkv_input
