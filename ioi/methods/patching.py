"""The patching engine: run a model with some activations overwritten, and read the logit difference.

Activation patching asks how much one component matters by running the clean prompts with that
component's activation replaced by its value from another run (here the ABC run, which carries no
IOI signal) and measuring the change in the logit difference F (METHODS §4). Knockout (mean
ablation), path patching and cross-model patching are the same operation with other replacement
values, so they all go through :func:`run_patched`:

- a :class:`Patch` overwrites one head's (or one MLP's) activation at a hook *site* (hook_z,
  hook_q_input, hook_pattern, hook_mlp_out, …), at every position or where a [batch, pos] mask is set;
- a *variant* is a list of patches applied together; many variants run in one forward pass by
  stacking copies of the batch (one copy per variant), chunked to bound memory;
- given the clean residual stream, each chunk restarts the forward at its first patched layer
  (earlier layers are the clean run), and only END's final residual is read (no full unembedding);
  when every patch is at END, the END-row engine (:mod:`ioi.methods.end_row`) recomputes END's row
  only, on models whose blocks it can re-implement (:func:`ioi.methods.readout.fast_path_obstacles`).

Activations are read by :func:`ioi.methods.hooks.read`; the patch sites are
:data:`ioi.methods.hooks.SITES`.

:func:`prepare` runs the clean and ABC prompts once and keeps what every analysis reuses
(:class:`Activations`); it is memoised per (model, clean, abc) object triple.

Shapes: [layer, batch, pos, head, d_head] for stacked head outputs; heads are written L.H.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from ioi.methods.analyses import AnalysisResult, heads_frame, register_analysis
from ioi.methods.end_row import attention_weights, end_row_logit_diffs
from ioi.methods.hooks import (
    SITES,
    Patch,
    all_heads,
    final_resid_name,
    hook_name,
    position_mask,
    read,
    read_activations,
)
from ioi.methods.readout import end_logit_diff, fast_path_obstacles
from ioi.models.load import LoadedModel
from ioi.task.data import IOIBatch
from ioi.task.metrics import normalized_effect
from ioi.task.types import HeadGrid, MlpStack, PerHead, PerPrompt, PerVariant, ResidStack, ZStack

DEFAULT_MAX_ROWS = 512
"""Sequences per forward pass (variants × prompts) before the engine splits the work."""


@dataclass(frozen=True)
class Activations:
    """The clean and ABC runs of one model on one dataset, computed once by :func:`prepare`.

    z_clean, z_abc: [layer, batch, pos, head, d_head] head outputs (hook_z);
    resid_pre: [layer + 1, batch, pos, d_model] clean residual stream before each block, the last
    entry being the final residual (before ln_final); mlp_out: [layer, batch, pos, d_model] clean;
    ld_clean, ld_abc: [batch] per-prompt logit differences (logit(IO) − logit(S) at END).
    """

    z_clean: ZStack
    z_abc: ZStack
    resid_pre: ResidStack
    mlp_out: MlpStack
    ld_clean: PerPrompt
    ld_abc: PerPrompt

    @property
    def f_clean(self) -> float:
        return self.ld_clean.mean().item()

    @property
    def f_abc(self) -> float:
        return self.ld_abc.mean().item()

    def resid_mid(self, layer: int) -> Tensor:
        """[batch, pos, d_model] clean residual after `layer`'s attention, before its MLP."""
        return self.resid_pre[layer + 1] - self.mlp_out[layer]

    def normalize(self, f_patched: Tensor) -> Tensor:
        """:func:`ioi.task.metrics.normalized_effect` against this clean and ABC run, elementwise."""
        return normalized_effect(f_patched, self.f_clean, self.f_abc)


_MEMO: dict[tuple[int, int, int], tuple[object, object, object, Activations]] = {}


@torch.no_grad()
def prepare(model: LoadedModel, clean: IOIBatch, abc: IOIBatch, *, chunk: int = 128) -> Activations:
    """Run `clean` and `abc` once and keep head outputs, residuals and logit differences.

    Memoised on the identity of (model, clean, abc) (the last two triples are kept), so the
    analyses of one session share the two forward passes.
    """
    if clean.tokens.shape != abc.tokens.shape:
        raise ValueError(
            "the ABC batch must have the clean batch's shape: build it with tokenize(abc, tok, like=clean)"
        )
    key = (id(model), id(clean), id(abc))
    if key in _MEMO:
        return _MEMO[key][3]
    n_layers = model.n_layers
    z_names = [hook_name(layer, "z") for layer in range(n_layers)]
    resid_names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    final_name = final_resid_name(n_layers)
    mlp_names = [hook_name(layer, "mlp_out") for layer in range(n_layers)]

    c = read_activations(model, clean, z_names + resid_names + [final_name] + mlp_names, chunk=chunk)
    a = read_activations(model, abc, z_names + [final_name], chunk=chunk)
    acts = Activations(
        z_clean=torch.stack([c[n] for n in z_names]),
        z_abc=torch.stack([a[n] for n in z_names]),
        resid_pre=torch.stack([c[n] for n in resid_names + [final_name]]),
        mlp_out=torch.stack([c[n] for n in mlp_names]),
        ld_clean=end_logit_diff(model.bridge, c[final_name], clean),
        ld_abc=end_logit_diff(model.bridge, a[final_name], abc),
    )
    if len(_MEMO) >= 2:
        _MEMO.pop(next(iter(_MEMO)))
    _MEMO[key] = (model, clean, abc, acts)  # the strong references keep the ids from being reused
    return acts


