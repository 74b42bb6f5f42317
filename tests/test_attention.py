"""Attention scores are probabilities read at the right positions; copy scores count names copied."""

import pytest
import torch

from ioi.methods.analyses import run_analysis
from ioi.methods.attention import PATTERNS, attention_scores, copy_scores, model_copy_scores
from ioi.task.data import abc_counterfactual, make_dataset, tokenize


@pytest.fixture(scope="module")
def tiny(tiny_random):
    return tiny_random


@pytest.fixture(scope="module")
def clean(tiny):
    return tokenize(make_dataset(10, seed=1, split="eval"), tiny.tokenizer)


def test_attention_scores_match_cached_patterns(tiny, clean):
    scores = attention_scores(tiny.bridge, clean)
    _, cache = tiny.bridge.run_with_cache(clean.tokens)
    for layer in range(tiny.n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]  # [batch, head, q, k]
        torch.testing.assert_close(pattern.sum(-1), torch.ones_like(pattern.sum(-1)))
        for column, (q, keys) in PATTERNS.items():
            ref = torch.stack([
                sum(pattern[b, :, clean.positions(q)[b], clean.positions(k)[b]] for k in keys)
                for b in range(len(clean))
            ]).mean(0)  # fmt: skip
            torch.testing.assert_close(scores[column][layer], ref)
    both = scores["end_to_io"] + scores["end_to_s"]
    assert (scores["end_to_io"] >= 0).all() and (both <= 1 + 1e-6).all()


def test_copy_score_hand_built():
    """d_model 8, vocab 12: W_U maps basis e_i to token i, names are tokens 0..3."""
    d, vocab = 8, 12
    w_u = torch.zeros(d, vocab)
    w_u[torch.arange(d), torch.arange(d)] = 1.0
    names = torch.arange(4)
    resid = torch.eye(d)[:4] * 3.0
    identity = torch.eye(d)  # OV = W_V @ W_O with d_head = d_model
    swap = torch.eye(d)[[1, 0, 3, 2, 4, 5, 6, 7]]  # sends name i to name i xor 1
    w_v = torch.stack([identity, -identity, swap])[None]  # [layer 1, head 3, d, d]
    w_o = torch.stack([identity, identity, identity])[None]
    pos = copy_scores(resid, w_v, w_o, w_u, names, k=1)
    neg = copy_scores(resid, w_v, w_o, w_u, names, k=1, sign=-1.0)
    assert pos.tolist() == [[1.0, 0.0, 0.0]]
    assert neg.tolist() == [[0.0, 1.0, 0.0]]


def test_model_copy_scores_are_shares(tiny):
    scores = model_copy_scores(tiny.bridge, tiny.tokenizer, k=5)
    for s in scores.values():
        assert s.shape == (tiny.n_layers, tiny.n_heads)
        assert ((s >= 0) & (s <= 1)).all()
    # with k = the whole vocabulary every name is in its own top-k
    full = model_copy_scores(tiny.bridge, tiny.tokenizer, k=tiny.bridge.cfg.d_vocab, names=["John", "Mary"])
    assert (full["copy_score"] == 1).all()


def test_attention_analysis_columns(tiny, clean):
    abc = tokenize(abc_counterfactual(clean.samples, seed=1), tiny.tokenizer, like=clean)
    res = run_analysis("attention", tiny, clean, abc)
    assert set(PATTERNS) | {"value", "copy_score", "negative_copy_score"} <= set(res.heads.columns)
    assert (res.heads["value"] == res.heads["end_to_io"]).all()
