import math

import pytest
import torch

from ioi.task.data import make_dataset, tokenize
from ioi.task.metrics import evaluate, logit_diff, logit_diff_per_prompt, normalized_effect, task_metrics


@pytest.fixture()
def two_prompts(gpt2_tok):
    return tokenize(make_dataset(2, seed=0), gpt2_tok)


def test_metrics_on_a_hand_computed_case(two_prompts):
    b = two_prompts
    logits = torch.zeros(2, b.tokens.shape[1], 50257)
    # prompt 0: IO 3.0 vs S 1.0 at END (diff +2); prompt 1: IO 0.0 vs S 1.0 (diff -1)
    logits[0, b.end[0], b.io_tok[0]] = 3.0
    logits[0, b.end[0], b.s_tok[0]] = 1.0
    logits[1, b.end[1], b.s_tok[1]] = 1.0
    logits[0, 0, b.s_tok[0]] = 100.0  # a non-END position must not matter
    assert logit_diff_per_prompt(logits, b).tolist() == [2.0, -1.0]
    assert logit_diff(logits, b).item() == 0.5
    m = task_metrics(logits, b)
    assert m.accuracy == 0.5 and m.n == 2
    z0 = (50257 - 2) + math.e**3 + math.e
    z1 = (50257 - 1) + math.e
    assert m.io_prob == pytest.approx((math.e**3 / z0 + 1 / z1) / 2, rel=1e-4)
    assert m.logit_diff_se == pytest.approx(torch.tensor([2.0, -1.0]).std().item() / 2**0.5)


def test_shapes_are_checked_in_the_tests(two_prompts):
    """pyproject's --jaxtyping-packages runs the methods under beartype: a wrong shape fails."""
    from jaxtyping import TypeCheckError

    from ioi.task.metrics import unembed_logit_diff

    direction, bias = torch.ones(2, 8), torch.zeros(2)
    assert unembed_logit_diff(torch.ones(3, 2, 8), direction, bias).shape == (3, 2)
    with pytest.raises(TypeCheckError):
        unembed_logit_diff(torch.ones(3, 2, 8), direction, torch.zeros(5))  # 5 prompts, not 2


def test_normalized_effect_scale():
    assert normalized_effect(torch.tensor(3.0), clean=3.0, abc=1.0).item() == 0.0
    assert normalized_effect(torch.tensor(1.0), clean=3.0, abc=1.0).item() == -1.0


def test_evaluate_in_chunks_equals_one_pass(tiny_random, gpt2_tok):
    batch = tokenize(make_dataset(40, seed=1), gpt2_tok)
    a = evaluate(tiny_random.hf_model, batch, chunk=7)
    b = evaluate(tiny_random.hf_model, batch, chunk=100)
    assert a.logit_diff == pytest.approx(b.logit_diff, abs=1e-5)
    assert a.accuracy == b.accuracy


def test_bridge_and_hf_model_agree(tiny_random, gpt2_tok):
    batch = tokenize(make_dataset(10, seed=1), gpt2_tok)
    a = evaluate(tiny_random.hf_model, batch)
    b = evaluate(tiny_random.bridge, batch)
    assert a.logit_diff == pytest.approx(b.logit_diff, abs=1e-4)