def _apply(
    act: Tensor, copies: int, layer: int, site: str, chunk: Sequence[Sequence[Patch]], freeze: Tensor | None
) -> Tensor:
    """Overwrite `act` ([copies·batch, ...]) with the patches of each variant in `chunk`."""
    out = act.clone().unflatten(0, (copies, -1))
    axis = SITES[site][1]
    if axis == 1:  # pattern [c, batch, head, q, k] -> view with the head after the query position
        out_view = out.transpose(2, 3)
    else:
        out_view = out
    if freeze is not None:
        out_view[:] = freeze.to(out.device)
    for c, variant in enumerate(chunk):
        for p in variant:
            if p.layer != layer or p.site != site:
                continue
            target = out_view[c] if p.head is None else out_view[c][:, :, p.head]
            value = p.value.to(out.device, out.dtype)
            if p.where is None:
                target[:] = value
            elif value.dim() == target.dim() - 1:  # only the selected entries were given
                target[p.where.to(out.device)] = value
            else:
                where = p.where.to(out.device).reshape(p.where.shape + (1,) * (value.dim() - 2))
                target[:] = torch.where(where, value, target)
    return out.flatten(0, 1)


@torch.no_grad()
def run_patched(
    model: LoadedModel,
    batch: IOIBatch,
    variants: Sequence[Sequence[Patch]],
    *,
    resid_pre: ResidStack | None = None,
    freeze_z: ZStack | None = None,
    freeze_mlp: MlpStack | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    fast: bool | None = None,
) -> PerVariant:
    """Per-prompt logit differences of `batch` under each variant: [variants, batch].

    Every variant is a list of :class:`Patch` applied together in one forward pass over `batch`.
    resid_pre: [layer + 1, batch, pos, d_model] the residual stream of the unpatched run of `batch`
    (Activations.resid_pre for the clean batch); given, each chunk of variants starts at its first
    patched layer, and when every patch touches END only (where = END's mask) only END's row is
    recomputed (:func:`ioi.methods.end_row.end_row_logit_diffs`) — on a model GPT-2's block
    describes (:func:`ioi.methods.readout.fast_path_obstacles`). fast: None takes the END-row engine
    where it applies; False never; True requires it (ValueError naming what does not fit).
    freeze_z: [layer, batch, pos, head, d_head] head outputs imposed on every head (before the
    patches) in every layer run; freeze_mlp: [layer, batch, pos, d_model] the same for MLP outputs.
    An empty variant gives the unpatched run.
    """
    n_layers = model.n_layers
    first = [min((p.layer for p in v), default=n_layers) for v in variants]
    order = sorted(range(len(variants)), key=lambda i: first[i])
    unfrozen = freeze_z is None and freeze_mlp is None
    end_only = resid_pre is not None and unfrozen and _only_at_end(batch, variants) and fast is not False
    if fast and not end_only:
        raise ValueError("the END-row engine needs resid_pre, no frozen activations and patches at END only")
    if end_only:
        obstacles = fast_path_obstacles(model.bridge)
        if obstacles and fast:
            reasons = ', '.join(obstacles)
            raise ValueError(f"the END-row engine assumes GPT-2's block; this model has {reasons}")
        end_only = not obstacles
    # An END-only variant costs one row per prompt instead of a whole sequence.
    per_chunk = max(1, max_rows * (batch.tokens.shape[1] if end_only else 1) // len(batch))
    out = torch.empty(len(variants), len(batch), device=model.device)
    kv: dict[int, tuple[Tensor, Tensor]] = {}
    weights = attention_weights(model.bridge) if end_only else None
    for i in range(0, len(order), per_chunk):
        idx = order[i : i + per_chunk]
        start = min(min(first[j] for j in idx), n_layers - 1) if resid_pre is not None else 0
        chunk = [variants[j] for j in idx]
        if end_only:
            out[idx] = end_row_logit_diffs(model, batch, chunk, start, resid_pre, kv, weights)
            continue
        resid = _run_chunk(model, batch, chunk, start, resid_pre, freeze_z, freeze_mlp)
        out[idx] = end_logit_diff(model.bridge, resid, batch)
    return out


def _only_at_end(batch: IOIBatch, variants: Sequence[Sequence[Patch]]) -> bool:
    end = position_mask(batch, "end")
    return all(p.where is not None and torch.equal(p.where.cpu(), end) for v in variants for p in v)


def _run_chunk(
    model: LoadedModel,
    batch: IOIBatch,
    chunk: list[Sequence[Patch]],
    start: int,
    resid_pre: ResidStack | None,
    freeze_z: ZStack | None,
    freeze_mlp: MlpStack | None,
) -> Tensor:
    """[copies, batch, pos, d_model] final residuals of one forward over stacked copies of `batch`,
    from block `start` (fed resid_pre[start]) or from the tokens (start 0)."""
    n_layers, copies, final = model.n_layers, len(chunk), final_resid_name(model.n_layers)
    hooks = patch_hooks(chunk, n_layers, start=start, freeze_z=freeze_z, freeze_mlp=freeze_mlp)
    if start > 0:
        inputs = resid_pre[start].to(model.device).repeat(copies, 1, 1)
    else:
        inputs = batch.tokens.to(model.device).repeat(copies, 1)
    got = read(model.bridge, inputs, [final], hooks=hooks, start_at_layer=start if start > 0 else None)
    return got[final].unflatten(0, (copies, len(batch)))


def patch_hooks(
    variants: Sequence[Sequence[Patch]],
    n_layers: int,
    *,
    start: int = 0,
    freeze_z: ZStack | None = None,
    freeze_mlp: MlpStack | None = None,
) -> list[tuple[str, Callable]]:
    """Forward hooks applying each variant's patches to its copy of a batch stacked len(variants)
    times (one variant: a plain batch), for `bridge.run_with_hooks(tokens, fwd_hooks=...)`.

    freeze_z / freeze_mlp ([layer, batch, pos, ...]) overwrite every head output / MLP output of
    the layers from `start` on, before the patches.
    """
    sites = {(p.layer, p.site) for v in variants for p in v}
    frozen = {"z": freeze_z, "mlp_out": freeze_mlp}
    for site, values in frozen.items():
        if values is not None:
            sites |= {(layer, site) for layer in range(start, n_layers)}
    hooks = []
    for layer, site in sorted(sites):
        fixed = frozen[site][layer] if frozen.get(site) is not None else None
        fn = partial(_patch_hook, copies=len(variants), layer=layer, site=site, chunk=variants, freeze=fixed)
        hooks.append((hook_name(layer, site), fn))
    return hooks


def _patch_hook(act: Tensor, hook, **kwargs) -> Tensor:
    return _apply(act, **kwargs)


def head_grid(model: LoadedModel, values: PerHead, heads: Sequence[tuple[int, int]]) -> HeadGrid:
    """[layer, head] grid from one value per head in `heads` (others NaN)."""
    grid = torch.full((model.n_layers, model.n_heads), float("nan"))
    for v, (layer, head) in zip(values.tolist(), heads, strict=True):
        grid[layer, head] = v
    return grid


def patch_head_outputs(
    model: LoadedModel,
    clean: IOIBatch,
    abc: IOIBatch,
    *,
    position: str | None = None,
    heads: Sequence[tuple[int, int]] | None = None,
    normalize: bool = True,
    acts: Activations | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> HeadGrid:
    """Activation patching per head: [layer, head] effect of giving one head its ABC output.

    The clean run with head L.H's hook_z replaced by the ABC run's, at every position (position
    None) or at one named position ("end", "s2", …). Value: normalised effect
    (F_patched − F_clean)/(F_clean − F_abc) (0 unharmed, −1 as bad as ABC), or with normalize=False
    the raw change F_patched − F_clean. Heads not in `heads` (default all) are NaN.
    """
    acts = acts or prepare(model, clean, abc)
    heads = list(heads) if heads is not None else all_heads(model)
    where = position_mask(clean, position)
    variants = [[Patch(layer, head, acts.z_abc[layer, :, :, head], where)] for layer, head in heads]
    f = run_patched(model, clean, variants, resid_pre=acts.resid_pre, max_rows=max_rows).mean(1)
    values = acts.normalize(f) if normalize else f - acts.f_clean
    return head_grid(model, values.cpu(), heads)


@register_analysis("patch")
def patch_analysis(
    model: LoadedModel,
    clean: IOIBatch,
    abc: IOIBatch,
    *,
    other=None,
    position: str | None = None,
    normalize: bool = True,
) -> AnalysisResult:
    """Options: position (None = all positions, or "end", "s2", …), normalize (bool)."""
    acts = prepare(model, clean, abc)
    grid = patch_head_outputs(model, clean, abc, position=position, normalize=normalize, acts=acts)
    summary = {
        "f_clean": acts.f_clean,
        "f_abc": acts.f_abc,
        "position": position or "all",
        "normalized": normalize,
    }
    return AnalysisResult("patch", heads_frame(grid), summary)
