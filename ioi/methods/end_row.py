"""The END-row engine: patches at END only recompute END's row (GPT-2's block, from its weights).

Attention is causal and END is each prompt's last token, so a patch at END changes no other
position's activations. The engine runs only END's row through the blocks, attending to the clean
keys and values of the earlier positions — one row per prompt instead of a whole sequence, the
reason patching every head at END costs little more than one forward pass.

It re-implements a GPT-2 block from the bridge's weights, so it applies only where
:func:`ioi.methods.readout.fast_path_obstacles` finds nothing: :func:`ioi.methods.patching.run_patched`
checks that before taking it, and the tests check its numbers against the hooked forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ioi.methods.hooks import Patch
from ioi.methods.readout import final_logit_diff
from ioi.models.load import LoadedModel
from ioi.task.data import IOIBatch
from ioi.task.types import PerVariant, ResidStack


@torch.no_grad()
def end_row_logit_diffs(
    model: LoadedModel,
    batch: IOIBatch,
    variants: Sequence[Sequence[Patch]],
    start: int,
    resid_pre: ResidStack,
    kv: dict[int, tuple[Tensor, Tensor]] | None = None,
    weights: dict[str, Tensor] | None = None,
) -> PerVariant:
    """[variants, batch] logit differences when every patch is at END only.

    Attention is causal and END is each prompt's last token, so a patch at END changes no other
    position's activations: only END's row is recomputed, from block `start` (fed
    resid_pre[start] at END), attending to the clean keys and values of the earlier positions
    (computed from resid_pre, cached in `kv` per layer). Same numbers as the hooked forward on a
    model where :func:`ioi.methods.readout.fast_path_obstacles` is empty; this function does not
    check (``run_patched`` does). weights: :func:`attention_weights` of the model, when the caller
    already has them.
    """
    bridge, device = model.bridge, model.device
    n = len(batch)
    rows, end = torch.arange(n, device=device), batch.end.to(device)
    w = weights if weights is not None else attention_weights(bridge)
    scale = w["W_Q"].shape[-1] ** 0.5
    pos = torch.arange(batch.tokens.shape[1], device=device)
    after_end = pos[None, :] > end[:, None]  # [batch, pos]
    todo: dict[tuple[int, str], list[tuple[int, Patch]]] = {}
    for c, variant in enumerate(variants):
        for p in variant:
            todo.setdefault((p.layer, p.site), []).append((c, p))

    x = resid_pre[start].to(device)[rows, end].expand(len(variants), n, -1).clone()  # [variants, batch, d]
    for layer in range(start, model.n_layers):
        block = bridge.blocks[layer]
        if kv is None or layer not in kv:
            h = block.ln1(resid_pre[layer].to(device))  # [batch, pos, d_model]
            k = torch.einsum("bpd,hde->bphe", h, w["W_K"][layer]) + w["b_K"][layer]
            v = torch.einsum("bpd,hde->bphe", h, w["W_V"][layer]) + w["b_V"][layer]
            if kv is not None:
                kv[layer] = (k, v)
        else:
            k, v = kv[layer]
        h = block.ln1(x)
        q = torch.einsum("cbd,hde->cbhe", h, w["W_Q"][layer]) + w["b_Q"][layer]
        k_end = torch.einsum("cbd,hde->cbhe", h, w["W_K"][layer]) + w["b_K"][layer]
        v_end = torch.einsum("cbd,hde->cbhe", h, w["W_V"][layer]) + w["b_V"][layer]
        for site, target, weight in (("q_input", q, "Q"), ("k_input", k_end, "K"), ("v_input", v_end, "V")):
            for c, p in todo.get((layer, site), ()):
                target[c, :, p.head] = block.ln1(_end_value(p, rows, end)) @ w[f"W_{weight}"][layer, p.head]
                target[c, :, p.head] += w[f"b_{weight}"][layer, p.head]
        scores = torch.einsum("cbhe,bphe->cbhp", q, k) / scale
        own = (q * k_end).sum(-1) / scale  # END's score for its own (possibly patched) key
        index = end.view(1, n, 1, 1).expand(*scores.shape[:3], 1)
        scores = scores.scatter(-1, index, own.unsqueeze(-1))
        scores = scores.masked_fill(after_end[None, :, None], float("-inf"))
        pattern = scores.softmax(-1)  # [variants, batch, head, pos]
        for c, p in todo.get((layer, "pattern"), ()):
            pattern[c, :, p.head] = _end_value(p, rows, end)
        v_clean_end = v[rows, end]  # [batch, head, d_head]
        z = torch.einsum("cbhp,bphe->cbhe", pattern, v)
        z = z + pattern.gather(-1, index).squeeze(-1).unsqueeze(-1) * (v_end - v_clean_end)
        for c, p in todo.get((layer, "z"), ()):
            z[c, :, p.head] = _end_value(p, rows, end)
        attn_out = torch.einsum("cbhe,hed->cbd", z, w["W_O"][layer]) + w["b_O"][layer]
        for c, p in todo.get((layer, "result"), ()):
            attn_out[c] += _end_value(p, rows, end) - z[c, :, p.head] @ w["W_O"][layer, p.head]
        x = x + attn_out
        mlp = block.mlp(block.ln2(x))
        for c, p in todo.get((layer, "mlp_out"), ()):
            mlp[c] = _end_value(p, rows, end)
        x = x + mlp
    return final_logit_diff(bridge, x, batch)


def attention_weights(bridge) -> dict[str, Tensor]:
    """The bridge's attention weights stacked over layers (W_Q [layer, head, d_model, d_head], …).

    The bridge rebuilds each stack on every access, so callers running many chunks read them once.
    """
    return {k: getattr(bridge, k) for k in ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O")}


def _end_value(p: Patch, rows: Tensor, end: Tensor) -> Tensor:
    """A patch's value at END, [batch, ...]: given as the selected entries or at every position."""
    value = p.value.to(end.device)
    return value[rows, end] if value.dim() == 3 else value  # full values are [batch, pos, ...]
