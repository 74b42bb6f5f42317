"""From the final residual stream to the logit difference, and what the fast paths assume.

The logit difference at END is read from the final residual without the full unembedding: the
model's own final LayerNorm (exact for any normalisation), then the IO − S direction of W_U
(:func:`ioi.task.metrics.unembed_logit_diff`).

Some methods go faster by assuming GPT-2's architecture: the END-row engine
(:mod:`ioi.methods.end_row`) and path patching's forward-free propagation re-implement a block from
the bridge's weights, and direct logit attribution and copy scores treat every LayerNorm as
*weightless* (centre, divide by the root mean square — what compatibility mode leaves after folding
the weights into the next matrices). :func:`fast_path_obstacles` and :func:`layer_norm_obstacles`
say, in words, why a model does not fit; an empty list means the assumption holds. A model that
does not fit takes the generic hooked path, or gets an error that names the reason.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ioi.task.data import IOIBatch
from ioi.task.metrics import logit_diff_direction, unembed_logit_diff
from ioi.task.types import EndResid, PerPromptRows, Resid


def end_rows(x: Resid, batch: IOIBatch) -> EndResid:
    """[..., batch, pos, d] -> [..., batch, d] at each prompt's END."""
    end = batch.end.to(x.device)
    return x[..., torch.arange(len(batch), device=x.device), end, :]


def final_logit_diff(bridge: torch.nn.Module, resid_end: EndResid, batch: IOIBatch) -> PerPromptRows:
    """Logit differences from final residuals at END: [*rows, batch, d_model] -> [*rows, batch].

    Applies the bridge's ln_final (recomputed on these residuals, so exact) and the IO − S
    unembedding.
    """
    direction, bias = logit_diff_direction(bridge.W_U, bridge.b_U, batch)
    return unembed_logit_diff(bridge.ln_final(resid_end), direction, bias)


def end_logit_diff(bridge: torch.nn.Module, resid_final: Resid, batch: IOIBatch) -> PerPromptRows:
    """[*rows, batch, pos, d_model] final residual -> [*rows, batch] logit differences at END."""
    return final_logit_diff(bridge, end_rows(resid_final, batch), batch)


def layer_norm_pre(x: Tensor, eps: float) -> Tensor:
    """A LayerNorm without weights over the last axis: (x − mean) / sqrt(var + eps). Compatibility
    mode folds the weights into the next matrices, so on a model that fits
    (:func:`layer_norm_obstacles`) this is every LayerNorm of the model."""
    x = x - x.mean(-1, keepdim=True)
    return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def layer_norm_obstacles(bridge: torch.nn.Module) -> list[str]:
    """Why the model's LayerNorms are not :func:`layer_norm_pre` (empty: they are).

    Checked on the config and on a random probe through ln_final and every block's ln1 and ln2, so
    weights that compatibility mode did not fold are caught as well as RMSNorm."""
    cfg = bridge.cfg
    if getattr(cfg, "uses_rms_norm", False) or str(cfg.normalization_type).startswith("RMS"):
        return ["RMSNorm (no mean subtraction)"]
    gen = torch.Generator().manual_seed(0)
    probe = torch.randn(4, cfg.d_model, generator=gen).to(bridge.W_U.device, bridge.W_U.dtype)
    norms = [("ln_final", bridge.ln_final)]
    norms += [(f"blocks.{i}.{n}", getattr(b, n)) for i, b in enumerate(bridge.blocks) for n in ("ln1", "ln2")]
    want = layer_norm_pre(probe, cfg.eps)
    bad = [name for name, ln in norms if not torch.allclose(ln(probe), want, atol=1e-4, rtol=1e-4)]
    if bad:
        return [f"LayerNorm weights not folded away ({', '.join(bad[:3])}{', …' if len(bad) > 3 else ''})"]
    return []


def fast_path_obstacles(bridge: torch.nn.Module) -> list[str]:
    """Why GPT-2's block structure does not describe the model (empty: it does), so the END-row
    engine and path patching's propagation must not re-implement it.

    Those fast paths assume learned absolute position embeddings (no rotary or ALiBi), one key and
    value per query head, no query/key normalisation, scores scaled by sqrt(d_head) without soft
    caps or local windows, attention then MLP in sequence, and GPT-2's LayerNorm."""
    cfg = bridge.cfg
    reasons = []
    if cfg.positional_embedding_type != "standard":
        reasons.append(f"{cfg.positional_embedding_type} position embeddings")
    n_kv = getattr(cfg, "n_key_value_heads", None)
    if n_kv not in (None, cfg.n_heads):
        reasons.append(f"grouped-query attention ({n_kv} key/value heads for {cfg.n_heads} query heads)")
    if getattr(cfg, "parallel_attn_mlp", False):
        reasons.append("parallel attention and MLP")
    if getattr(cfg, "use_qk_norm", False):
        reasons.append("query/key normalisation")
    scale = getattr(cfg, "attn_scale", -1.0)
    if not getattr(cfg, "use_attn_scale", True) or scale not in (-1.0, math.sqrt(cfg.d_head)):
        reasons.append(f"attention scores scaled by {scale if getattr(cfg, 'use_attn_scale', True) else 1}")
    if (getattr(cfg, "attn_scores_soft_cap", -1.0) or -1.0) > 0:
        reasons.append("soft-capped attention scores")
    if getattr(cfg, "use_local_attn", False) or getattr(cfg, "window_size", None):
        reasons.append("local (windowed) attention")
    if getattr(cfg, "attn_only", False):
        reasons.append("attention-only blocks")
    return reasons + layer_norm_obstacles(bridge)


def require_weightless_layer_norm(bridge: torch.nn.Module, method: str) -> None:
    """ValueError naming what does not fit when `method` needs weightless LayerNorms."""
    reasons = layer_norm_obstacles(bridge)
    if reasons:
        raise ValueError(f"{method} assumes GPT-2's LayerNorm; this model has {', '.join(reasons)}")
