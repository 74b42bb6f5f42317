"""Edge sets: the logit difference with some edges kept and every other edge patched (METHODS §6).

An edge set E is evaluated with every edge outside E patched to the ABC run and every edge inside
kept (:mod:`ioi.methods.edges` defines the graph and the patching of one edge): each receiver reads
the running residual minus, over its patched edges, each sender's output now minus its ABC output.
With E empty every receiver reads the ABC run (F = F(ABC)); with every edge, the clean run. The
greedy edge circuit (:mod:`ioi.methods.edge_circuit`) and the transfer matrix evaluate edge sets.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ioi.methods.edges import SITES, Blocks, EdgeRuns, edge_graph, require_gpt2_blocks
from ioi.methods.readout import end_rows, final_logit_diff
from ioi.models.load import LoadedModel
from ioi.task.data import IOIBatch
from ioi.task.types import EdgeMask, PerVariant


def _abc_stream(blocks: Blocks, runs: EdgeRuns) -> tuple[list[Tensor], list[Tensor]]:
    """The ABC run's residual [batch, pos, d] before each block (and the final one) and after each
    block's attention, summed from its sender outputs (so a receiver fed only ABC senders reads it)."""
    out, n_heads = runs.out_abc, blocks.model.n_heads
    pre, mid = [out[0]], []
    for layer in range(blocks.model.n_layers):
        first = 1 + layer * (n_heads + 1)
        mid.append(pre[-1] + out[first : first + n_heads].sum(0) + blocks.w["b_O"][layer])
        pre.append(mid[-1] + out[first + n_heads])
    return pre, mid


def _edge_set_run(
    blocks: Blocks, clean: IOIBatch, runs: EdgeRuns, keep: Tensor, pre: list[Tensor], mid: list[Tensor],
    abc_qkv: list[dict[str, Tensor]],
) -> Tensor:  # fmt: skip
    """[batch] logit differences with the edges where `keep` [sender, receiver] holds kept and every
    other edge patched: each receiver reads the ABC run plus the kept senders' changes (now − ABC).
    A sender whose inputs are all the ABC run's writes the ABC run's output (change 0, skipped), so
    a variant costs what its kept edges touch."""
    n, n_heads = blocks.model.n_layers, blocks.model.n_heads
    shape = pre[0].shape
    deltas = {0: runs.out_clean[0] - runs.out_abc[0]}  # sender -> output now − ABC's ([batch, pos, d])

    def kept_sum(senders: list[int], m: Tensor) -> Tensor:
        """[rows, batch, pos, d]: per row of m [rows, senders] the sum of its kept senders' changes."""
        stack = torch.stack([deltas[u] for u in senders]).flatten(1)
        return (m.to(stack.dtype) @ stack).view(len(m), *shape)

    for layer in range(n):
        first, base = 1 + layer * (n_heads + 1), layer * (3 * n_heads + 1)
        senders = list(deltas)
        qkv, touched = {}, torch.zeros(n_heads, dtype=torch.bool)
        for k, s in enumerate(SITES):
            m = keep[senders][:, base + k : base + 3 * n_heads : 3].T  # [head, sender]
            heads = m.any(1).nonzero().flatten()
            qkv[s] = abc_qkv[layer][s].clone()  # [batch, pos, head, e]
            if len(heads):
                h = blocks.ln(pre[layer] + kept_sum(senders, m[heads]))
                w, b = blocks.w[f"W_{s.upper()}"][layer][heads], blocks.w[f"b_{s.upper()}"][layer][heads]
                qkv[s][:, :, heads] = torch.einsum("hbpd,hde->bphe", h, w) + b
                touched[heads] = True
        heads = touched.nonzero().flatten()
        if len(heads):
            z = blocks.z(*(qkv[s][:, :, heads] for s in SITES))  # [batch, pos, h, e]
            outs = torch.einsum("bphe,hed->hbpd", z, blocks.w["W_O"][layer][heads])
            for a, h in enumerate(heads.tolist()):
                deltas[first + h] = outs[a] - runs.out_abc[first + h]
        senders = [u for u in deltas if keep[u, base + 3 * n_heads]]
        if senders:
            x = mid[layer] + kept_sum(senders, torch.ones(1, len(senders)))[0]
            deltas[first + n_heads] = blocks.mlp(layer, x) - runs.out_abc[first + n_heads]
    x_end = end_rows(pre[n], clean)
    for u in (u for u in deltas if keep[u, -1]):
        x_end = x_end + end_rows(deltas[u], clean)
    return final_logit_diff(blocks.bridge, x_end, clean)


@torch.no_grad()
def edge_set_logit_diffs(
    model: LoadedModel, clean: IOIBatch, runs: EdgeRuns, patched: EdgeMask
) -> PerVariant:
    """[variant, batch] logit differences with, per variant, the edges where `patched` [variant,
    edge] is True patched to the ABC run and the others kept (see the module docstring).

    Computed relative to the ABC run: a receiver reads the ABC residual plus the changes its kept
    senders make, which in exact arithmetic is the module docstring's input; only senders a kept
    edge reaches are recomputed (the results equal the running-residual formula up to float
    rounding: the tests hold them to 1e-5 logits)."""
    require_gpt2_blocks(model)
    graph, blocks = edge_graph(model), Blocks(model)
    keep = graph.matrix((~patched).to(torch.float32)) > 0  # [variant, sender, receiver]
    pre, mid = _abc_stream(blocks, runs)
    abc_qkv = [{s: blocks.qkv(layer, pre[layer], s) for s in SITES} for layer in range(model.n_layers)]
    return torch.stack([_edge_set_run(blocks, clean, runs, k, pre, mid, abc_qkv) for k in keep])
