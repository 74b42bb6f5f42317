"""The pretraining of the bundled models (ioi-tiny, ioi-small): one loop, its loss, schedule and
optimizer, run on one torch thread (`ioi.models.threads.one_thread`) so that a seed gives the
same weights on any machine."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

from ioi.task.data import NAMES

# Next-token loss on name tokens counts this many times: IOI then emerges within ~1,250 steps
# instead of staying on the IO = S plateau for thousands (measured on ioi-tiny).
NAME_LOSS_WEIGHT = 3.0


def weighted_lm_loss(
    logits: torch.Tensor, tokens: torch.Tensor, pad: int, name_ids: torch.Tensor
) -> torch.Tensor:
    """Next-token cross-entropy, padding masked, name targets weighted by NAME_LOSS_WEIGHT.

    logits: [batch, pos, vocab]; tokens: [batch, pos]; name_ids: [n_names].
    """
    target = tokens[:, 1:]
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), target.flatten(), reduction="none")
    weight = (target != pad).float() * torch.where(torch.isin(target, name_ids), NAME_LOSS_WEIGHT, 1.0)
    return (ce.view_as(target) * weight).sum() / weight.sum()


def lr_at(step: int, steps: int, base: float, warmup: int = 100) -> float:
    """Learning rate of `step` of `steps`: linear warm-up, then cosine decay to 10% of `base`."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def write_model_dir(
    out_dir: Path, model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, manifest: dict
) -> dict:
    """Write a bundled model's HF directory: weights, tokenizer and `manifest` (returned)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


OPTIMIZER = "AdamW lr {lr:g} betas (0.9, 0.95) wd 0.01, 100 warm-up, cosine to 10%, clip 1"
"""The pretraining optimizer of the bundled models, as their manifests state it."""


def make_optimizer(model: GPT2LMHeadModel, lr: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)


def pretrain_steps(
    model: GPT2LMHeadModel,
    opt: torch.optim.AdamW,
    tokenizer: PreTrainedTokenizerFast,
    next_batch: Callable[[], torch.Tensor],
    *,
    lr: float,
    steps: int,
    start_step: int = 0,
    loss_ema: float = float("nan"),
    progress: Callable[[int, int, float], None] | None = None,
    before_step: Callable[[int], None] | None = None,
    after_step: Callable[[int, float], None] | None = None,
) -> float:
    """The pretraining loop of the bundled models (ioi-tiny, ioi-small): steps `start_step` to
    `steps`, each on the token batch `next_batch()` draws, warm-up and cosine schedule (OPTIMIZER),
    name-weighted LM loss, gradients clipped at 1. `before_step(step)` runs before a step draws its
    batch (a curriculum may change the corpus there); `progress(step, steps, loss)` and `after_step(step,
    loss_ema)` run after it (step counted from 1). Returns the loss's moving average."""
    vocab = tokenizer.get_vocab()
    pad = tokenizer.pad_token_id
    name_ids = torch.tensor(sorted(vocab[" " + n] for n in NAMES))
    model.train()
    for step in range(start_step, steps):
        if before_step is not None:
            before_step(step)
        tokens = next_batch()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr)
        loss = weighted_lm_loss(model(tokens).logits, tokens, pad, name_ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_ema = loss.item() if step == 0 else 0.98 * loss_ema + 0.02 * loss.item()
        if progress is not None:
            progress(step + 1, steps, loss.item())
        if after_step is not None:
            after_step(step + 1, loss_ema)
    return loss_ema
