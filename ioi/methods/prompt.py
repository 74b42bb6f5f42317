"""One prompt through one checkpoint, and one head across many prompts (the dashboard's playground
and head pages).

:func:`read_prompt` answers "what does this model predict here, and which heads write it": the
top-k next tokens at END with their probabilities, the logit difference logit(IO) − logit(S), each
head's direct logit attribution (METHODS §4, the same function as the ``dla`` analysis, on a batch
of one) and every head's attention pattern over the prompt. :func:`head_profile` gives every head's
mean DLA and attention from END to IO and to S over a set of prompts, each with a paired bootstrap
interval over prompts (METHODS §8), plus its OV copy score (METHODS §7).

Results are plain numbers and frames (no tensors), so a page can cache them per (checkpoint, prompt).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ioi.methods.analyses import AnalysisResult, heads_frame, register_analysis
from ioi.methods.attention import PATTERNS, model_copy_scores, pattern_at
from ioi.methods.attribution import direct_logit_attribution
from ioi.methods.hooks import read
from ioi.methods.stats import bootstrap_means, interval
from ioi.models.load import LoadedModel
from ioi.task.data import IOIBatch, check_context, tokenize
from ioi.task.prompt import prompt_sample

ROLES = ("io", "s1", "s2", "end")
"""The positions a prompt's views mark: IO, the two occurrences of S, and END (the last token)."""


@dataclass(frozen=True)
class PromptReading:
    """What one checkpoint makes of one prompt.

    tokens: the prompt's tokens as text (BOS first); positions: role (ROLES) -> token index;
    top: rows rank, token, prob, logit of the k most likely next tokens at END; logit_diff:
    logit(IO) − logit(S) at END; io / s: rank (1 = top) and prob of IO and S; heads: per-head
    DLA (columns layer, head, value, as the ``dla`` analysis); patterns: [layer, head, query, key]
    attention probabilities.
    """

    tokens: tuple[str, ...]
    positions: dict[str, int]
    top: pd.DataFrame
    logit_diff: float
    io: dict[str, float]
    s: dict[str, float]
    heads: pd.DataFrame
    patterns: np.ndarray


def prompt_batch(model: LoadedModel, prompt: str, io: str, s: str) -> IOIBatch:
    """The one-prompt batch of a typed prompt: DatasetError (naming the words) for a name the
    vocabulary does not hold, a role the prompt lacks, or a prompt longer than the model's context."""
    batch = tokenize([prompt_sample(prompt, io, s)], model.tokenizer)
    return check_context(batch, model.bridge.cfg.n_ctx)


def _pattern_names(n_layers: int) -> list[str]:
    return [f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)]


@torch.no_grad()
def read_prompt(model: LoadedModel, batch: IOIBatch, k: int = 10) -> PromptReading:
    """Predictions, logit difference, per-head DLA and attention patterns of the first prompt of
    `batch` (see :class:`PromptReading`)."""
    one = batch.subset([0])
    bridge, device = model.bridge, model.device
    end = int(one.end[0])
    tokens = one.tokens[:, : end + 1].to(device)
    names = _pattern_names(bridge.cfg.n_layers)
    got = read(bridge, tokens, [*names, "ln_final.hook_in"])  # one pass: patterns and final residual
    patterns = torch.stack([got[n][0] for n in names])
    resid_end = got["ln_final.hook_in"][0, end]
    logits = (bridge.ln_final(resid_end[None]) @ bridge.W_U + bridge.b_U)[0].double()
    probs = logits.softmax(-1)
    top = probs.topk(min(k, probs.numel()))
    decode = model.tokenizer.decode
    rank = lambda t: int((logits > logits[t]).sum()) + 1  # noqa: E731
    io_t, s_t = int(one.io_tok[0]), int(one.s_tok[0])
    dla = direct_logit_attribution(bridge, one)
    return PromptReading(
        tokens=tuple(decode([t]) for t in tokens[0].tolist()),
        positions={r: int(one.positions(r)[0]) for r in ROLES},
        top=pd.DataFrame(
            {
                "rank": range(1, len(top.indices) + 1),
                "token": [decode([t]) for t in top.indices.tolist()],
                "prob": top.values.tolist(),
                "logit": logits[top.indices].tolist(),
            }
        ),
        logit_diff=float(dla.logit_diff[0]),
        io={"rank": rank(io_t), "prob": float(probs[io_t])},
        s={"rank": rank(s_t), "prob": float(probs[s_t])},
        heads=heads_frame(dla.heads[0]),
        patterns=patterns.double().cpu().numpy(),
    )


