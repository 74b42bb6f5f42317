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
  (earlier layers are the clean run), and only END's final residual is read (no full unembedding).

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
from ioi.models.load import LoadedModel
from ioi.task.data import IOIBatch

# site -> (hook name under blocks.{layer}., axis of the head in the hook's tensor or None for MLPs)
SITES: dict[str, tuple[str, int | None]] = {
    "z": ("attn.hook_z", 2),  # [batch, pos, head, d_head]
    "result": ("attn.hook_result", 2),  # [batch, pos, head, d_model]
    "q_input": ("hook_q_input", 2),  # [batch, pos, head, d_model]
    "k_input": ("hook_k_input", 2),
    "v_input": ("hook_v_input", 2),
    "pattern": ("attn.hook_pattern", 1),  # [batch, head, query pos, key pos]
    "mlp_out": ("hook_mlp_out", None),  # [batch, pos, d_model]
}
DEFAULT_MAX_ROWS = 512
"""Sequences per forward pass (variants × prompts) before the engine splits the work."""


def hook_name(layer: int, site: str) -> str:
    """The hook name of `site` (a key of SITES) in block `layer`."""
    if site not in SITES:
        raise ValueError(f"unknown patch site {site!r}; known: {', '.join(SITES)}")
    return f"blocks.{layer}.{SITES[site][0]}"


@dataclass(frozen=True)
class Patch:
    """Overwrite one activation: `site` of head `head` in `layer` (head None: an MLP site).

    value: [batch, pos, ...] the replacement (e.g. [batch, pos, d_head] for a head's hook_z; for
    "pattern" [batch, query pos, key pos]), or with `where` only the selected entries
    [where.sum(), ...]. where: [batch, pos] bool (query positions for "pattern"); None patches
    every position.
    """

    layer: int
    head: int | None
    value: Tensor
    where: Tensor | None = None
    site: str = "z"


@dataclass(frozen=True)
class Activations:
    """The clean and ABC runs of one model on one dataset, computed once by :func:`prepare`.

    z_clean, z_abc: [layer, batch, pos, head, d_head] head outputs (hook_z);
    resid_pre: [layer + 1, batch, pos, d_model] clean residual stream before each block, the last
    entry being the final residual (before ln_final); mlp_out: [layer, batch, pos, d_model] clean;
    ld_clean, ld_abc: [batch] per-prompt logit differences (logit(IO) − logit(S) at END).
    """

    z_clean: Tensor
    z_abc: Tensor
    resid_pre: Tensor
    mlp_out: Tensor
    ld_clean: Tensor
    ld_abc: Tensor

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
        """(F_patched − F_clean) / (F_clean − F_abc) (METHODS §4), elementwise."""
        return (f_patched - self.f_clean) / (self.f_clean - self.f_abc)


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
    final_name = f"blocks.{n_layers - 1}.hook_resid_post"
    mlp_names = [hook_name(layer, "mlp_out") for layer in range(n_layers)]

    c = read_activations(model, clean, z_names + resid_names + [final_name] + mlp_names, chunk=chunk)
    a = read_activations(model, abc, z_names + [final_name], chunk=chunk)
    acts = Activations(
        z_clean=torch.stack([c[n] for n in z_names]),
        z_abc=torch.stack([a[n] for n in z_names]),
        resid_pre=torch.stack([c[n] for n in resid_names + [final_name]]),
        mlp_out=torch.stack([c[n] for n in mlp_names]),
        ld_clean=end_logit_diff(model, c[final_name], clean),
        ld_abc=end_logit_diff(model, a[final_name], abc),
    )
    if len(_MEMO) >= 2:
        _MEMO.pop(next(iter(_MEMO)))
    _MEMO[key] = (model, clean, abc, acts)  # the strong references keep the ids from being reused
    return acts


