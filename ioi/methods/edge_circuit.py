"""The edge circuit: the smallest set of top-scoring edges that reaches a stated faithfulness.

Edges are ranked by |score| (exact edge patching, or the EAP / EAP-IG estimate); the circuit with k
edges keeps the k best and patches every other edge to the ABC run
(:func:`ioi.methods.edge_sets.edge_set_logit_diffs`). Its faithfulness is F(circuit)/F(M), 0 for no
edge (≈ F(ABC)/F(M)) and 1 for all of them. The curve of faithfulness against k is measured on a
geometric grid of k; the circuit is the smallest k found reaching the target: the first grid point
that reaches it, narrowed by bisection down to the previous grid point (so it is exact where the
curve rises monotonically between the two). The bisection tries 8 points a round at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import torch

from ioi.methods.analyses import AnalysisResult, heads_frame, register_analysis
from ioi.methods.edge_attribution import edge_attribution, rank_correlation
from ioi.methods.edge_sets import edge_set_logit_diffs
from ioi.methods.edges import EdgeRuns, edge_graph, edge_runs, exact_edge_scores
from ioi.methods.patching import prepare
from ioi.methods.stats import Estimate, ratio_defined, ratio_estimate
from ioi.models.load import LoadedModel
from ioi.task.data import IOIBatch
from ioi.task.types import EdgeValues

DEFAULT_FAITHFULNESS = 0.8
"""The faithfulness an edge circuit must reach unless told otherwise."""
METHODS = ("exact", "eap", "eap-ig")


@dataclass(frozen=True)
class EdgeCircuit:
    """The greedy edge circuit and the curve it was read from.

    edges: the kept edges, best first; curve: {k: faithfulness}; faithfulness: the circuit's, with
    its paired-bootstrap interval over prompts; reached: whether any k reached `target`."""

    edges: tuple[str, ...]
    target: float
    faithfulness: Estimate
    reached: bool
    curve: dict[int, float] = field(default_factory=dict)

    @property
    def nodes(self) -> frozenset[str]:
        """The components the circuit's edges join: "embed", "L.H", "mlpL", "logits"."""
        out = set()
        for e in self.edges:
            sender, receiver = e.split("->")
            out |= {sender, receiver.rsplit(".", 1)[0] if receiver.count(".") == 2 else receiver}
        return frozenset(out)


def _faithfulness_of(model, clean, runs: EdgeRuns, order: torch.Tensor, ks: list[int]) -> torch.Tensor:
    """[len(ks), batch] logit differences of the circuits keeping the first k edges of `order`."""
    masks = torch.ones(len(ks), len(order), dtype=torch.bool)
    for row, k in enumerate(ks):
        masks[row, order[:k]] = False
    return edge_set_logit_diffs(model, clean, runs, masks)


