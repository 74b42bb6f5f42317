"""The fast paths state what they assume, and other architectures take the generic hooked path.

random:pythia is GPT-NeoX (rotary embeddings, attention and MLP in parallel): the END-row engine
and path patching's propagation do not describe it, so every method must take its hooked path and
give the numbers of plain hook runs. On random:tiny (GPT-2) the fast paths must equal the hooked
path too.
"""

from __future__ import annotations

import pytest
import torch
from analysis_data import ioi_batches
from test_cmap import _one_forward_per_head
from test_path_patching import slow_path_patch

from ioi.methods.ablation import AblationType, Knockout
from ioi.methods.analyses import run_analysis
from ioi.methods.attribution import direct_logit_attribution
from ioi.methods.cmap import cmap
from ioi.methods.end_row import end_row_logit_diffs
from ioi.methods.patching import Patch, hook_name, patch_head_outputs, position_mask, prepare, run_patched
from ioi.methods.path_patching import LOGITS, Receivers, path_patch
from ioi.methods.readout import fast_path_obstacles, layer_norm_obstacles
from ioi.models.load import load_model, wrap
from ioi.task.circuit import Head
from ioi.task.data import make_dataset, tokenize
from ioi.task.metrics import logit_diff, logit_diff_per_prompt


@pytest.fixture(scope="module")
def pythia():
    return load_model("random:pythia", device="cpu")


@pytest.fixture(scope="module")
def other_pythia():
    return load_model("random:pythia", device="cpu", seed=1)


@pytest.fixture(scope="module")
def data(pythia):
    return ioi_batches(pythia, 10)


def test_capability_check_names_what_does_not_fit(pythia, tiny_random):
    assert fast_path_obstacles(tiny_random.bridge) == []
    reasons = fast_path_obstacles(pythia.bridge)
    assert "rotary position embeddings" in reasons and "parallel attention and MLP" in reasons
    assert layer_norm_obstacles(pythia.bridge) == []  # GPT-NeoX's LayerNorm folds like GPT-2's


def test_llama_rms_norm_and_grouped_query_attention_are_named(gpt2_tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50257, hidden_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, max_position_embeddings=64, bos_token_id=50256, eos_token_id=50256,
    )  # fmt: skip
    bridge = wrap(LlamaForCausalLM(config), gpt2_tok, "cpu")
    reasons = " ".join(fast_path_obstacles(bridge))
    assert "rotary" in reasons and "grouped-query attention" in reasons and "RMSNorm" in reasons
    clean = tokenize(make_dataset(2, 0, "eval"), gpt2_tok)
    with pytest.raises(ValueError, match="RMSNorm"):
        direct_logit_attribution(bridge, clean)


def test_end_row_engine_would_be_wrong_on_pythia_and_is_refused(pythia, data):
    """The check is not vacuous: forced on GPT-NeoX, the END-row engine gives other numbers."""
    clean, abc = data
    acts = prepare(pythia, clean, abc)
    end = position_mask(clean, "end")
    variants = [[Patch(1, h, acts.z_abc[1, :, :, h], end)] for h in range(pythia.n_heads)]
    hooked = run_patched(pythia, clean, variants, resid_pre=acts.resid_pre)
    forced = end_row_logit_diffs(pythia, clean, variants, 1, acts.resid_pre)
    assert (forced - hooked).abs().max() > 1e-3
    with pytest.raises(ValueError, match="rotary position embeddings"):
        run_patched(pythia, clean, variants, resid_pre=acts.resid_pre, fast=True)
    with pytest.raises(ValueError, match="parallel attention"):
        path_patch(pythia, clean, abc, LOGITS, fast=True)


def test_dla_adds_up_on_pythia(pythia, data):
    clean, _ = data
    dla = direct_logit_attribution(pythia.bridge, clean)
    actual = logit_diff_per_prompt(pythia.bridge(clean.tokens), clean)
    torch.testing.assert_close(dla.total(), actual, atol=1e-4, rtol=1e-4)
    assert dla.pos_embed.abs().max() == 0  # rotary: no position vector in the residual stream
    res = run_analysis("dla", pythia, *data)
    assert res.summary["logit_diff"] == pytest.approx(actual.mean().item(), abs=1e-4)