@torch.no_grad()
def read_activations(
    model: LoadedModel,
    batch: IOIBatch,
    names: Sequence[str],
    *,
    chunk: int = 128,
    hooks: Sequence[tuple[str, Callable]] = (),
) -> dict[str, Tensor]:
    """{name: activation over the whole batch} for hook `names` inside the blocks (up to the last
    block's hook_resid_post), run in chunks of `chunk` prompts; `hooks` (e.g. :func:`patch_hooks`
    of a one-variant list) run too. The forward stops after the last block: no unembedding."""
    wanted = set(names)
    parts: dict[str, list[Tensor]] = {n: [] for n in names}
    last = f"blocks.{model.n_layers - 1}.hook_resid_post"

    def stop(act: Tensor, hook) -> None:
        if last in wanted:
            parts[last].append(act.clone())
        raise _Stop

    # hook.name is the canonical name (METHODS §10): register under each name, read back by closure.
    saves = [(n, partial(_keep_as, name=n, parts=parts)) for n in names if n != last]
    for i in range(0, len(batch), chunk):
        tokens = batch.tokens[i : i + chunk].to(model.device)
        try:
            with model.bridge.hooks(fwd_hooks=[*hooks, *saves, (last, stop)]):
                model.bridge(tokens)
        except _Stop:
            pass
    return {n: torch.cat(v) for n, v in parts.items()}


def _keep_as(act: Tensor, hook, name: str, parts: dict[str, list[Tensor]]) -> None:
    parts[name].append(act.clone())


def end_rows(x: Tensor, batch: IOIBatch) -> Tensor:
    """[..., batch, pos, d] -> [..., batch, d] at each prompt's END."""
    end = batch.end.to(x.device)
    return x[..., torch.arange(len(batch), device=x.device), end, :]


def logit_diff_direction(model: LoadedModel, batch: IOIBatch) -> tuple[Tensor, Tensor]:
    """W_U[:, IO] − W_U[:, S] per prompt [batch, d_model], and b_U[IO] − b_U[S] [batch]."""
    bridge = model.bridge
    io, s = batch.io_tok.to(model.device), batch.s_tok.to(model.device)
    w = bridge.W_U[:, io] - bridge.W_U[:, s]
    b = bridge.b_U[io] - bridge.b_U[s]
    return w.T, b


def final_logit_diff(model: LoadedModel, resid_end: Tensor, batch: IOIBatch) -> Tensor:
    """Logit differences from final residuals at END: [..., batch, d_model] -> [..., batch].

    Applies ln_final (recomputed on these residuals, so exact) and the IO − S unembedding.
    """
    w, b = logit_diff_direction(model, batch)
    return (model.bridge.ln_final(resid_end) * w).sum(-1) + b


def end_logit_diff(model: LoadedModel, resid_final: Tensor, batch: IOIBatch) -> Tensor:
    """[..., batch, pos, d_model] final residual -> [..., batch] logit differences at END."""
    return final_logit_diff(model, end_rows(resid_final, batch), batch)


def position_mask(batch: IOIBatch, position: str | None) -> Tensor | None:
    """[batch, pos] bool, True at each prompt's `position` ("end", "io", "s1", "s1+1", "s2");
    None for None (every position)."""
    if position is None:
        return None
    where = torch.zeros(batch.tokens.shape, dtype=torch.bool)
    where[torch.arange(len(batch)), batch.positions(position)] = True
    return where


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


class _Stop(Exception):
    """Raised by the last block's hook: the engine needs the final residual, not the logits."""