def end_row(reading: PromptReading, layer: int, head: int) -> pd.DataFrame:
    """One head's attention from END over the prompt: rows pos, token, attention, role ('' or
    the roles at that position, e.g. 'IO', 'S1')."""
    end = reading.positions["end"]
    marks = {p: [] for p in range(end + 1)}
    for role, pos in reading.positions.items():
        if 0 <= pos <= end:
            marks[pos].append(role.upper())
    return pd.DataFrame(
        {
            "pos": range(end + 1),
            "token": list(reading.tokens[: end + 1]),
            "attention": reading.patterns[layer, head, end, : end + 1].tolist(),
            "role": [" ".join(marks[p]) for p in range(end + 1)],
        }
    )


def pattern_frame(reading: PromptReading, layer: int, head: int) -> pd.DataFrame:
    """One head's attention pattern as tidy rows query, key (positions), query_token, key_token,
    attention, role_query, role_key (the roles at each position, '' for none); the causal upper
    triangle (key > query, always 0) is left out."""
    rows = end_row(reading, layer, head)
    roles, toks = rows["role"].tolist(), rows["token"].tolist()
    n = len(toks)
    q, key = np.tril_indices(n)
    return pd.DataFrame(
        {
            "query": q,
            "key": key,
            "query_token": [f"{i}:{toks[i]}" for i in q],
            "key_token": [f"{j}:{toks[j]}" for j in key],
            "attention": reading.patterns[layer, head][q, key],
            "role_query": [roles[i] for i in q],
            "role_key": [roles[j] for j in key],
        }
    )


@torch.no_grad()
def head_profile(model: LoadedModel, batch: IOIBatch, *, seed: int = 0) -> pd.DataFrame:
    """Every head over the prompts of `batch`: columns layer, head, value (mean DLA, as the ``dla``
    analysis), dla_lo, dla_hi, end_to_io, end_to_io_lo, end_to_io_hi, end_to_s (+ _lo, _hi; S1 and
    S2 together, as PATTERNS), copy_score. Intervals: 95% paired bootstrap over the prompts."""
    bridge = model.bridge
    dla = direct_logit_attribution(bridge, batch).heads  # [batch, layer, head]
    got = read(bridge, batch.tokens.to(model.device), _pattern_names(bridge.cfg.n_layers))
    attn = {}
    for column in ("end_to_io", "end_to_s"):
        q, keys = PATTERNS[column]
        attn[column] = torch.stack(
            [
                sum(pattern_at(got[n], batch.positions(q), batch.positions(key)) for key in keys)
                for n in _pattern_names(bridge.cfg.n_layers)
            ],
            1,
        )  # [batch, layer, head]
    columns: dict[str, torch.Tensor] = {}
    for name, per_prompt in (("dla", dla), *attn.items()):
        lo, hi = interval(bootstrap_means(per_prompt.movedim(0, -1), seed=seed))
        if name != "dla":
            columns[name] = per_prompt.double().mean(0)
        columns[f"{name}_lo"], columns[f"{name}_hi"] = lo, hi
    copies = model_copy_scores(bridge, model.tokenizer)
    return heads_frame(dla.mean(0), **columns, copy_score=copies["copy_score"])


@register_analysis("head-profile")
def head_profile_analysis(
    model: LoadedModel, clean: IOIBatch, abc: IOIBatch, *, other=None, seed: int = 0
) -> AnalysisResult:
    return AnalysisResult(
        "head-profile", head_profile(model, clean, seed=seed), {"seed": seed, "n": len(clean)}
    )


def samples_batch(model: LoadedModel, samples) -> IOIBatch:
    """A batch of dataset samples for :func:`head_profile` (tokenized by the model's tokenizer)."""
    return tokenize(samples, model.tokenizer)