@pytest.mark.parametrize("position", [None, "end"])
def test_patch_on_pythia_equals_one_hook_run_per_head(pythia, data, position):
    clean, abc = data
    acts = prepare(pythia, clean, abc)
    grid = patch_head_outputs(pythia, clean, abc, position=position, normalize=False, max_rows=25)
    everywhere = torch.ones(clean.tokens.shape, dtype=torch.bool)
    mask = everywhere if position is None else position_mask(clean, "end")
    for layer, head in [(0, 0), (0, 3), (1, 1), (1, 2)]:

        def hook(z, hook, layer=layer, head=head):
            z = z.clone()
            z[:, :, head][mask] = acts.z_abc[layer, :, :, head][mask]
            return z

        logits = pythia.bridge.run_with_hooks(clean.tokens, fwd_hooks=[(hook_name(layer, "z"), hook)])
        want = logit_diff(logits, clean).item() - acts.f_clean
        assert grid[layer, head].item() == pytest.approx(want, abs=1e-5)
    res = run_analysis("patch", pythia, clean, abc, position=position, normalize=False)
    assert res.heads["value"].values == pytest.approx(grid.flatten().double().numpy(), abs=1e-6)


@pytest.mark.parametrize(
    "receivers", [LOGITS, Receivers((Head(1, 0), Head(1, 3)), "q_input", "end")], ids=["logits", "q"]
)
def test_path_patch_on_pythia_equals_the_slow_reference(pythia, data, receivers):
    clean, abc = data
    acts = prepare(pythia, clean, abc)
    senders = [(0, 0), (0, 2), (1, 1)]
    grid = path_patch(pythia, clean, abc, receivers, senders=senders, normalize=False, max_rows=25)
    for layer, head in senders:
        want = slow_path_patch(pythia, clean, acts, Head(layer, head), receivers, False)
        assert grid[layer, head].item() == pytest.approx(want, abs=1e-5), (layer, head)


def test_knockout_on_pythia_equals_a_hook_run(pythia, data):
    clean, abc = data
    ko = Knockout(pythia, clean, abc, AblationType.MEAN_BY_TEMPLATE)
    heads = [Head(0, 1), Head(1, 2)]
    got = ko.run([ko.without(heads, "end")]).item()
    end = position_mask(clean, "end")

    def ablate(z, hook, layer):
        z = z.clone()
        for h in (h for h in heads if h.layer == layer):
            z[:, :, h.head][end] = ko.values[layer, :, :, h.head][end]
        return z

    hooks = [(hook_name(layer, "z"), lambda z, hook, layer=layer: ablate(z, hook, layer)) for layer in (0, 1)]
    want = logit_diff(pythia.bridge.run_with_hooks(clean.tokens, fwd_hooks=hooks), clean).item()
    assert got == pytest.approx(want, abs=1e-5)
    res = run_analysis(
        "knockout", pythia, clean, abc, circuit={"name": "toy", "classes": {"name mover": ["1.0"]}}
    )
    assert len(res.heads) == pythia.n_layers * pythia.n_heads and not res.heads["value"].isna().any()


@pytest.mark.parametrize(("mode", "positions"), [("output", "end"), ("output", "all"), ("pattern", "all")])
def test_cmap_on_pythia_equals_one_forward_per_head(pythia, other_pythia, data, mode, positions):
    clean = data[0]
    fast = cmap(pythia, other_pythia, clean, mode=mode, positions=positions)
    ref = _one_forward_per_head(pythia.bridge, other_pythia.bridge, clean, mode, positions)
    assert ref.abs().max() > 1e-4
    torch.testing.assert_close(fast.delta, ref, atol=1e-5, rtol=1e-4)


def test_cmap_refuses_two_architectures_of_one_shape(pythia, tiny_random, data):
    assert (pythia.n_layers, pythia.n_heads) == (tiny_random.n_layers, tiny_random.n_heads)
    with pytest.raises(ValueError, match="one architecture"):
        cmap(pythia, tiny_random, data[0])


def test_on_gpt2_the_fast_paths_equal_the_hooked_path(tiny_random):
    clean, abc = ioi_batches(tiny_random, 10)
    acts = prepare(tiny_random, clean, abc)
    end = position_mask(clean, "end")
    variants = [[Patch(layer, h, acts.z_abc[layer, :, :, h], end)] for layer in (0, 1) for h in range(4)]
    variants += [[Patch(1, None, acts.mlp_out[0], end, "mlp_out")]]
    fast = run_patched(tiny_random, clean, variants, resid_pre=acts.resid_pre, fast=True)
    hooked = run_patched(tiny_random, clean, variants, resid_pre=acts.resid_pre, fast=False)
    torch.testing.assert_close(fast, hooked, atol=1e-5, rtol=1e-5)
    for receivers in (LOGITS, Receivers((Head(1, 1),), "v_input", "s2")):
        for freeze_mlp in (False, True):
            kwargs = dict(normalize=False, freeze_mlp=freeze_mlp)
            fast = path_patch(tiny_random, clean, abc, receivers, fast=True, **kwargs)
            hooked = path_patch(tiny_random, clean, abc, receivers, fast=False, **kwargs)
            torch.testing.assert_close(fast, hooked, atol=1e-5, rtol=1e-5)