@torch.no_grad()
def run_patched(
    model: LoadedModel,
    batch: IOIBatch,
    variants: Sequence[Sequence[Patch]],
    *,
    resid_pre: Tensor | None = None,
    freeze_z: Tensor | None = None,
    freeze_mlp: Tensor | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> Tensor:
    """Per-prompt logit differences of `batch` under each variant: [variants, batch].

    Every variant is a list of :class:`Patch` applied together in one forward pass over `batch`.
    resid_pre: [layer + 1, batch, pos, d_model] the residual stream of the unpatched run of `batch`
    (Activations.resid_pre for the clean batch); given, each chunk of variants starts at its first
    patched layer, and when every patch touches END only (where = END's mask) only END's row is
    recomputed (:func:`end_row_logit_diffs`). freeze_z: [layer, batch, pos, head, d_head] head
    outputs imposed on every head (before the patches) in every layer run; freeze_mlp:
    [layer, batch, pos, d_model] the same for MLP outputs. An empty variant gives the unpatched run.
    """
    n_layers = model.n_layers
    first = [min((p.layer for p in v), default=n_layers) for v in variants]
    order = sorted(range(len(variants)), key=lambda i: first[i])
    unfrozen = freeze_z is None and freeze_mlp is None
    end_only = resid_pre is not None and unfrozen and _only_at_end(batch, variants)
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
        out[idx] = end_logit_diff(model, resid, batch)
    return out


def _only_at_end(batch: IOIBatch, variants: Sequence[Sequence[Patch]]) -> bool:
    end = position_mask(batch, "end")
    return all(p.where is not None and torch.equal(p.where.cpu(), end) for v in variants for p in v)


@torch.no_grad()
def end_row_logit_diffs(
    model: LoadedModel,
    batch: IOIBatch,
    variants: Sequence[Sequence[Patch]],
    start: int,
    resid_pre: Tensor,
    kv: dict[int, tuple[Tensor, Tensor]] | None = None,
    weights: dict[str, Tensor] | None = None,
) -> Tensor:
    """[variants, batch] logit differences when every patch is at END only.

    Attention is causal and END is each prompt's last token, so a patch at END changes no other
    position's activations: only END's row is recomputed, from block `start` (fed
    resid_pre[start] at END), attending to the clean keys and values of the earlier positions
    (computed from resid_pre, cached in `kv` per layer). Same numbers as the hooked forward.
    weights: :func:`attention_weights` of the model, when the caller already has them.
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
    return final_logit_diff(model, x, batch)


def attention_weights(bridge) -> dict[str, Tensor]:
    """The bridge's attention weights stacked over layers (W_Q [layer, head, d_model, d_head], …).

    The bridge rebuilds each stack on every access, so callers running many chunks read them once.
    """
    return {k: getattr(bridge, k) for k in ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O")}


def _end_value(p: Patch, rows: Tensor, end: Tensor) -> Tensor:
    """A patch's value at END, [batch, ...]: given as the selected entries or at every position."""
    value = p.value.to(end.device)
    return value[rows, end] if value.dim() == 3 else value  # full values are [batch, pos, ...]


def _run_chunk(
    model: LoadedModel,
    batch: IOIBatch,
    chunk: list[Sequence[Patch]],
    start: int,
    resid_pre: Tensor | None,
    freeze_z: Tensor | None,
    freeze_mlp: Tensor | None,
) -> Tensor:
    """[copies, batch, pos, d_model] final residuals of one forward over stacked copies of `batch`,
    from block `start` (fed resid_pre[start]) or from the tokens (start 0)."""
    bridge, n_layers, copies = model.bridge, model.n_layers, len(chunk)
    hooks = patch_hooks(chunk, n_layers, start=start, freeze_z=freeze_z, freeze_mlp=freeze_mlp)
    got: dict[str, Tensor] = {}
    hooks.append((f"blocks.{n_layers - 1}.hook_resid_post", partial(_grab, got=got)))
    if start > 0:
        inputs = resid_pre[start].to(model.device).repeat(copies, 1, 1)
    else:
        inputs = batch.tokens.to(model.device).repeat(copies, 1)
    try:
        with bridge.hooks(fwd_hooks=hooks):
            bridge(inputs, start_at_layer=start if start > 0 else None)
    except _Stop:
        pass
    return got["resid"].unflatten(0, (copies, len(batch)))


def patch_hooks(
    variants: Sequence[Sequence[Patch]],
    n_layers: int,
    *,
    start: int = 0,
    freeze_z: Tensor | None = None,
    freeze_mlp: Tensor | None = None,
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
        fn = partial(_hook, copies=len(variants), layer=layer, site=site, chunk=variants, freeze=fixed)
        hooks.append((hook_name(layer, site), fn))
    return hooks


def _hook(act: Tensor, hook, **kwargs) -> Tensor:
    return _apply(act, **kwargs)


def _grab(act: Tensor, hook, got: dict[str, Tensor]) -> None:
    got["resid"] = act
    raise _Stop


def head_grid(model: LoadedModel, values: Tensor, heads: Sequence[tuple[int, int]]) -> Tensor:
    """[layer, head] grid from one value per head in `heads` (others NaN)."""
    grid = torch.full((model.n_layers, model.n_heads), float("nan"))
    for v, (layer, head) in zip(values.tolist(), heads, strict=True):
        grid[layer, head] = v
    return grid


def all_heads(model: LoadedModel) -> list[tuple[int, int]]:
    """Every (layer, head) of `model`, layer-major."""
    return [(layer, head) for layer in range(model.n_layers) for head in range(model.n_heads)]


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
) -> Tensor:
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
