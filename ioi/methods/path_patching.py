"""Path patching (IOI paper, METHODS §6): the effect of a sender head through one path only.

For a sender head, the clean run is repeated with the sender's output taken from the ABC run and
every other head's output frozen to its clean value (MLPs recompute, or are frozen too with
``freeze_mlp``). The receivers' inputs are read from that run; a clean run with only the receivers'
inputs replaced then gives the effect on the logit difference. Receivers are either the final
residual at END (the logits: the sender's direct path) or a set of heads' query, key or value input
at one position (e.g. the name movers' queries at END).

Because every head is frozen, attention mixes nothing between positions: the patched residual at a
position depends only on that position's sender output and the (position-wise) MLPs and LayerNorms.
So the receivers' inputs are computed exactly without any forward pass, by pushing the sender's
output difference (z_abc − z_clean)·W_O through the MLPs of the layers in between at the receiver
position only (with frozen MLPs it simply adds up: the effect on the logits is a linear map of it
followed by ln_final). Only the second step (receiver heads) needs forward passes, which start at
the first receiver layer and stack many senders in one pass (:func:`ioi.methods.patching.run_patched`).
A sender at or above a receiver's layer has no path to it: its effect is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ioi.methods.analyses import AnalysisResult, heads_frame, register_analysis
from ioi.methods.hooks import Patch, all_heads, hook_name, position_mask, read
from ioi.methods.patching import DEFAULT_MAX_ROWS, Activations, head_grid, patch_hooks, prepare, run_patched
from ioi.methods.readout import fast_path_obstacles, final_logit_diff
from ioi.models.load import LoadedModel
from ioi.task.circuit import Head, parse_heads
from ioi.task.data import IOIBatch
from ioi.task.types import HeadGrid, PerHead, PosMask, SenderDelta

RECEIVER_SITES = ("q_input", "k_input", "v_input")


@dataclass(frozen=True)
class Receivers:
    """Where path patching measures a sender's effect.

    heads empty: the final residual (logits) at END. Otherwise those heads' `site` input
    ("q_input", "k_input" or "v_input") at `position` ("end", "s2", "s1+1", …).
    """

    heads: tuple[Head, ...] = ()
    site: str = "q_input"
    position: str = "end"

    def __post_init__(self) -> None:
        if self.site not in RECEIVER_SITES:
            raise ValueError(f"receiver site must be one of {', '.join(RECEIVER_SITES)}, got {self.site!r}")

    @property
    def is_logits(self) -> bool:
        return not self.heads

    def describe(self) -> str:
        if self.is_logits:
            return "logits at END"
        heads = " ".join(str(h) for h in self.heads)
        return f"{self.site.removesuffix('_input')} input of {heads} at {self.position}"


LOGITS = Receivers()


def sender_deltas(
    model: LoadedModel, acts: Activations, senders: Sequence[tuple[int, int]], rows: PosMask
) -> SenderDelta:
    """[senders, n_rows, d_model] change of each sender's output, (z_abc − z_clean)·W_O, at `rows`
    ([batch, pos] bool)."""
    w_o = model.bridge.W_O  # [layer, head, d_head, d_model]; the bridge rebuilds it on each access
    out = []
    for layer, head in senders:
        dz = (acts.z_abc[layer, :, :, head] - acts.z_clean[layer, :, :, head])[rows]
        out.append(dz @ w_o[layer, head])
    return torch.stack(out)


@torch.no_grad()
def propagate(
    model: LoadedModel,
    acts: Activations,
    senders: Sequence[tuple[int, int]],
    delta: SenderDelta,
    rows: PosMask,
    to_layers: Sequence[int],
    *,
    freeze_mlp: bool = False,
) -> dict[int, SenderDelta]:
    """Patched residuals {layer: [senders, n_rows, d_model]} before each block in `to_layers`
    (n_layers = the final residual), with every head frozen to clean except the senders, whose
    output changed by `delta` [senders, n_rows, d_model] at `rows` ([batch, pos] bool).
    """
    sender_layer = torch.tensor([layer for layer, _ in senders], device=delta.device)
    diff = torch.zeros_like(delta)  # patched − clean residual, per sender
    out = {}
    for layer in range(max(to_layers) + 1):
        if layer in to_layers:
            out[layer] = acts.resid_pre[layer][rows] + diff
        if layer == model.n_layers:
            break
        diff = diff + delta * (sender_layer == layer)[:, None, None]
        active = sender_layer <= layer
        if freeze_mlp or not active.any():
            continue
        block = model.bridge.blocks[layer]
        mid = acts.resid_mid(layer)[rows] + diff[active]
        diff[active] = diff[active] + block.mlp(block.ln2(mid)) - acts.mlp_out[layer][rows]
    return out


@torch.no_grad()
def path_patch(
    model: LoadedModel,
    clean: IOIBatch,
    abc: IOIBatch,
    receivers: Receivers = LOGITS,
    *,
    senders: Sequence[tuple[int, int]] | None = None,
    sender_position: str | None = None,
    freeze_mlp: bool = False,
    normalize: bool = True,
    acts: Activations | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    fast: bool | None = None,
) -> HeadGrid:
    """[layer, head] path-patching effect of each sender head on the logit difference via `receivers`.

    senders: heads to try (default every head; others NaN); sender_position: patch the sender only
    at that position (default every position); freeze_mlp: MLPs keep their clean outputs too.
    Value: normalised effect (F_patched − F_clean)/(F_clean − F_abc), or with normalize=False the
    raw change F_patched − F_clean. fast: None propagates without forward passes where GPT-2's block
    describes the model (:func:`ioi.methods.readout.fast_path_obstacles`) and runs hooked forward
    passes elsewhere; False always runs them; True requires the fast path (ValueError otherwise).
    """
    acts = acts or prepare(model, clean, abc)
    senders = list(senders) if senders is not None else all_heads(model)
    obstacles = fast_path_obstacles(model.bridge) if fast is not False else ["not asked for"]
    if fast and obstacles:
        raise ValueError(f"fast path patching assumes GPT-2's block; this model has {', '.join(obstacles)}")
    at_position = position_mask(clean, receivers.position if not receivers.is_logits else "end")
    if obstacles:
        args = (sender_position, at_position, receivers, freeze_mlp, max_rows)
        f = _hooked(model, clean, acts, senders, *args)
    else:
        delta = sender_deltas(model, acts, senders, at_position)
        if sender_position is not None:  # a sender patched elsewhere changes nothing at this position
            delta = delta * position_mask(clean, sender_position)[at_position][None, :, None]
        layers = [model.n_layers] if receivers.is_logits else sorted({h.layer for h in receivers.heads})
        patched = propagate(model, acts, senders, delta, at_position, layers, freeze_mlp=freeze_mlp)
        if receivers.is_logits:
            f = final_logit_diff(model.bridge, patched[model.n_layers], clean).mean(1)
        else:
            f = _through_heads(model, clean, acts, senders, patched, at_position, receivers, max_rows)
    values = acts.normalize(f) if normalize else f - acts.f_clean
    return head_grid(model, values.cpu(), senders)


def _hooked(
    model: LoadedModel,
    clean: IOIBatch,
    acts: Activations,
    senders: Sequence[tuple[int, int]],
    sender_position: str | None,
    rows: PosMask,
    receivers: Receivers,
    freeze_mlp: bool,
    max_rows: int,
) -> PerHead:
    """[senders] mean logit differences by the method as written: forward passes with every head
    frozen to clean but the sender (stacked, `max_rows` sequences a pass), for any architecture."""
    where = position_mask(clean, sender_position)
    variants = [[Patch(layer, head, acts.z_abc[layer, :, :, head], where)] for layer, head in senders]
    frozen = {"freeze_z": acts.z_clean, "freeze_mlp": acts.mlp_out if freeze_mlp else None}
    if receivers.is_logits:
        ld = run_patched(model, clean, variants, resid_pre=acts.resid_pre, max_rows=max_rows, **frozen)
        return ld.mean(1)
    layers = sorted({h.layer for h in receivers.heads})
    names = [hook_name(layer, receivers.site) for layer in layers]
    per_chunk = max(1, max_rows // len(clean))
    inputs: dict[int, list[Tensor]] = {layer: [] for layer in layers}
    for i in range(0, len(variants), per_chunk):
        chunk = variants[i : i + per_chunk]
        hooks = patch_hooks(chunk, model.n_layers, **frozen)
        got = read(model.bridge, clean.tokens.to(model.device).repeat(len(chunk), 1), names, hooks=hooks)
        for layer, name in zip(layers, names, strict=True):  # [copies·batch, pos, head, d_model]
            inputs[layer].append(got[name].unflatten(0, (len(chunk), len(clean)))[:, rows.to(model.device)])
    patched = {layer: torch.cat(v) for layer, v in inputs.items()}  # [senders, n_rows, head, d_model]
    return _through_heads(model, clean, acts, senders, patched, rows, receivers, max_rows)


def _through_heads(
    model: LoadedModel,
    clean: IOIBatch,
    acts: Activations,
    senders: Sequence[tuple[int, int]],
    patched: dict[int, Tensor],
    rows: PosMask,
    receivers: Receivers,
    max_rows: int,
) -> PerHead:
    """[senders] mean logit difference of the clean run with only the receivers' inputs patched.

    patched[layer]: the receivers' inputs in the patched run at `rows`, [senders, n_rows, d_model]
    (one residual for every head) or [senders, n_rows, head, d_model] (read per head)."""
    variants: list[list[Patch]] = []
    reached = []
    for i, (layer, _) in enumerate(senders):
        heads = [h for h in receivers.heads if h.layer > layer]
        reached.append(bool(heads))
        values = [patched[h.layer][i] for h in heads]
        values = [v if v.dim() == 2 else v[:, h.head] for v, h in zip(values, heads, strict=True)]
        variants.append([Patch(h.layer, h.head, v, rows, receivers.site) for h, v in zip(heads, values)])
    f = torch.full((len(senders),), acts.f_clean, device=model.device)
    idx = [i for i, r in enumerate(reached) if r]
    if idx:
        ld = run_patched(
            model, clean, [variants[i] for i in idx], resid_pre=acts.resid_pre, max_rows=max_rows
        )
        f[idx] = ld.mean(1)
    return f


def parse_receivers(
    receiver: str, heads: Sequence[str] | str | None = None, position: str | None = None
) -> Receivers:
    """Receivers from words: "logits", or "q"/"k"/"v" (or "q_input", …) of `heads` ("9.9 9.6")."""
    if receiver == "logits":
        if heads or position not in (None, "end"):  # never dropped silently
            raise ValueError("receiver 'logits' (the logits at END) takes no receiver heads or position; "
                             "give receiver=q, k or v to end the paths at those heads' inputs")  # fmt: skip
        return LOGITS
    site = receiver if receiver.endswith("_input") else f"{receiver}_input"
    if not heads:
        raise ValueError(f"receiver {receiver!r} needs receiver heads, e.g. heads='9.9 9.6 10.0'")
    return Receivers(parse_heads(heads), site, position or "end")


@register_analysis("path-patch")
def path_patch_analysis(
    model: LoadedModel,
    clean: IOIBatch,
    abc: IOIBatch,
    *,
    other=None,
    receiver: str = "logits",
    heads: Sequence[str] | str | None = None,
    position: str | None = None,
    frozen_mlp: bool = False,
    normalize: bool = True,
) -> AnalysisResult:
    """Options: receiver ("logits" | "q" | "k" | "v"), heads (receiver heads, "L.H ..."),
    position (receiver position, default "end"), frozen_mlp (bool), normalize (bool). A head in
    or after the last receiver's layer cannot send to it: its row is NaN, not a measured 0."""
    receivers = parse_receivers(receiver, heads, position)
    parse_heads(receivers.heads, model.n_layers, model.n_heads)  # refuses heads the model lacks
    acts = prepare(model, clean, abc)
    grid = path_patch(model, clean, abc, receivers, freeze_mlp=frozen_mlp, normalize=normalize, acts=acts)
    if receivers.heads:
        grid[max(h.layer for h in receivers.heads):] = float("nan")
    summary = {
        "receivers": receivers.describe(),
        "no_value": (f"heads of layer {max(h.layer for h in receivers.heads)} and later cannot send to the "
                     "receivers" if receivers.heads else ""),
        "frozen_mlp": frozen_mlp,
        "normalized": normalize,
        "f_clean": acts.f_clean,
        "f_abc": acts.f_abc,
    }
    return AnalysisResult("path-patch", heads_frame(grid), summary)
