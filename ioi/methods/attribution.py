"""Direct logit attribution and attribution patching (METHODS §4, §7).

Direct logit attribution (DLA) splits the logit difference F = logit(IO) − logit(S) at END into the
contributions written straight into the final residual stream: every component's output at END,
divided by the clean run's final LayerNorm scale, dotted with W_U[:, IO] − W_U[:, S]. Because the
final LayerNorm is linear once its scale is frozen, heads + attention biases + MLPs + embeddings +
the LayerNorm centring term + the unembedding bias add up exactly to F.

Attribution patching (EAP-style) replaces one forward pass per patched head by a first-order Taylor
step: the effect of patching clean ← ABC on head h is ≈ (z_abc − z_clean) · ∂F/∂z at the clean run,
for every head at once from one clean forward/backward and one ABC forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from ioi.methods.analyses import AnalysisResult, heads_frame, register_analysis
from ioi.methods.hooks import final_resid_name, read
from ioi.methods.readout import final_logit_diff, require_weightless_layer_norm
from ioi.models.load import LoadedModel
from ioi.task.data import IOIBatch
from ioi.task.metrics import logit_diff_direction
from ioi.task.types import EndResid, HeadGrid, HeadZ, PerPrompt, PromptHeads, PromptLayers, Resid


def final_resid_at_end(bridge: torch.nn.Module, batch: IOIBatch) -> EndResid:
    """[batch, d_model] residual entering the final LayerNorm at END."""
    device, final = bridge.W_U.device, final_resid_name(bridge.cfg.n_layers)
    return read(bridge, batch.tokens.to(device), [final], at=batch.end.to(device))[final]


@dataclass(frozen=True)
class DirectLogitAttribution:
    """Per-prompt direct contributions to the logit difference at END.

    heads [batch, layer, head]; attn_bias, mlp [batch, layer]; embed, pos_embed, centering (the
    final LayerNorm's mean subtraction), unembed_bias, logit_diff [batch]. All parts sum to
    logit_diff exactly (see `total`).
    """

    heads: PromptHeads
    attn_bias: PromptLayers
    mlp: PromptLayers
    embed: PerPrompt
    pos_embed: PerPrompt
    centering: PerPrompt
    unembed_bias: PerPrompt
    logit_diff: PerPrompt

    def total(self) -> PerPrompt:
        """[batch] sum of every part (equals logit_diff up to float rounding)."""
        return (
            self.heads.sum((1, 2))
            + self.attn_bias.sum(1)
            + self.mlp.sum(1)
            + self.embed
            + self.pos_embed
            + self.centering
            + self.unembed_bias
        )

    def shares(self) -> dict[str, float]:
        """Mean direct effect of all heads and all MLPs, and each one's share of |heads| + |MLPs|
        (signed sums of means, so a layer that cancels another lowers its class's share)."""
        heads, mlps = self.heads.mean(0).sum().item(), self.mlp.mean(0).sum().item()
        norm = abs(heads) + abs(mlps) or 1.0
        return {
            "heads_total": heads,
            "mlps_total": mlps,
            "head_share": abs(heads) / norm,
            "mlp_share": abs(mlps) / norm,
        }


@torch.no_grad()
def direct_logit_attribution(bridge: torch.nn.Module, batch: IOIBatch) -> DirectLogitAttribution:
    """DLA of every head, attention bias, MLP, embedding and bias on the IO − S direction at END.

    Exact on models whose final LayerNorm is weightless after folding (ValueError naming what does
    not fit otherwise, e.g. RMSNorm, where there is no centring term)."""
    require_weightless_layer_norm(bridge, "direct logit attribution")
    n_layers, device = bridge.cfg.n_layers, bridge.W_U.device
    names = ["hook_embed", "ln_final.hook_scale", "ln_final.hook_in"]
    names += ["hook_pos_embed"] if bridge.cfg.positional_embedding_type == "standard" else []
    names += [f"blocks.{layer}.attn.hook_result" for layer in range(n_layers)]
    names += [f"blocks.{layer}.hook_mlp_out" for layer in range(n_layers)]
    # keeping END only bounds memory: hook_result is [batch, pos, head, d_model] per layer
    at_end = read(bridge, batch.tokens.to(device), names, at=batch.end.to(device))
    scale = at_end["ln_final.hook_scale"]  # [batch, 1]
    d, unembed_bias = logit_diff_direction(bridge.W_U, bridge.b_U, batch)  # [batch, d_model], [batch]
    dla = lambda x: (x / scale * d).sum(-1)  # [batch, d_model] -> [batch]  # noqa: E731
    resid = at_end["ln_final.hook_in"]
    heads = _head_effects(at_end, scale, d, n_layers)
    pos_embed = at_end.get("hook_pos_embed")  # rotary models add no position vector to the residual
    return DirectLogitAttribution(
        heads=heads,
        attn_bias=torch.stack([dla(bridge.b_O[layer].expand_as(resid)) for layer in range(n_layers)], 1),
        mlp=torch.stack([dla(at_end[f"blocks.{layer}.hook_mlp_out"]) for layer in range(n_layers)], 1),
        embed=dla(at_end["hook_embed"]),
        pos_embed=dla(pos_embed) if pos_embed is not None else torch.zeros_like(unembed_bias),
        centering=dla(-resid.mean(-1, keepdim=True).expand_as(resid)),
        unembed_bias=unembed_bias,
        logit_diff=final_logit_diff(bridge, resid, batch),
    )


def _head_effects(
    at_end: dict[str, torch.Tensor], scale: torch.Tensor, d: torch.Tensor, n_layers: int
) -> PromptHeads:
    """[batch, layer, head] direct effects of every head's END output on direction d [batch, d_model]."""
    return torch.stack([
        (at_end[f"blocks.{layer}.attn.hook_result"] / scale[:, :, None] * d[:, None]).sum(-1)
        for layer in range(n_layers)
    ], 1)  # fmt: skip


@torch.no_grad()
def head_name_effects(
    bridge: torch.nn.Module, batch: IOIBatch, candidates: torch.Tensor
) -> tuple[PromptHeads, PromptHeads]:
    """Each head's direct effect at END on logit(IO) and on logit(S), each measured against the
    mean logit of `candidates` (token ids, e.g. every name): two [batch, layer, head] tensors whose
    difference is the heads' DLA. It tells apart heads DLA cannot: a head that copies both names
    raises both (DLA ≈ 0); a name mover raises IO only; an S-suppressor lowers S only."""
    require_weightless_layer_norm(bridge, "direct logit attribution")
    n_layers, device = bridge.cfg.n_layers, bridge.W_U.device
    names = ["ln_final.hook_scale", *(f"blocks.{layer}.attn.hook_result" for layer in range(n_layers))]
    at_end = read(bridge, batch.tokens.to(device), names, at=batch.end.to(device))
    scale, w_u = at_end["ln_final.hook_scale"], bridge.W_U
    mean = w_u[:, candidates.to(device)].mean(1)  # [d_model]
    io = _head_effects(at_end, scale, w_u[:, batch.io_tok.to(device)].T - mean, n_layers)
    s = _head_effects(at_end, scale, w_u[:, batch.s_tok.to(device)].T - mean, n_layers)
    return io, s


def layer_table(dla: DirectLogitAttribution) -> list[dict[str, float | int]]:
    """Rows layer, attn (heads + bias), mlp: mean per-layer direct effects."""
    attn = (dla.heads.sum(2) + dla.attn_bias).mean(0)
    mlp = dla.mlp.mean(0)
    return [
        {"layer": layer, "attn": attn[layer].item(), "mlp": mlp[layer].item()} for layer in range(len(mlp))
    ]


# ---------------------------------------------------------------- attribution patching


@dataclass(frozen=True)
class AttributionPatching:
    """First-order estimates of patching clean ← ABC, [layer, head] each, in units of F.

    activation: patching the head's hook_z (at `positions`) everywhere downstream;
    path: patching only the head's direct path into the final residual at END;
    agreement: Pearson and Spearman correlation of `activation` with an exact result, if given.
    """

    activation: HeadGrid
    path: HeadGrid
    agreement: dict[str, float] | None = None


def z_grads(bridge: torch.nn.Module, batch: IOIBatch) -> tuple[list[HeadZ], list[HeadZ], Resid]:
    """Clean hook_z per layer [batch, pos, head, d_head], ∂F/∂z of each, and ∂F/∂resid_final
    [batch, pos, d_model], from one forward and one backward pass (F = mean logit diff)."""
    n_layers, device = bridge.cfg.n_layers, bridge.W_U.device
    z_clean: list[torch.Tensor] = []
    deltas: list[torch.Tensor] = []

    def add_zero_leaf(x: torch.Tensor, hook) -> torch.Tensor:
        # Parameters carry no grad. z + δ with a zero leaf δ gives ∂F/∂δ = ∂F/∂z; making z itself
        # a detached leaf would instead cut the paths from earlier heads through this one.
        z_clean.append(x.detach())
        deltas.append(torch.zeros_like(x, requires_grad=True))
        return x + deltas[-1]

    hooks = [(f"blocks.{layer}.attn.hook_z", add_zero_leaf) for layer in range(n_layers)]
    with torch.enable_grad():
        final = final_resid_name(n_layers)
        resid = read(bridge, batch.tokens.to(device), [final], hooks=hooks)[final]
        # resid is downstream of the leaves: its grad needs no leaf of its own
        rows = torch.arange(len(batch), device=device)
        f = final_logit_diff(bridge, resid[rows, batch.end.to(device)], batch).mean()
        *g_z, g_resid = torch.autograd.grad(f, [*deltas, resid])
    return z_clean, g_z, g_resid


def attribution_patching(
    bridge: torch.nn.Module,
    clean: IOIBatch,
    abc_z: Sequence[HeadZ],
    positions: str = "all",
    *,
    exact: HeadGrid | None = None,
    chunk: int = 64,
) -> AttributionPatching:
    """Estimates from the corrupted per-layer hook_z `abc_z` ([batch, pos, head, d_head] each).

    Costs one forward and one backward pass per `chunk` prompts, whatever the number of heads.
    positions: "all" (patch every position) or "end" (only END; the path estimate is END-only
    anyway since only END's residual reaches the logit difference). With `exact` ([layer, head]
    exact activation-patching effects), `agreement` holds their Pearson and Spearman correlation.
    """
    if positions not in ("all", "end"):
        raise ValueError(f"positions must be 'all' or 'end', got {positions!r}")
    device = bridge.W_U.device
    n_layers, n_heads = bridge.cfg.n_layers, bridge.cfg.n_heads
    act = torch.zeros(n_layers, n_heads, device=device)
    path = torch.zeros(n_layers, n_heads, device=device)
    for start in range(0, len(clean), chunk):
        idx = torch.arange(start, min(start + chunk, len(clean)))
        sub, weight = clean.subset(idx), len(idx) / len(clean)  # F is a mean: chunk means weighted
        z_clean, g_z, g_resid = z_grads(bridge, sub)
        rows, ends = torch.arange(len(sub), device=device), sub.end.to(device)
        for layer, (zc, za, g) in enumerate(zip(z_clean, abc_z, g_z, strict=True)):
            delta = za[idx].to(device) - zc  # [chunk, pos, head, d_head]
            if positions == "end":
                mask = torch.zeros(delta.shape[:2], device=device)
                mask[rows, ends] = 1.0
                delta = delta * mask[:, :, None, None]
            act[layer] += weight * (delta * g).sum((0, 1, 3))
            # Direct path: Δresult at END = Δz · W_O, seen by the residual gradient only.
            d_result = torch.einsum("bhk,hkm->bhm", delta[rows, ends], bridge.W_O[layer])
            path[layer] += weight * (d_result * g_resid[rows, ends][:, None]).sum((0, 2))
    agreement = None if exact is None else correlations(act, exact)
    return AttributionPatching(act, path, agreement)


@torch.no_grad()
def head_z(bridge: torch.nn.Module, batch: IOIBatch) -> list[HeadZ]:
    """hook_z of every layer on `batch`, [batch, pos, head, d_head] each."""
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(bridge.cfg.n_layers)]
    got = read(bridge, batch.tokens.to(bridge.W_U.device), names)
    return [got[n] for n in names]


def correlations(approx: torch.Tensor, exact: torch.Tensor) -> dict[str, float]:
    """Pearson and Spearman correlation of two same-shape tensors (flattened)."""
    a, e = approx.flatten().double(), exact.flatten().double()
    rank = lambda x: x.argsort().argsort().double()  # noqa: E731  (ties are rare for float effects)
    pearson = torch.corrcoef(torch.stack([a, e]))[0, 1].item()
    spearman = torch.corrcoef(torch.stack([rank(a), rank(e)]))[0, 1].item()
    return {"pearson": pearson, "spearman": spearman}


@torch.no_grad()
def direct_path_effects(bridge: torch.nn.Module, clean: IOIBatch, abc_z: Sequence[HeadZ]) -> HeadGrid:
    """[layer, head] exact effect on F of patching only each head's direct path to the final
    residual at END (clean ← `abc_z`), re-applying the final LayerNorm: the reference for
    `AttributionPatching.path`."""
    device = bridge.W_U.device
    rows, ends = torch.arange(len(clean), device=device), clean.end.to(device)
    z_clean = head_z(bridge, clean)
    resid = final_resid_at_end(bridge, clean)
    f_clean = final_logit_diff(bridge, resid, clean).mean()
    effects = []
    for layer, (zc, za) in enumerate(zip(z_clean, abc_z, strict=True)):
        d_result = torch.einsum("bhk,hkm->hbm", za.to(device)[rows, ends] - zc[rows, ends], bridge.W_O[layer])
        f = final_logit_diff(bridge, resid[None] + d_result, clean).mean(1)  # [head]
        effects.append(f - f_clean)
    return torch.stack(effects)


# ---------------------------------------------------------------- registry entries


@register_analysis("dla")
def dla_analysis(
    model: LoadedModel, clean: IOIBatch, abc: IOIBatch, *, other=None, **options
) -> AnalysisResult:
    dla = direct_logit_attribution(model.bridge, clean)
    summary = {
        "logit_diff": dla.logit_diff.mean().item(),
        **dla.shares(),
        "embed": dla.embed.mean().item(),
        "pos_embed": dla.pos_embed.mean().item(),
        "attn_bias": dla.attn_bias.mean(0).sum().item(),
        "centering": dla.centering.mean().item(),
        "unembed_bias": dla.unembed_bias.mean().item(),
    }
    return AnalysisResult(
        "dla", heads_frame(dla.heads.mean(0)), summary, {"layers": pd.DataFrame(layer_table(dla))}
    )


@register_analysis("eap")
def eap_analysis(
    model: LoadedModel,
    clean: IOIBatch,
    abc: IOIBatch,
    *,
    other=None,
    positions: str = "all",
    compare: bool = False,
    max_rows: int = 512,
) -> AnalysisResult:
    from ioi.methods.patching import patch_head_outputs

    bridge = model.bridge
    abc_z = head_z(bridge, abc)
    approx = attribution_patching(bridge, clean, abc_z, positions)
    columns = {"path": approx.path}
    summary: dict[str, float | str] = {"positions": positions}
    if compare:
        position = None if positions == "all" else positions
        exact = patch_head_outputs(model, clean, abc, position=position, normalize=False, max_rows=max_rows)
        columns["exact"] = exact
        columns["exact_path"] = direct_path_effects(bridge, clean, abc_z)
        summary |= correlations(approx.activation, columns["exact"])
        summary |= {f"path_{k}": v for k, v in correlations(approx.path, columns["exact_path"]).items()}
    return AnalysisResult("eap", heads_frame(approx.activation, **columns), summary)
