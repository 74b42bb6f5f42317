"""IOI metrics: logit difference, accuracy and IO probability at END (METHODS §4).

The logit difference of one prompt is logit(IO) − logit(S) at its last prompt token (END); the
task metric F is its mean over prompts. From the final residual stream it is the final LayerNorm's
output dotted with one direction of the unembedding (:func:`logit_diff_direction`); the methods
apply the model's LayerNorm (ioi.methods.readout) and :func:`unembed_logit_diff`. The normalised
patching effect puts a patched run on the scale where 0 is the clean run and −1 the ABC run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ioi.task.data import IOIBatch
from ioi.task.types import (
    Direction,
    EndLogits,
    EndResid,
    Logits,
    PerPrompt,
    PerPromptRows,
    Unembed,
    UnembedBias,
)


def end_logits(logits: Logits | EndLogits, batch: IOIBatch) -> EndLogits:
    """[batch, pos, vocab] -> [batch, vocab] at each prompt's END ([batch, vocab] passes through)."""
    if logits.dim() == 2:
        return logits
    return logits[torch.arange(len(batch), device=logits.device), batch.end.to(logits.device)]


def logit_diff_per_prompt(logits: Logits | EndLogits, batch: IOIBatch) -> PerPrompt:
    """[batch] logit(IO) − logit(S) at END; `logits` is [batch, pos, vocab] or [batch, vocab]."""
    last = end_logits(logits, batch)
    rows = torch.arange(len(batch), device=last.device)
    return last[rows, batch.io_tok.to(last.device)] - last[rows, batch.s_tok.to(last.device)]


def logit_diff(logits: Logits | EndLogits, batch: IOIBatch) -> torch.Tensor:
    """Scalar mean logit difference F."""
    return logit_diff_per_prompt(logits, batch).mean()


def logit_diff_direction(
    w_u: Unembed, b_u: UnembedBias, batch: IOIBatch
) -> tuple[Direction, PerPrompt]:
    """The logit difference as a direction in the unembedding: W_U[:, IO] − W_U[:, S] per prompt
    [batch, d_model], and b_U[IO] − b_U[S] [batch]."""
    io, s = batch.io_tok.to(w_u.device), batch.s_tok.to(w_u.device)
    return (w_u[:, io] - w_u[:, s]).T, b_u[io] - b_u[s]


def unembed_logit_diff(normed: EndResid, direction: Direction, bias: PerPrompt) -> PerPromptRows:
    """[*rows, batch] logit differences from the final LayerNorm's output at END
    [*rows, batch, d_model]: the IO − S row of the unembedding, without the rest of the vocabulary."""
    return (normed * direction).sum(-1) + bias


def normalized_effect(patched: torch.Tensor, clean: float, abc: float) -> torch.Tensor:
    """(F_patched − F_clean) / (F_clean − F_abc): 0 unharmed, −1 as bad as ABC (elementwise)."""
    return (patched - clean) / (clean - abc)


@dataclass(frozen=True)
class TaskMetrics:
    """Mean logit difference logit(IO) − logit(S) at END (and its standard error over prompts;
    NaN from one prompt), accuracy (the share of prompts with logit(IO) > logit(S)), the mean
    probability of the IO token and of each prompt's label (the IO, or a toxic dataset's target),
    and the number of prompts."""

    logit_diff: float
    logit_diff_se: float
    accuracy: float
    io_prob: float
    label_prob: float
    n: int

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


def task_metrics(logits: Logits | EndLogits, batch: IOIBatch) -> TaskMetrics:
    """All task metrics from [batch, pos, vocab] or END-only [batch, vocab] logits."""
    last = end_logits(logits, batch).float()
    diff = logit_diff_per_prompt(last, batch)
    probs = last.softmax(-1)
    rows = torch.arange(len(batch), device=last.device)
    n = len(batch)
    return TaskMetrics(
        logit_diff=diff.mean().item(),
        logit_diff_se=(diff.std().item() / n**0.5) if n > 1 else math.nan,  # none from one prompt
        accuracy=(diff > 0).float().mean().item(),
        io_prob=probs[rows, batch.io_tok.to(last.device)].mean().item(),
        label_prob=probs[rows, batch.label_tok.to(last.device)].mean().item(),
        n=n,
    )


@torch.no_grad()
def run_logits(model: torch.nn.Module, batch: IOIBatch, chunk: int = 256) -> Logits:
    """[batch, pos, vocab] logits of a bridge or HF model, in chunks of `chunk` prompts."""
    device = next(model.parameters()).device
    outs = []
    for i in range(0, len(batch), chunk):
        out = model(batch.tokens[i : i + chunk].to(device))
        outs.append(out.logits if hasattr(out, "logits") else out)
    return torch.cat(outs)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batch: IOIBatch, chunk: int = 256) -> TaskMetrics:
    """Task metrics of `model` on `batch`, keeping only END logits to bound memory."""
    device = next(model.parameters()).device
    lasts = []
    for i in range(0, len(batch), chunk):
        sub = batch.subset(range(i, min(i + chunk, len(batch))))
        out = model(sub.tokens.to(device))
        lasts.append(end_logits(out.logits if hasattr(out, "logits") else out, sub))
    return task_metrics(torch.cat(lasts), batch)
