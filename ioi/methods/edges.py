"""Edge-level circuits: the effect of one connection between two components (METHODS §6, per edge).

The model is a graph. Senders write into the residual stream: the embeddings (token + position),
every head's output (z·W_O) and every MLP's output. Receivers read from it: every head's query, key
and value input (separately), every MLP's input and the logits (the final residual at END). An edge
u → r exists when u writes before r reads (a head at layer l sends to heads of later layers, to MLP
l and later, and to the logits).

*Patching an edge* gives the receiver r the input it had in the clean run, except that sender u's
contribution is the ABC run's: in_r = clean in_r + (out_u(ABC) − out_u(clean)); everything after r
recomputes. Its score is the change of the logit difference, F(edge patched) − F(M) (logits).

*An edge set* (some edges kept, every other patched) is evaluated by :mod:`ioi.methods.edge_sets`.

Both are computed without TransformerLens forward passes, by re-implementing GPT-2's block from the
bridge's weights (as the END-row engine does), so they apply where
:func:`ioi.methods.readout.fast_path_obstacles` finds nothing; the tests check them against a plain
loop with one hooked forward per edge. A single edge's score only recomputes what lies after its
receiver: a receiver in the last layer, or the logits, only at END.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from ioi.methods.end_row import attention_weights
from ioi.methods.hooks import hook_name, read_activations
from ioi.methods.patching import Activations, prepare
from ioi.methods.readout import end_rows, fast_path_obstacles, final_logit_diff, layer_norm_pre
from ioi.models.load import LoadedModel
from ioi.task.data import IOIBatch
from ioi.task.types import EdgePrompts, EdgeValues, PerVariant, Resid

SITES = ("q", "k", "v")
EMBED = "embed"
LOGITS = "logits"


def head_node(layer: int, head: int) -> str:
    return f"{layer}.{head}"


def mlp_node(layer: int) -> str:
    return f"mlp{layer}"


@dataclass(frozen=True)
class EdgeGraph:
    """The senders, receivers and edges of a model with `n_layers` blocks of `n_heads` heads.

    Senders in the order they write: embed, then per layer its heads ("L.H") and its MLP ("mlpL").
    Receivers: per layer its heads' inputs ("L.H.q", "L.H.k", "L.H.v") and its MLP ("mlpL"), then
    "logits". `edges[i]` = (sender index, receiver index); edges are named "u->r".
    """

    n_layers: int
    n_heads: int

    @cached_property
    def senders(self) -> tuple[str, ...]:
        out = [EMBED]
        for layer in range(self.n_layers):
            out += [head_node(layer, h) for h in range(self.n_heads)] + [mlp_node(layer)]
        return tuple(out)

    @cached_property
    def receivers(self) -> tuple[str, ...]:
        out = []
        for layer in range(self.n_layers):
            out += [f"{head_node(layer, h)}.{s}" for h in range(self.n_heads) for s in SITES]
            out.append(mlp_node(layer))
        return (*out, LOGITS)

    def sender_stage(self, i: int) -> int:
        """0 for the embeddings, 2L+1 for a head of layer L, 2L+2 for MLP L: when it writes."""
        if i == 0:
            return 0
        layer, k = divmod(i - 1, self.n_heads + 1)
        return 2 * layer + (1 if k < self.n_heads else 2)

    def receiver_stage(self, j: int) -> int:
        """The last stage a receiver reads: 2L for layer L's heads, 2L+1 for MLP L, 2n for the logits."""
        if j == len(self.receivers) - 1:
            return 2 * self.n_layers
        layer, k = divmod(j, 3 * self.n_heads + 1)
        return 2 * layer + (0 if k < 3 * self.n_heads else 1)

    @cached_property
    def edges(self) -> tuple[tuple[int, int], ...]:
        return tuple(
            (i, j)
            for j in range(len(self.receivers))
            for i in range(len(self.senders))
            if self.sender_stage(i) <= self.receiver_stage(j)
        )

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(f"{self.senders[i]}->{self.receivers[j]}" for i, j in self.edges)

    def index(self, name: str) -> int:
        """The position of edge `name` ("0.3->1.2.q") in `edges`; ValueError if there is none."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"no edge {name!r} in this model's graph") from None

    def matrix(self, values: Tensor) -> Tensor:
        """[..., edge] -> [..., sender, receiver] (0 where there is no edge)."""
        out = values.new_zeros(*values.shape[:-1], len(self.senders), len(self.receivers))
        s = torch.tensor([i for i, _ in self.edges])
        r = torch.tensor([j for _, j in self.edges])
        out[..., s, r] = values
        return out


def edge_graph(model: LoadedModel) -> EdgeGraph:
    return EdgeGraph(model.n_layers, model.n_heads)


def require_gpt2_blocks(model: LoadedModel) -> None:
    """ValueError naming what does not fit when exact edge patching cannot re-implement the blocks."""
    reasons = fast_path_obstacles(model.bridge)
    if reasons:
        raise ValueError(
            f"exact edge patching re-implements GPT-2's block; this model has {', '.join(reasons)}: "
            "use the attribution estimates (method=eap or eap-ig)"
        )


@dataclass
class EdgeRuns:
    """What edge patching reuses: the clean/ABC runs (Activations) and each sender's output in both.

    out_clean, out_abc: [sender, batch, pos, d_model] (embed, heads' z·W_O, MLP outputs)."""

    acts: Activations
    out_clean: Tensor
    out_abc: Tensor

    @cached_property
    def delta(self) -> Tensor:
        """[sender, batch, pos, d_model] out_abc − out_clean."""
        return self.out_abc - self.out_clean


@torch.no_grad()
def edge_runs(
    model: LoadedModel, clean: IOIBatch, abc: IOIBatch, acts: Activations | None = None
) -> EdgeRuns:
    """The sender outputs of the clean and ABC runs (one extra read of the ABC run)."""
    acts = acts or prepare(model, clean, abc)
    names = ["blocks.0.hook_resid_pre"] + [hook_name(layer, "mlp_out") for layer in range(model.n_layers)]
    got = read_activations(model, abc, names)
    w_o = model.bridge.W_O  # [layer, head, d_head, d_model]

    def outputs(emb: Tensor, z: Tensor, mlp: list[Tensor]) -> Tensor:
        out = [emb]
        for layer in range(model.n_layers):
            out += list(torch.einsum("bphe,hed->hbpd", z[layer], w_o[layer]))
            out.append(mlp[layer])
        return torch.stack(out)

    out_clean = outputs(acts.resid_pre[0], acts.z_clean, list(acts.mlp_out))
    out_abc = outputs(got[names[0]], acts.z_abc, [got[n] for n in names[1:]])
    return EdgeRuns(acts, out_clean, out_abc)


_ACTIVATIONS = {
    "gelu_new": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "gelu": torch.nn.functional.gelu,
    "relu": torch.relu,
}


class Blocks:
    """GPT-2's block from the bridge's weights, on residuals with any leading axes. Every LayerNorm
    is weightless on a model :func:`require_gpt2_blocks` accepts (compatibility mode folds them)."""

    def __init__(self, model: LoadedModel) -> None:
        self.model, self.bridge = model, model.bridge
        self.w = attention_weights(model.bridge)
        self.w |= {k: getattr(model.bridge, k) for k in ("W_in", "b_in", "W_out", "b_out")}
        self.scale = self.w["W_Q"].shape[-1] ** 0.5
        self.eps = model.bridge.cfg.eps
        self.act = _ACTIVATIONS.get(model.bridge.cfg.act_fn)

    def ln(self, x: Tensor) -> Tensor:
        return layer_norm_pre(x, self.eps)

    def qkv(self, layer: int, x: Tensor, site: str, per_head: bool = False, normed: bool = False) -> Tensor:
        """Queries, keys or values [..., pos, head, d_head] of `site` ("q", "k", "v") from the
        residual [..., pos, d_model] (`normed`: already through the LayerNorm), or with `per_head`
        from one input per head [c, head, batch, pos, d_model]."""
        h = x if normed else self.ln(x)
        w, b = self.w[f"W_{site.upper()}"][layer], self.w[f"b_{site.upper()}"][layer]
        if per_head:
            return torch.einsum("chbpd,hde->cbphe", h, w) + b
        flat = w.permute(1, 0, 2).flatten(1)  # [d_model, head·d_head]
        return (h @ flat).unflatten(-1, w.shape[::2]) + b

    def z(self, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor | None = None) -> Tensor:
        """Head outputs [..., q_pos, head, d_head] of queries q [..., q_pos, head, e] on keys and values
        [..., pos, head, e]; q_pos: the query positions ([..., q_pos] long; default 0..pos-1), for
        the causal mask."""
        scores = torch.einsum("...qhe,...khe->...hqk", q, k) / self.scale
        n = k.shape[-3]
        qp = torch.arange(n, device=k.device) if q_pos is None else q_pos
        mask = torch.arange(n, device=k.device) > qp[..., :, None]  # [..., q_pos, pos]
        scores = scores.masked_fill(mask.unsqueeze(-3), float("-inf"))
        return torch.einsum("...hqk,...khe->...qhe", scores.softmax(-1), v)

    def attn_out(self, layer: int, z: Tensor) -> Tensor:
        """[..., pos, head, d_head] -> [..., pos, d_model] (b_O included)."""
        w_o = self.w["W_O"][layer]
        return z.flatten(-2) @ w_o.flatten(0, 1) + self.w["b_O"][layer]

    def mlp(self, layer: int, x: Tensor) -> Tensor:
        """MLP `layer`'s output on the residual `x` (its LayerNorm included)."""
        if self.act is None:  # an activation not listed: the model's own module
            return self.bridge.blocks[layer].mlp(self.ln(x))
        hidden = self.act(self.ln(x) @ self.w["W_in"][layer] + self.w["b_in"][layer])
        return hidden @ self.w["W_out"][layer] + self.w["b_out"][layer]


def _run_from(blocks: Blocks, batch: IOIBatch, resid: Resid, start: int) -> PerVariant:
    """[rows, batch] logit differences of the ordinary forward from block `start` fed `resid`
    [rows, batch, pos, d_model]; the last block computes END's query row only."""
    n_layers = blocks.model.n_layers
    end = batch.end.to(resid.device)
    x = resid
    for layer in range(start, n_layers):
        k, v = blocks.qkv(layer, x, "k"), blocks.qkv(layer, x, "v")
        if layer < n_layers - 1:
            z = blocks.z(blocks.qkv(layer, x, "q"), k, v)
            x = x + blocks.attn_out(layer, z)
            x = x + blocks.mlp(layer, x)
            continue
        x_end = end_rows(x, batch)  # [rows, batch, d]
        q = blocks.qkv(layer, x_end.unsqueeze(-2), "q")  # [rows, batch, 1, head, e]
        z = blocks.z(q, k, v, end[:, None])
        x_end = x_end + blocks.attn_out(layer, z)[..., 0, :]
        x_end = x_end + blocks.mlp(layer, x_end)
        return final_logit_diff(blocks.bridge, x_end, batch)
    return final_logit_diff(blocks.bridge, end_rows(x, batch), batch)


DEFAULT_MAX_ELEMENTS = 2**25
"""Floats of the largest intermediate tensor edge patching builds at once (memory bound)."""


def _chunks(n: int, per_item: int, max_elements: int) -> list[slice]:
    step = max(1, max_elements // max(1, per_item))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


@torch.no_grad()
def exact_edge_scores(
    model: LoadedModel,
    clean: IOIBatch,
    abc: IOIBatch,
    *,
    runs: EdgeRuns | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    per_prompt: bool = False,
) -> EdgeValues | EdgePrompts:
    """[edge] F(edge patched) − F(M) of every edge of the model's graph (logits), exactly
    (`per_prompt`: [edge, batch], each prompt's own change).

    Per receiver, every sender's change (out_u(ABC) − out_u(clean)) is added to the receiver's
    clean input at every position; the receiver's new output is computed on its own (one head, or
    the MLP) and the rest of the model from the next block on (END's row only in the last block).
    """
    require_gpt2_blocks(model)
    runs = runs or edge_runs(model, clean, abc)
    acts, graph, blocks = runs.acts, edge_graph(model), Blocks(model)
    n, n_heads = model.n_layers, model.n_heads
    rows, end = torch.arange(len(clean)), clean.end.to(acts.resid_pre.device)
    f = {}  # (sender index, receiver name) -> [batch] logit differences

    def upstream(stage: int) -> list[int]:
        return [i for i in range(len(graph.senders)) if graph.sender_stage(i) <= stage]

    def finish(layer: int, resid_next: Tensor) -> Tensor:
        """[rows, batch] logit differences from the residual after block `layer` ([rows, batch, pos, d],
        or [rows, batch, d] at END for the last block)."""
        if layer == n - 1:
            return final_logit_diff(model.bridge, resid_next, clean)
        return _run_from(blocks, clean, resid_next, layer + 1)

    # the logits: the final residual at END plus each sender's change there
    every = list(range(len(graph.senders)))
    final_end = end_rows(acts.resid_pre[n], clean)
    ld = final_logit_diff(model.bridge, final_end + end_rows(runs.delta, clean), clean)
    f |= {(i, LOGITS): ld[i] for i in every}
    for layer in range(n):
        last = layer == n - 1
        resid, mid = acts.resid_pre[layer], acts.resid_mid(layer)
        clean_qkv = {s: blocks.qkv(layer, resid, s) for s in SITES}  # [batch, pos, head, e]
        z_clean = acts.z_clean[layer]
        senders = upstream(2 * layer)
        per_sender = n_heads * resid.numel()
        for part in _chunks(len(senders), per_sender, max_elements):
            idx = senders[part]
            h_mod = blocks.ln(resid + runs.delta[idx])  # [u, batch, pos, d]
            for s in SITES:
                qkv = {t: clean_qkv[t].expand(len(idx), *clean_qkv[t].shape) for t in SITES}
                qkv[s] = blocks.qkv(layer, h_mod, s, normed=True)
                if last:  # only END's query row reaches the logits
                    q_end = qkv["q"][:, rows, end].unsqueeze(-3)  # [u, batch, 1, head, e]
                    z = blocks.z(q_end, qkv["k"], qkv["v"], end[:, None])[..., 0, :, :]
                    dz = z - z_clean[rows, end]  # [u, batch, head, e]
                    x = end_rows(mid, clean) + torch.einsum("ubhe,hed->uhbd", dz, blocks.w["W_O"][layer])
                else:
                    z = blocks.z(qkv["q"], qkv["k"], qkv["v"])
                    dz = z - z_clean  # [u, batch, pos, head, e]
                    x = mid + torch.einsum("ubphe,hed->uhbpd", dz, blocks.w["W_O"][layer])
                x = x + blocks.mlp(layer, x)
                ld = finish(layer, x.flatten(0, 1)).unflatten(0, (len(idx), n_heads))
                for a, i in enumerate(idx):
                    f |= {(i, f"{head_node(layer, h)}.{s}"): ld[a, h] for h in range(n_heads)}
        senders = upstream(2 * layer + 1)
        for part in _chunks(len(senders), resid.numel(), max_elements):
            idx = senders[part]
            delta = runs.delta[idx]
            if last:
                x = end_rows(mid, clean)
                x = x + blocks.mlp(layer, x + end_rows(delta, clean))
            else:
                x = mid + blocks.mlp(layer, mid + delta)
            ld = finish(layer, x)
            f |= {(i, mlp_node(layer)): ld[a] for a, i in enumerate(idx)}
    values = (
        torch.stack([f[(i, graph.receivers[j])] for i, j in graph.edges]) - acts.ld_clean
    )  # [edge, batch]
    return values.cpu() if per_prompt else values.double().mean(1).float().cpu()
