"""How a circuit changes across checkpoints: overlap, turnover, role scores and their stability.

Every checkpoint of an experiment family (pretrained → clean epochs; pretrained → toxic → reversal)
is *profiled* on the same prompts (:func:`profile_checkpoint`): per-prompt exact edge scores, the
greedy edge circuit, the node circuit of :func:`ioi.methods.classify.circuit_for`, and per-prompt
role scores of every head — DLA, the direct path to the logits (name-mover score: the exact score of
edge L.H → logits), the S-inhibition score (the summed scores of its edges into the reference name
movers' queries) — plus the OV copy score (weights only: no interval).

Because the prompts are the same at every checkpoint, each comparison is bootstrapped over prompts
with one set of resamples (paired): a resample recomputes every checkpoint's mean edge scores and
keeps its circuit's number of top edges, so edge and node Jaccard indices get intervals; the Jaccard
of a resample's circuit with the checkpoint's own is its *stability* (Méloux et al. 2025 call a
circuit stable when it is ≥ 0.8 over ≥ 100 resamples). Nodes here are the heads the edges touch.
A role score *flips sign* when its interval excludes 0 with the opposite sign of the reference
checkpoint's (which excludes 0 too); it *changes* at a checkpoint when the paired interval of its
difference from the previous checkpoint excludes 0 and the difference is at least CHANGE_MIN·F(M)
of the reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor

from ioi.methods.attention import model_copy_scores
from ioi.methods.classify import circuit_for, head_direct_effects
from ioi.methods.edge_circuit import DEFAULT_FAITHFULNESS, greedy_edge_circuit
from ioi.methods.edges import EdgeGraph, EdgeRuns, edge_graph, edge_runs, exact_edge_scores
from ioi.methods.patching import prepare
from ioi.methods.stats import N_BOOT, Estimate, bootstrap_means, interval, mean_estimate, resample_indices
from ioi.models.load import LoadedModel
from ioi.task.data import IOIBatch
from ioi.task.types import EdgePrompts, HeadGrid, PerPrompt

STABLE_JACCARD = 0.8
"""Méloux et al. 2025: a circuit is stable when its bootstrap self-Jaccard is at least this."""
CHANGE_MIN = 0.05
"""A role score changes at a checkpoint only by at least this share of the reference F(M)."""
ROLES = ("dla", "name_mover", "s_inhibition")


@dataclass
class CheckpointProfile:
    """What the timeline needs of one checkpoint (all on the family's shared prompts).

    edge_scores [edge, batch]; circuit_edges: the greedy edge circuit; heads: the node circuit's
    heads ("L.H"); roles: {role: [layer, head, batch]}; copy [layer, head]; f_model [batch];
    runs: the clean/ABC runs the profile was computed on, for the matrices to reuse (not compared)."""

    label: str
    graph: EdgeGraph
    edge_scores: EdgePrompts
    circuit_edges: tuple[str, ...]
    faithfulness: Estimate
    heads: tuple[str, ...]
    name_movers: tuple[str, ...]
    roles: dict[str, Tensor]
    copy: HeadGrid
    f_model: PerPrompt
    runs: EdgeRuns | None = field(default=None, repr=False, compare=False)


def profile_checkpoint(
    model: LoadedModel,
    clean: IOIBatch,
    abc: IOIBatch,
    label: str,
    *,
    target: float = DEFAULT_FAITHFULNESS,
    name_movers: Sequence[str] | None = None,
) -> CheckpointProfile:
    """Profile `model` (see the module docstring); `name_movers` ("L.H"): the heads whose queries
    define the S-inhibition score (default this checkpoint's own name movers)."""
    acts = prepare(model, clean, abc)
    runs = edge_runs(model, clean, abc, acts)
    graph = edge_graph(model)
    per_prompt = exact_edge_scores(model, clean, abc, runs=runs, per_prompt=True)
    circuit = greedy_edge_circuit(
        model, clean, abc, per_prompt.double().mean(1).float(), target=target, runs=runs
    )
    nodes = circuit_for(model, clean, abc)
    own_nm = tuple(str(h) for h in nodes.classes.get("name mover", ()))
    nm = tuple(name_movers) if name_movers is not None else own_nm
    n_layers, n_heads = model.n_layers, model.n_heads
    dla, _ = head_direct_effects(model, clean, per_prompt=True)
    direct = torch.stack(
        [per_prompt[graph.index(f"{layer}.{h}->logits")] for layer in range(n_layers) for h in range(n_heads)]
    )
    s_inh = torch.zeros(n_layers * n_heads, len(clean))
    for k, (layer, h) in enumerate((layer, h) for layer in range(n_layers) for h in range(n_heads)):
        for m in nm:
            name = f"{layer}.{h}->{m}.q"
            if name in graph.names:
                s_inh[k] += per_prompt[graph.index(name)]
    roles = {
        "dla": dla.float(),
        "name_mover": direct.view(n_layers, n_heads, -1),
        "s_inhibition": s_inh.view(n_layers, n_heads, -1),
    }
    copy = model_copy_scores(model.bridge, model.tokenizer)["copy_score"]
    return CheckpointProfile(
        label,
        graph,
        per_prompt,
        circuit.edges,
        circuit.faithfulness,
        tuple(str(h) for h in nodes.heads),
        own_nm,
        roles,
        copy,
        acts.ld_clean.cpu(),
        runs,
    )


def jaccard(a: set | frozenset, b: set | frozenset) -> float:
    """|a ∩ b| / |a ∪ b|; NaN for two empty sets (two models without a circuit do not share one)."""
    return len(a & b) / len(a | b) if a | b else math.nan


def _rows_jaccard(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Jaccard of two [rows, items] bool masks (NaN where both rows are empty)."""
    inter, union = (a & b).sum(-1).double(), (a | b).sum(-1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(union, math.nan))


def _head_incidence(graph: EdgeGraph, n_layers: int, n_heads: int) -> Tensor:
    """[edge, layer·head] whether an edge starts or ends at each head."""
    out = torch.zeros(len(graph.edges), n_layers * n_heads)
    for e, (i, j) in enumerate(graph.edges):
        for node in (graph.senders[i], graph.receivers[j]):
            parts = node.split(".")
            if parts[0].isdigit():
                out[e, int(parts[0]) * n_heads + int(parts[1])] = 1
    return out


def _top(scores: Tensor, k: int) -> Tensor:
    """[rows, edge] bool: the k largest |scores| of each row."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k:
        mask.scatter_(-1, scores.abs().topk(k, dim=-1).indices, True)
    return mask


def _estimate(point: float, samples: Tensor, over: str) -> dict[str, float]:
    lo, hi = interval(samples)
    return {"value": point, "lo": lo.item(), "hi": hi.item(), "over": over}


def _role_rows(
    label: str,
    role: str,
    value: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    flip: torch.Tensor,
    changed: torch.Tensor,
) -> list[dict]:
    """One row per head of a [layer, head] role score with its interval and flags."""
    n_layers, n_heads = value.shape
    return [
        {
            "checkpoint": label,
            "layer": layer,
            "head": h,
            "role": role,
            "value": value[layer, h].item(),
            "lo": lo[layer, h].item(),
            "hi": hi[layer, h].item(),
            "sign_flip": bool(flip[layer, h]),
            "changed": bool(changed[layer, h]),
        }
        for layer in range(n_layers)
        for h in range(n_heads)
    ]


def timeline(
    profiles: Sequence[CheckpointProfile], *, reference: int = 0, n_boot: int = N_BOOT, seed: int = 0
) -> dict[str, pd.DataFrame]:
    """The timeline tables of checkpoints profiled on the same prompts (see the module docstring).

    overlap: per checkpoint, edge and node Jaccard against profiles[reference] with intervals, the
    node-circuit (circuit_for) Jaccard, circuit size, faithfulness, stability; changes: heads and
    edges entering and leaving against the previous checkpoint (space-separated names); roles: per
    checkpoint, head and
    role, value with interval, sign_flip and changed flags."""
    ref = profiles[reference]
    graph = ref.graph
    n_layers, n_heads = ref.copy.shape
    n = ref.f_model.numel()
    over = f"prompts (paired bootstrap, n={n}, {n_boot} resamples)"
    inc = _head_incidence(graph, n_layers, n_heads)
    nodes_of = lambda mask: (mask.double() @ inc.double()) > 0  # noqa: E731
    edge_name = {name: i for i, name in enumerate(graph.names)}
    full = [
        torch.zeros(len(graph.edges), dtype=torch.bool).index_fill_(
            0, torch.tensor([edge_name[e] for e in p.circuit_edges], dtype=torch.long), True
        )
        for p in profiles
    ]
    boot = [
        _top(bootstrap_means(p.edge_scores, n_boot=n_boot, seed=seed), len(p.circuit_edges)) for p in profiles
    ]
    rows, changes, roles = [], [], []
    for t, p in enumerate(profiles):
        edge_j = _rows_jaccard(boot[t], boot[reference])
        node_j = _rows_jaccard(nodes_of(boot[t]), nodes_of(boot[reference]))
        self_j = _rows_jaccard(boot[t], full[t][None])
        rows.append(
            {
                "checkpoint": p.label,
                "n_edges": len(p.circuit_edges),
                **{
                    f"edge_jaccard{k}": v
                    for k, v in _suffixed(
                        _estimate(jaccard(set(p.circuit_edges), set(ref.circuit_edges)), edge_j, over)
                    ).items()
                },
                **{
                    f"node_jaccard{k}": v
                    for k, v in _suffixed(
                        _estimate(
                            _set_jaccard(nodes_of(full[t][None])[0], nodes_of(full[reference][None])[0]),
                            node_j,
                            over,
                        )
                    ).items()
                },
                "head_circuit_jaccard": jaccard(set(p.heads), set(ref.heads)),
                **mean_estimate(p.f_model, n_boot=n_boot, seed=seed).columns("f_model"),
                "faithfulness": p.faithfulness.value,
                "faithfulness_lo": p.faithfulness.lo,
                "faithfulness_hi": p.faithfulness.hi,
                "stability": self_j.mean().item(),
                "stability_p05": torch.quantile(self_j, 0.05).item(),
                "stable": bool(self_j.mean().item() >= STABLE_JACCARD),
                "resamples": n_boot,
            }
        )
        prev = profiles[t - 1] if t else p
        heads_now, heads_prev = _heads_of(p, inc, full[t]), _heads_of(prev, inc, full[t - 1 if t else t])
        changes.append(
            {  # space-separated names (a table stores text, not lists)
                "checkpoint": p.label,
                "heads_entering": " ".join(sorted(heads_now - heads_prev)),
                "heads_leaving": " ".join(sorted(heads_prev - heads_now)),
                "edges_entering": " ".join(sorted(set(p.circuit_edges) - set(prev.circuit_edges))),
                "edges_leaving": " ".join(sorted(set(prev.circuit_edges) - set(p.circuit_edges))),
            }
        )
    scale = abs(ref.f_model.double().mean().item())
    idx = resample_indices(n, n_boot=n_boot, seed=seed)
    for role in ROLES:
        per_t = [p.roles[role].double() for p in profiles]  # [layer, head, batch]
        ref_lo, ref_hi = interval(per_t[reference][..., idx].mean(-1).movedim(-1, 0))
        for t, p in enumerate(profiles):
            value = per_t[t].mean(-1)
            lo, hi = interval(per_t[t][..., idx].mean(-1).movedim(-1, 0))
            flip = ((ref_lo > 0) & (hi < 0)) | ((ref_hi < 0) & (lo > 0))
            if t:
                diff = per_t[t] - per_t[t - 1]
                d_lo, d_hi = interval(diff[..., idx].mean(-1).movedim(-1, 0))
                changed = ((d_lo > 0) | (d_hi < 0)) & (diff.mean(-1).abs() >= CHANGE_MIN * scale)
            else:
                changed = torch.zeros_like(flip)
            roles += _role_rows(p.label, role, value, lo, hi, flip, changed)
    for p in profiles:
        nan = torch.full_like(p.copy, float("nan"))
        no = torch.zeros_like(p.copy, dtype=torch.bool)
        roles += _role_rows(p.label, "copy_score", p.copy, nan, nan, no, no)
    return {"overlap": pd.DataFrame(rows), "changes": pd.DataFrame(changes), "roles": pd.DataFrame(roles)}


def _suffixed(est: dict[str, float]) -> dict[str, float]:
    return {"": est["value"], "_lo": est["lo"], "_hi": est["hi"]}


def _set_jaccard(a: Tensor, b: Tensor) -> float:
    return _rows_jaccard(a[None], b[None])[0].item()


def _heads_of(p: CheckpointProfile, inc: Tensor, mask: Tensor) -> set[str]:
    n_heads = p.copy.shape[1]
    touched = ((mask.double() @ inc.double()) > 0).nonzero().flatten().tolist()
    return {f"{k // n_heads}.{k % n_heads}" for k in touched}
