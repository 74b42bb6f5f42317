"""Direct logit attribution adds up exactly; attribution patching matches exact patching when the
patch is small enough for the first-order step to be accurate."""

import copy

import pytest
import torch

from ioi.methods.analyses import run_analysis
from ioi.methods.attribution import (
    attribution_patching,
    correlations,
    direct_logit_attribution,
    direct_path_effects,
    head_name_effects,
    head_z,
)
from ioi.models.load import wrap
from ioi.task.data import NAMES, abc_counterfactual, make_dataset, tokenize
from ioi.task.metrics import logit_diff_per_prompt


@pytest.fixture(scope="module")
def tiny(tiny_random):
    """random:tiny with random biases and LayerNorm weights, so every DLA term is non-zero."""
    m = copy.copy(tiny_random)
    hf = copy.deepcopy(m.hf_model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    m.bridge, m.hf_model = wrap(hf, m.tokenizer, "cpu"), hf
    return m


@pytest.fixture(scope="module")
def batches(tiny):
    samples = make_dataset(12, seed=3, split="eval")
    clean = tokenize(samples, tiny.tokenizer)
    return clean, tokenize(abc_counterfactual(samples, seed=3), tiny.tokenizer, like=clean)


def _check_dla_sums(bridge, clean):
    dla = direct_logit_attribution(bridge, clean)
    actual = logit_diff_per_prompt(bridge(clean.tokens), clean)
    torch.testing.assert_close(dla.logit_diff, actual, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dla.total(), actual, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dla.total().mean(), actual.mean(), atol=1e-5, rtol=1e-5)
    return dla


def test_dla_sums_to_logit_diff_with_biases(tiny, batches):
    dla = _check_dla_sums(tiny.bridge, batches[0])
    # the attention biases are really exercised (GPT-2 has no unembedding bias to test)
    assert dla.attn_bias.abs().max() > 1e-4 and dla.mlp.abs().max() > 1e-4


def test_dla_heads_match_z_times_w_o(tiny, batches):
    """Per-head DLA against the slow recipe: hook_z at END @ W_O / ln_final scale · (W_U[IO] − W_U[S])."""
    clean = batches[0]
    bridge = tiny.bridge
    _, cache = bridge.run_with_cache(clean.tokens)
    rows = torch.arange(len(clean))
    scale = cache["ln_final.hook_scale"][rows, clean.end]  # [batch, 1]
    d = (bridge.W_U[:, clean.io_tok] - bridge.W_U[:, clean.s_tok]).T
    dla = direct_logit_attribution(bridge, clean)
    for layer in range(bridge.cfg.n_layers):
        z = cache[f"blocks.{layer}.attn.hook_z"][rows, clean.end]  # [batch, head, d_head]
        for head in range(bridge.cfg.n_heads):
            ref = ((z[:, head] @ bridge.W_O[layer, head]) / scale * d).sum(-1)
            torch.testing.assert_close(dla.heads[:, layer, head], ref, atol=1e-5, rtol=1e-4)


def test_dla_analysis_tables_add_up(tiny, batches):
    clean, abc = batches
    res = run_analysis("dla", tiny, clean, abc)
    s = res.summary
    layers = res.tables["layers"]
    rest = s["embed"] + s["pos_embed"] + s["centering"] + s["unembed_bias"]
    assert layers["attn"].sum() + layers["mlp"].sum() + rest == pytest.approx(s["logit_diff"], abs=1e-4)
    assert res.heads["value"].sum() == pytest.approx(s["heads_total"], abs=1e-5)
    assert s["head_share"] + s["mlp_share"] == pytest.approx(1.0)
    assert len(res.heads) == tiny.n_layers * tiny.n_heads


@pytest.mark.slow
def test_dla_sums_on_gpt2_shape(gpt2_random):
    samples = make_dataset(3, seed=0, split="eval")
    dla = _check_dla_sums(gpt2_random.bridge, tokenize(samples, gpt2_random.tokenizer))
    assert dla.heads.shape == (3, 12, 12)


def test_dla_sums_on_ioi_tiny(ioi_tiny):
    samples = make_dataset(6, seed=0, split="eval")
    _check_dla_sums(ioi_tiny.bridge, tokenize(samples, ioi_tiny.tokenizer))


def _exact_activation_patching(bridge, clean, source_z):
    """Slow reference: one forward per head with its hook_z (all positions) from source_z."""
    base = logit_diff_per_prompt(bridge(clean.tokens), clean).mean()
    n_layers, n_heads = bridge.cfg.n_layers, bridge.cfg.n_heads
    out = torch.zeros(n_layers, n_heads)
    for layer in range(n_layers):
        for head in range(n_heads):

            def patch(z, hook, layer=layer, head=head):
                z = z.clone()
                z[:, :, head] = source_z[layer][:, :, head]
                return z

            logits = bridge.run_with_hooks(clean.tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", patch)])
            out[layer, head] = logit_diff_per_prompt(logits, clean).mean() - base
    return out


def test_eap_matches_exact_patching_for_small_patches(tiny, batches):
    clean, abc = batches
    bridge = tiny.bridge
    z_clean, z_abc = head_z(bridge, clean), head_z(bridge, abc)
    eps = 1e-2
    z_near = [zc + eps * (za - zc) for zc, za in zip(z_clean, z_abc, strict=True)]
    exact = _exact_activation_patching(bridge, clean, z_near)
    approx = attribution_patching(bridge, clean, z_near, exact=exact, chunk=5)  # chunks 5, 5, 2
    assert exact.abs().max() > 1e-6  # the patches do move F
    assert approx.agreement["pearson"] > 0.99 and approx.agreement["spearman"] > 0.9
    whole = attribution_patching(bridge, clean, z_near)
    torch.testing.assert_close(approx.activation, whole.activation, atol=1e-7, rtol=1e-4)
    assert correlations(approx.path, direct_path_effects(bridge, clean, z_near))["pearson"] > 0.99


def test_eap_end_only_ignores_other_positions(tiny, batches):
    """With positions="end", a corruption that differs from clean only away from END has no effect."""
    clean, abc = batches
    z_clean, z_abc = head_z(tiny.bridge, clean), head_z(tiny.bridge, abc)
    rows = torch.arange(len(clean))
    off_end = []
    for zc, za in zip(z_clean, z_abc, strict=True):
        z = za.clone()
        z[rows, clean.end] = zc[rows, clean.end]
        off_end.append(z)
    est = attribution_patching(tiny.bridge, clean, off_end, positions="end")
    assert est.activation.abs().max() < 1e-6 and est.path.abs().max() < 1e-6
    assert attribution_patching(tiny.bridge, clean, off_end).activation.abs().max() > 1e-6


def test_eap_analysis_compare(tiny, batches):
    clean, abc = batches
    res = run_analysis("eap", tiny, clean, abc, compare=True)
    assert {"value", "path", "exact", "exact_path"} <= set(res.heads.columns)
    assert -1.0 <= res.summary["pearson"] <= 1.0 and -1.0 <= res.summary["spearman"] <= 1.0
    ref = _exact_activation_patching(tiny.bridge, clean, head_z(tiny.bridge, abc))
    torch.testing.assert_close(
        torch.tensor(res.heads["exact"].values).view_as(ref), ref.double(), atol=1e-4, rtol=1e-4
    )


def test_correlations():
    x = torch.arange(10.0)
    c = correlations(x, x**3)
    assert c["spearman"] == pytest.approx(1.0) and 0.8 < c["pearson"] < 1.0
    assert correlations(x, -x)["pearson"] == pytest.approx(-1.0)


def test_head_name_effects_split_dla(ioi_tiny):
    """IO effect − S effect is each head's DLA; ioi-tiny's S-suppressor 1.2 (model card) lowers S
    and leaves IO, while its name mover 1.7 raises IO more than S."""
    batch = tokenize(make_dataset(20, seed=0, split="eval"), ioi_tiny.tokenizer)
    names = torch.tensor([ioi_tiny.tokenizer.get_vocab()[" " + n] for n in NAMES])
    io, s = head_name_effects(ioi_tiny.bridge, batch, names)
    dla = direct_logit_attribution(ioi_tiny.bridge, batch)
    torch.testing.assert_close(io - s, dla.heads, atol=1e-4, rtol=1e-4)
    io, s = io.mean(0), s.mean(0)
    assert s[1, 2] < -1.0 and abs(io[1, 2]) < 0.5 * abs(s[1, 2])
    assert io[1, 7] > 0.5 and io[1, 7] > s[1, 7] + 0.5