def greedy_edge_circuit(
    model: LoadedModel,
    clean: IOIBatch,
    abc: IOIBatch,
    scores: EdgeValues,
    *,
    target: float = DEFAULT_FAITHFULNESS,
    points: int = 24,
    runs: EdgeRuns | None = None,
    seed: int = 0,
) -> EdgeCircuit:
    """The smallest prefix of the edges ranked by |`scores`| whose faithfulness reaches `target`
    (see the module docstring); the whole graph when none does (reached False). No edge on a model
    that does not do the task (F(M) not a usable denominator, `ratio_defined`): a ratio over ~0
    would pick edges by noise. Its faithfulness is then undefined, with the reason."""
    runs = runs or edge_runs(model, clean, abc)
    graph = edge_graph(model)
    n = len(graph.edges)
    order = scores.abs().argsort(descending=True, stable=True)
    f_m = runs.acts.ld_clean
    if reason := ratio_defined(f_m.double().cpu(), seed=seed):
        return EdgeCircuit((), target, Estimate.undefined(reason, f"prompts (n={f_m.numel()})"), False, {})
    grid = sorted({0, n, *(round(x) for x in torch.logspace(0, math.log10(n), points).tolist())})
    per_prompt = dict(zip(grid, _faithfulness_of(model, clean, runs, order, grid), strict=True))
    mean_m = f_m.double().mean().item()
    curve = {k: f.double().mean().item() / mean_m for k, f in per_prompt.items()}
    reached = [k for k in grid if curve[k] >= target]
    if not reached:
        best = n
    else:
        hi = reached[0]
        lo = max([k for k in grid if k < hi], default=0)
        while hi - lo > 1:  # up to 8 interior points a round, evaluated together
            mids = sorted({lo + (hi - lo) * (i + 1) // 9 for i in range(8)} - {lo, hi})
            for k, f in zip(mids, _faithfulness_of(model, clean, runs, order, mids), strict=True):
                per_prompt[k], curve[k] = f, f.double().mean().item() / mean_m
            lo = max([k for k in mids if curve[k] < target], default=lo)
            hi = min([k for k in mids if curve[k] >= target and k > lo], default=hi)
        best = hi
    f_c = per_prompt[best]
    estimate = ratio_estimate(f_c.double().cpu(), f_m.double().cpu(), seed=seed)
    edges = tuple(graph.names[i] for i in order[:best].tolist())
    return EdgeCircuit(edges, target, estimate, bool(reached), dict(sorted(curve.items())))


def edge_scores(
    model: LoadedModel,
    clean: IOIBatch,
    abc: IOIBatch,
    method: str = "exact",
    *,
    steps: int = 5,
    runs: EdgeRuns | None = None,
) -> EdgeValues:
    """Every edge's score by `method`: "exact" edge patching, "eap" or "eap-ig" (`steps` points)."""
    if method == "exact":
        return exact_edge_scores(model, clean, abc, runs=runs)
    if method in ("eap", "eap-ig"):
        return edge_attribution(model, clean, abc, steps=1 if method == "eap" else steps)
    raise ValueError(f"edge scoring method must be one of {', '.join(METHODS)}, got {method!r}")


@register_analysis("edges")
def edges_analysis(
    model: LoadedModel,
    clean: IOIBatch,
    abc: IOIBatch,
    *,
    other=None,
    method: str = "exact",
    steps: int = 5,
    faithfulness: float = DEFAULT_FAITHFULNESS,
    points: int = 24,
    compare: bool = False,
    seed: int = 0,
) -> AnalysisResult:
    """Table `edges`: every edge (sender, receiver, score in logits, rank, in_circuit); table
    `curve`: faithfulness against the number of edges kept; summary: the circuit's size and
    faithfulness (interval over prompts), F(M), F(ABC); with `compare` (or method exact and
    compare) the rank correlation of the estimate with exact edge patching. Heads rows: value =
    the largest |score| of an edge into or out of the head; `in_circuit` whether a circuit edge
    touches it."""
    acts = prepare(model, clean, abc)
    runs = edge_runs(model, clean, abc, acts)
    scores = edge_scores(model, clean, abc, method, steps=steps, runs=runs)
    summary: dict = {
        "scoring": method,  # not "method": AnalysisResult.to_json puts the analysis's name there
        "steps": steps if method == "eap-ig" else None,
        "f_model": acts.f_clean,
        "f_abc": acts.f_abc,
        "target": faithfulness,
    }
    if compare and method != "exact":
        exact = exact_edge_scores(model, clean, abc, runs=runs)
        summary["rank_correlation_with_exact"] = rank_correlation(scores, exact)
    graph = edge_graph(model)
    circuit = greedy_edge_circuit(
        model, clean, abc, scores, target=faithfulness, points=points, runs=runs, seed=seed
    )
    summary |= {
        "n_edges_total": len(graph.edges),
        "n_edges": len(circuit.edges),
        "reached": circuit.reached,
        "circuit_edges": list(circuit.edges),
        "nodes": sorted(circuit.nodes),
    }
    summary |= circuit.faithfulness.columns("faithfulness") | {
        "interval_over": circuit.faithfulness.over,
        "ratio_undefined": circuit.faithfulness.reason,
    }
    kept = set(circuit.edges)
    order = scores.abs().argsort(descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    edges = pd.DataFrame(
        {
            "edge": list(graph.names),
            "sender": [graph.senders[i] for i, _ in graph.edges],
            "receiver": [graph.receivers[j] for _, j in graph.edges],
            "score": scores.double().tolist(),
            "rank": rank.tolist(),
            "in_circuit": [e in kept for e in graph.names],
        }
    )
    curve = pd.DataFrame({"n_edges": list(circuit.curve), "faithfulness": list(circuit.curve.values())})
    touch = torch.zeros(model.n_layers, model.n_heads, dtype=torch.float64)
    inside = torch.zeros(model.n_layers, model.n_heads, dtype=torch.float64)
    for (i, j), name, s in zip(graph.edges, graph.names, scores.abs().tolist(), strict=True):
        for node in (graph.senders[i], graph.receivers[j]):
            parts = node.split(".")
            if len(parts) >= 2 and parts[0].isdigit():
                layer, head = int(parts[0]), int(parts[1])
                touch[layer, head] = max(touch[layer, head].item(), s)
                inside[layer, head] = max(inside[layer, head].item(), float(name in kept))
    heads = heads_frame(touch, in_circuit=inside)
    return AnalysisResult("edges", heads, summary, {"edges": edges, "curve": curve})
