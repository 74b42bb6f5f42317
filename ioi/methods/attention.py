"""Attention patterns and OV copy scores of every head (METHODS §7).

Name movers attend from END to IO and copy it; S-inhibition heads attend to S; induction heads
attend from S2 to the token after S1 (S1+1); duplicate-token heads from S2 to S1; previous-token
heads from S1+1 to S1. `attention_scores` averages those probabilities over prompts.

The copy score (IOI paper, appendix) asks what a head writes when it attends to a name: take each
name's residual stream after the first block (the embedding as the first MLP reshapes it), apply the
head's OV circuit, the final LayerNorm and the unembedding, and count the names that land in their
own top-k logits. The negative copy score does the same with −OV (negative name movers).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ioi.methods.analyses import AnalysisResult, heads_frame, register_analysis
from ioi.methods.hooks import read
from ioi.methods.readout import layer_norm_pre, require_weightless_layer_norm
from ioi.models.load import LoadedModel
from ioi.task.data import NAMES, IOIBatch, single_token_id
from ioi.task.types import HeadGrid, HeadIn, HeadOut, NameResid, NameTokens, Pattern, Unembed

# column -> (query position, key positions summed over)
PATTERNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "end_to_io": ("end", ("io",)),
    "end_to_s": ("end", ("s1", "s2")),
    "end_to_s2": ("end", ("s2",)),
    "s2_to_s1": ("s2", ("s1",)),
    "s2_to_s1p1": ("s2", ("s1+1",)),
    "s1p1_to_s1": ("s1+1", ("s1",)),
}
"""END→S (end_to_s) sums attention on both occurrences of S (S1 and S2) everywhere in the project;
end_to_s2 is the second occurrence alone."""


def pattern_at(pattern: Pattern, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """[batch, head] attention from position query[b] to key[b] in pattern [batch, head, q, k]."""
    rows = torch.arange(pattern.shape[0], device=pattern.device)
    return pattern[rows, :, query.to(pattern.device), key.to(pattern.device)]


@torch.no_grad()
def attention_scores(bridge: torch.nn.Module, batch: IOIBatch) -> dict[str, HeadGrid]:
    """Mean attention probabilities, column of PATTERNS -> [layer, head]."""
    n_layers = bridge.cfg.n_layers
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)]
    out: dict[str, list[torch.Tensor]] = {c: [] for c in PATTERNS}
    got = read(bridge, batch.tokens.to(bridge.W_U.device), names)
    for name in names:
        for column, (q, keys) in PATTERNS.items():
            probs = sum(pattern_at(got[name], batch.positions(q), batch.positions(k)) for k in keys)
            out[column].append(probs.mean(0))
    return {c: torch.stack(v) for c, v in out.items()}


def copy_scores(
    resid: NameResid,
    w_v: HeadIn,
    w_o: HeadOut,
    w_u: Unembed,
    tokens: NameTokens,
    *,
    k: int = 5,
    eps: float = 1e-5,
    sign: float = 1.0,
) -> HeadGrid:
    """[layer, head] share of names whose token is in the top-k logits of sign·OV(name).

    resid [names, d_model] the names' residual after block 0; w_v [layer, head, d_model, d_head];
    w_o [layer, head, d_head, d_model]; w_u [d_model, vocab]; tokens [names] their token ids. The
    head's LayerNorm and the final one are weightless (:func:`ioi.methods.readout.layer_norm_pre`).
    """
    return signed_copy_scores((resid, w_v, w_o, w_u, tokens), k, eps, (sign,))[0]


def signed_copy_scores(
    weights: tuple[NameResid, HeadIn, HeadOut, Unembed, NameTokens],
    k: int,
    eps: float,
    signs: Sequence[float],
) -> list[HeadGrid]:
    """:func:`copy_scores` of `weights` (its first five arguments) for each of `signs`, from one
    unembedding per layer: a weightless LayerNorm is odd and a matmul linear, so the logits of −OV
    are exactly (bit for bit) minus those of OV, and the negative copy score costs a negation
    instead of a second unembedding."""
    resid, w_v, w_o, w_u, tokens = weights
    n_layers, n_heads = w_v.shape[:2]
    x = layer_norm_pre(resid, eps)
    scores = [torch.empty(n_layers, n_heads) for _ in signs]
    for layer in range(n_layers):  # all heads of a layer in one unembedding matmul
        ov = torch.einsum("nd,hdk,hkm->hnm", x, w_v[layer], w_o[layer])  # [head, names, d_model]
        plain = None
        for grid, sign in zip(scores, signs, strict=True):
            if abs(sign) == 1.0:
                plain = layer_norm_pre(ov, eps) @ w_u if plain is None else plain
                logits = plain if sign == 1.0 else -plain  # [head, names, vocab]
            else:
                logits = layer_norm_pre(sign * ov, eps) @ w_u
            top = logits.topk(k, dim=-1).indices
            grid[layer] = (top == tokens[None, :, None].to(top.device)).any(-1).float().mean(-1).cpu()
    return scores


@torch.no_grad()
def name_residuals(
    bridge: torch.nn.Module, tokenizer, names: Sequence[str] = NAMES
) -> tuple[NameResid, NameTokens]:
    """([n, d_model] residual after block 0 of each single-token " Name" run alone, [n] token ids).

    A one-token input lets block 0's attention see only the name itself, so the result is the
    name's embedding as the first MLP extends it, free of any prompt.
    """
    ids = [single_token_id(tokenizer, n) for n in names]
    tokens = torch.tensor([i for i in ids if i is not None], dtype=torch.long)
    if len(tokens) == 0:
        raise ValueError("none of the names is a single token for this tokenizer; pass other names")
    device = bridge.W_U.device
    got = read(bridge, tokens[:, None].to(device), ["blocks.0.hook_resid_post"])
    return got["blocks.0.hook_resid_post"][:, 0], tokens


@torch.no_grad()
def model_copy_scores(
    bridge: torch.nn.Module, tokenizer, *, k: int = 5, names: Sequence[str] = NAMES
) -> dict[str, torch.Tensor]:
    """{"copy_score", "negative_copy_score"}: [layer, head] each, on the model's own weights
    (ValueError naming what does not fit on a model whose LayerNorms are not weightless)."""
    require_weightless_layer_norm(bridge, "the copy score")
    if not 1 <= k <= bridge.cfg.d_vocab:
        raise ValueError(
            f"the copy score's top-k must be from 1 to the vocabulary's {bridge.cfg.d_vocab}, got {k}"
        )
    resid, tokens = name_residuals(bridge, tokenizer, names)
    pos, neg = signed_copy_scores(
        (resid, bridge.W_V, bridge.W_O, bridge.W_U, tokens), k, bridge.cfg.eps, (1.0, -1.0)
    )
    return {"copy_score": pos, "negative_copy_score": neg}


@register_analysis("attention")
def attention_analysis(
    model: LoadedModel, clean: IOIBatch, abc: IOIBatch, *, other=None, k: int = 5, copy: bool = True
) -> AnalysisResult:
    """Options: k (top-k of the copy score); copy=False skips the copy scores (they unembed every
    name through every head's OV circuit, the slow part on GPT-2-sized models)."""
    scores = attention_scores(model.bridge, clean)
    copies = model_copy_scores(model.bridge, model.tokenizer, k=k) if copy else {}
    heads = heads_frame(scores["end_to_io"], **scores, **copies)
    return AnalysisResult("attention", heads, {"copy_top_k": k} if copy else {})
