"""CMAP: zero for a model with itself, reproduces B when everything is patched, and the batched
engine equals one forward pass per head."""

import copy

import pytest
import torch

from ioi.methods.analyses import run_analysis
from ioi.methods.cmap import cmap, summarize
from ioi.methods.patching import Patch, hook_name, position_mask, read_activations, run_patched
from ioi.methods.stats import bootstrap_means
from ioi.models.load import wrap
from ioi.task.circuit import Circuit, Head
from ioi.task.data import abc_counterfactual, make_dataset, tokenize
from ioi.task.metrics import logit_diff_per_prompt


@pytest.fixture(scope="module")
def model_a(tiny_random):
    return tiny_random


@pytest.fixture(scope="module")
def model_b(model_a):
    """A with perturbed attention (q, k, v) and MLP weights; embeddings, W_O and unembedding shared,
    so patching every head's z and every MLP output from B into A must give B's logits."""
    hf = copy.deepcopy(model_a.hf_model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in hf.transformer.h:
            for p in (block.attn.c_attn.weight, block.mlp.c_fc.weight, block.mlp.c_proj.weight):
                p.add_(0.5 * p.std() * torch.randn(p.shape, generator=gen))
    b = copy.copy(model_a)
    b.bridge, b.hf_model = wrap(hf, model_a.tokenizer, "cpu"), hf
    return b


@pytest.fixture(scope="module")
def batches(model_a):
    samples = make_dataset(10, seed=2, split="eval")
    clean = tokenize(samples, model_a.tokenizer)
    return clean, tokenize(abc_counterfactual(samples, seed=2), model_a.tokenizer, like=clean)


@pytest.mark.parametrize("mode", ["output", "pattern"])
def test_cmap_with_itself_is_zero(model_a, batches, mode):
    res = cmap(model_a, model_a, batches[0], mode=mode)
    assert res.delta.abs().max() < 1e-5
    assert res.delta.shape == (model_a.n_layers, model_a.n_heads, len(batches[0]))


def test_patching_everything_reproduces_b(model_a, model_b, batches):
    clean = batches[0]
    a, b = model_a.bridge, model_b.bridge
    f_a = logit_diff_per_prompt(a(clean.tokens), clean)
    f_b = logit_diff_per_prompt(b(clean.tokens), clean)
    assert (f_a - f_b).abs().max() > 1e-3  # B really differs from A
    sites = [(layer, site) for layer in range(a.cfg.n_layers) for site in ("z", "mlp_out")]
    src = read_activations(model_b, clean, [hook_name(layer, site) for layer, site in sites])
    layers, heads = range(a.cfg.n_layers), range(a.cfg.n_heads)
    everything = [Patch(layer, None, src[hook_name(layer, "mlp_out")], site="mlp_out") for layer in layers]
    everything += [Patch(layer, h, src[hook_name(layer, "z")][:, :, h]) for layer in layers for h in heads]
    patched = run_patched(model_a, clean, [everything])
    torch.testing.assert_close(patched[0], f_b, atol=1e-4, rtol=1e-4)


def _one_forward_per_head(receiver, source, clean, mode, positions):
    """Slow reference: B's full cache, then one patched forward of A per head."""
    hook = {"output": "attn.hook_z", "pattern": "attn.hook_pattern"}[mode]
    _, cache = source.run_with_cache(clean.tokens)
    base = logit_diff_per_prompt(receiver(clean.tokens), clean)
    rows = torch.arange(len(clean))
    out = torch.zeros(receiver.cfg.n_layers, receiver.cfg.n_heads, len(clean))
    for layer in range(receiver.cfg.n_layers):
        name = f"blocks.{layer}.{hook}"
        for head in range(receiver.cfg.n_heads):

            def patch(x, hook, name=name, head=head):
                x, src = x.clone(), cache[name]
                if mode == "pattern":
                    x[:, head] = src[:, head]
                elif positions == "all":
                    x[:, :, head] = src[:, :, head]
                else:
                    x[rows, clean.end, head] = src[rows, clean.end, head]
                return x

            logits = receiver.run_with_hooks(clean.tokens, fwd_hooks=[(name, patch)])
            out[layer, head] = logit_diff_per_prompt(logits, clean) - base
    return out


@pytest.mark.parametrize(("mode", "positions"), [("output", "end"), ("output", "all"), ("pattern", "all")])
def test_batched_equals_one_forward_per_head(model_a, model_b, batches, mode, positions):
    clean = batches[0]
    # max_rows 3 copies: chunks of 3, 3 and 2 heads, exercising chunking and a short last chunk
    fast = cmap(model_a, model_b, clean, mode=mode, positions=positions, max_rows=3 * len(clean))
    ref = _one_forward_per_head(model_a.bridge, model_b.bridge, clean, mode, positions)
    assert ref.abs().max() > 1e-4
    torch.testing.assert_close(fast.delta, ref, atol=1e-4, rtol=1e-4)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    s = summarize(values, torch.ones(50) * 2.0, n_boot=300, seed=4)
    again = summarize(values, torch.ones(50) * 2.0, n_boot=300, seed=4)
    assert not s.share_undefined
    torch.testing.assert_close(s.ci_low, again.ci_low)
    assert (s.ci_low <= s.value).all() and (s.value <= s.ci_high).all()
    torch.testing.assert_close(s.share, s.value / 2.0)
    constant = summarize(torch.full((1, 20), 0.7), torch.ones(20), n_boot=50)
    torch.testing.assert_close(constant.ci_low, constant.ci_high)
    assert bootstrap_means(values, n_boot=7).shape == (7, 3)


def test_classes_are_patched_jointly_and_both_directions_are_kept(model_a, model_b, batches):
    clean, abc = batches
    circuit = Circuit("toy", {"name mover": (Head(1, 0), Head(1, 3)), "induction": (Head(0, 2),)})
    # the joint patch of a class is one run with all its heads from B, not the sum of single patches
    src = read_activations(model_b, clean, [hook_name(layer, "z") for layer in range(2)])
    end = position_mask(clean, "end")
    joint = [Patch(1, h, src[hook_name(1, "z")][:, :, h], end) for h in (0, 3)]
    f_a = run_patched(model_a, clean, [[]])[0]
    want = run_patched(model_a, clean, [joint])[0] - f_a
    res = cmap(model_a, model_b, clean, groups=[circuit.classes["name mover"]])
    torch.testing.assert_close(res.joint[0], want, atol=1e-5, rtol=1e-5)

    out = run_analysis("cmap", model_b, clean, abc, other=model_a, circuit=circuit, n_boot=100)
    assert out.summary["direction"] == "b<-a"  # the base (other) receives the fine-tuned heads first
    classes = out.tables["classes"].set_index("class")
    assert classes.loc["name mover", "value"] == pytest.approx(want.mean().item(), abs=1e-5)
    assert {"circuit (all classes)", "outside the circuit", "all heads"} <= set(classes.index)
    single = cmap(model_a, model_b, clean).delta.mean(-1)
    summed = (single[1, 0] + single[1, 3]).item()
    assert classes.loc["name mover", "sum_of_single"] == pytest.approx(summed, abs=1e-5)
    heads = out.heads
    assert heads["value"].values == pytest.approx(single.flatten().double().numpy(), abs=1e-5)
    assert out.summary["reverse_gap"] == pytest.approx(-out.summary["gap"])
    assert {"reverse", "reverse_classes", "prompts", "prompt_f"} <= set(out.tables)
    prompts = out.tables["prompts"]
    assert set(prompts["direction"]) == {"b<-a", "a<-b"} and len(out.tables["prompt_f"]) == 2 * len(clean)
    mean = prompts[(prompts.direction == "b<-a") & (prompts.unit == "name mover")]["delta"].mean()
    assert mean == pytest.approx(classes.loc["name mover", "value"], abs=1e-6)
    with pytest.raises(ValueError, match="--other"):
        run_analysis("cmap", model_a, clean, abc)


def test_share_of_a_gap_near_zero_is_undefined(model_a, batches):
    out = run_analysis("cmap", model_a, *batches, other=model_a, n_boot=50)
    assert out.summary["gap"] == pytest.approx(0.0, abs=1e-5)
    assert "barely differ" in out.summary["share_undefined"]
    assert out.heads["share_of_gap"].isna().all() and out.heads["value"].abs().max() < 1e-5


def test_prepared_runs_give_what_reading_gives(model_a, model_b, batches):
    """The CMAP matrix hands each pair the two models' prepare() runs instead of reading again."""
    from ioi.methods.patching import prepare

    clean, abc = batches
    groups = [[Head(0, 1), Head(1, 2)], [Head(1, 0)]]
    read = cmap(model_a, model_b, clean, groups=groups)
    reads = (prepare(model_a, clean, abc), prepare(model_b, clean, abc))
    given = cmap(model_a, model_b, clean, groups=groups, reads=reads)
    assert read.joint.abs().max() > 1e-4
    for x, y in (
        (read.joint, given.joint),
        (read.f_receiver, given.f_receiver),
        (read.f_source, given.f_source),
    ):
        assert torch.allclose(x, y, atol=1e-6), (x - y).abs().max()
