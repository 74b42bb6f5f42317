"""Edge attribution patching: a gradient estimate of every edge's patching effect (EAP, EAP-IG).

Patching edge u → r adds Δ_u = out_u(ABC) − out_u(clean) to r's input. To first order its effect
on F is Δ_u · ∂F/∂in_r, so one forward and one backward pass estimate every edge at once (EAP,
Syed et al. 2023). EAP-IG (Hanna et al. 2024) averages the gradient over `steps` runs whose input
embeddings lie on the line from the ABC prompts to the clean ones (α = 1/steps … 1), an integrated
gradient that follows large, saturating effects better; with steps = 1 it is EAP.

The gradient at an MLP's input is the residual's gradient before the MLP minus the one after it
(the MLP's input is the residual there: both paths meet). Prompts are processed in chunks, so
GPT-2-sized models fit in memory. Scores are in the units of
:func:`ioi.methods.edges.exact_edge_scores` (logits), so the two can be ranked against each other.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ioi.methods.edges import EdgeGraph, edge_graph, edge_runs
from ioi.methods.patching import prepare
from ioi.models.load import LoadedModel
from ioi.task.data import IOIBatch
from ioi.task.metrics import logit_diff_per_prompt
from ioi.task.types import EdgeValues

DEFAULT_CHUNK = 32
"""Prompts per forward/backward pass."""


def _receiver_grads(model: LoadedModel, clean: IOIBatch, start: Tensor, stop: Tensor, steps: int) -> Tensor:
    """[receiver, batch, pos, d_model] ∂F/∂(receiver input), summed over the `steps` runs whose
    embeddings are start + α·(stop − start), α = 1/steps … 1 (F: the sum of the prompts' logit
    differences)."""
    bridge, n = model.bridge, model.n_layers
    names = [f"blocks.{layer}.hook_{s}_input" for layer in range(n) for s in ("q", "k", "v")]
    names += [f"blocks.{layer}.hook_resid_{w}" for layer in range(n) for w in ("mid", "post")]
    total: Tensor | None = None
    for k in range(1, steps + 1):
        alpha = k / steps
        embed = (start + alpha * (stop - start)).detach().requires_grad_(True)
        kept: dict[str, Tensor] = {}

        def keep(act: Tensor, hook, name: str) -> None:
            kept[name] = act  # noqa: B023 (the hooks run inside this iteration)

        hooks = [("blocks.0.hook_resid_pre", lambda act, hook, embed=embed: embed)]
        hooks += [(name, lambda act, hook, name=name: keep(act, hook, name)) for name in names]
        with torch.enable_grad(), bridge.hooks(fwd_hooks=hooks):
            f = logit_diff_per_prompt(bridge(clean.tokens.to(model.device)), clean).sum()
            grads = dict(zip(names, torch.autograd.grad(f, [kept[m] for m in names]), strict=True))
        out = []
        for layer in range(n):
            qkv = [grads[f"blocks.{layer}.hook_{s}_input"] for s in ("q", "k", "v")]  # [b, p, head, d]
            out += [g[:, :, h] for h in range(model.n_heads) for g in qkv]
            out.append(grads[f"blocks.{layer}.hook_resid_mid"] - grads[f"blocks.{layer}.hook_resid_post"])
        out.append(grads[f"blocks.{n - 1}.hook_resid_post"])
        step = torch.stack(out).detach()
        total = step if total is None else total + step
    return total / steps


def edge_attribution(
    model: LoadedModel, clean: IOIBatch, abc: IOIBatch, *, steps: int = 1, chunk: int = DEFAULT_CHUNK
) -> EdgeValues:
    """[edge] estimated F(edge patched) − F(M) of every edge (logits): EAP with steps = 1, EAP-IG
    with `steps` ≥ 2 integration points (the edges of :func:`ioi.methods.edges.edge_graph`)."""
    if steps < 1:
        raise ValueError(f"EAP-IG needs at least 1 integration step, got {steps}")
    if getattr(model.bridge.cfg, "parallel_attn_mlp", False):
        raise ValueError(
            "edge attribution assumes attention then MLP in each block; this model runs them in parallel"
        )
    graph: EdgeGraph = edge_graph(model)
    senders = torch.tensor([i for i, _ in graph.edges])
    receivers = torch.tensor([j for _, j in graph.edges])
    total = torch.zeros(len(graph.edges), dtype=torch.float64)
    for i in range(0, len(clean), chunk):
        idx = torch.arange(i, min(len(clean), i + chunk))
        c, a = clean.subset(idx), abc.subset(idx)
        runs = edge_runs(model, c, a, prepare(model, c, a))
        grads = _receiver_grads(model, c, runs.out_abc[0], runs.out_clean[0], steps)  # [r, b, p, d]
        delta = runs.delta.flatten(1).double()  # [sender, b·p·d]
        scores = delta @ grads.flatten(1).double().T  # [sender, receiver]
        total += scores[senders, receivers].cpu()
    return (total / len(clean)).float()


def rank_correlation(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation of two score vectors (average ranks for ties)."""

    def ranks(x: Tensor) -> Tensor:
        order = x.double().argsort()
        r = torch.empty_like(order, dtype=torch.float64)
        r[order] = torch.arange(len(x), dtype=torch.float64)
        for v in x.unique()[x.unique(return_counts=True)[1] > 1]:  # ties share their mean rank
            r[x == v] = r[x == v].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return (ra @ rb / (ra.norm() * rb.norm())).item()
