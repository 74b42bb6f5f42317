"""Matrices across the checkpoints of a family: transfer faithfulness and CMAP.

Transfer faithfulness T[i, j]: the edge circuit found at checkpoint i, evaluated on the model of
checkpoint j (every other edge patched to the ABC run; :func:`ioi.methods.edge_sets.edge_set_logit_diffs`),
as F_j(circuit i)/F_j(M), with a paired-bootstrap interval over prompts. Its diagonal is each
circuit's faithfulness in its own model; a circuit that still explains a later model has a high
entry in that column. Where model j does not do the task (F_j(M) ≈ 0: |F_j(M)| < 0.5 logits, or
its interval contains 0) the ratio is not defined: its cells say so (stats.NO_TASK) and carry
F_j(circuit i) in logits instead, which is still measured.

CMAP C[i, j]: model j run with the heads of a fixed circuit (the reference checkpoint's node
circuit) taking their END outputs from model i (:func:`ioi.methods.cmap.cmap`, patched jointly),
as the change of F in logits and as a share of the gap F(i) − F(j) (NaN where the two models barely
differ: the diagonal).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ioi.methods.cmap import cmap, summarize
from ioi.methods.edge_sets import edge_set_logit_diffs
from ioi.methods.edges import EdgeRuns, edge_graph, edge_runs
from ioi.methods.patching import Activations, prepare
from ioi.methods.stats import NO_TASK, bootstrap_means, interval, ratio_defined, ratio_intervals
from ioi.models.load import LoadedModel
from ioi.task.circuit import Head
from ioi.task.data import IOIBatch


def transfer_faithfulness(
    models: Sequence[LoadedModel],
    circuits: Sequence[Sequence[str]],
    clean: IOIBatch,
    abc: IOIBatch,
    *,
    runs: Sequence[EdgeRuns] | None = None,
    seed: int = 0,
) -> dict:
    """[circuit i, model j] tensors "value", "lo", "hi": F_j(circuit i)/F_j(M); "f_circuit",
    "f_circuit_lo", "f_circuit_hi": F_j(circuit i) itself (logits, always defined); "f_model":
    F_j(M). "undefined" [i][j] text: "" or, for every cell of a column whose model does not do the
    task (:func:`ioi.methods.stats.ratio_defined`: |F_j(M)| < 0.5 logits, or its interval
    contains 0), NO_TASK and why — the ratio is NaN there and F_j(circuit i) is the honest value.
    `runs`: each model's edge runs on these batches (:func:`ioi.methods.edges.edge_runs`; default
    computed here)."""
    nan = torch.full((len(circuits), len(models)), float("nan"), dtype=torch.float64)
    out = {
        k: nan.clone() for k in ("value", "lo", "hi", "f_circuit", "f_circuit_lo", "f_circuit_hi", "f_model")
    }
    undefined = [[""] * len(models) for _ in circuits]
    for j, model in enumerate(models):
        graph = edge_graph(model)
        masks = torch.ones(len(circuits), len(graph.edges), dtype=torch.bool)
        for i, edges in enumerate(circuits):
            masks[i, [graph.index(e) for e in edges]] = False
        run = runs[j] if runs is not None else edge_runs(model, clean, abc, prepare(model, clean, abc))
        f = edge_set_logit_diffs(model, clean, run, masks).double().cpu()  # [circuit, batch]
        f_m = run.acts.ld_clean.double().cpu()
        out["f_circuit"][:, j] = f.mean(-1)
        out["f_circuit_lo"][:, j], out["f_circuit_hi"][:, j] = interval(bootstrap_means(f, seed=seed))
        out["f_model"][:, j] = f_m.mean()
        reason = ratio_defined(f_m, seed=seed)
        if reason:
            for row in undefined:
                row[j] = f"{NO_TASK} (F(M) = {f_m.mean().item():.2f} logits; {reason})"
            continue
        out["value"][:, j], out["lo"][:, j], out["hi"][:, j] = ratio_intervals(f, f_m, seed=seed)
    return out | {"undefined": undefined}


def cmap_matrix(
    models: Sequence[LoadedModel],
    heads: Sequence[Head],
    clean: IOIBatch,
    *,
    acts: Sequence[Activations] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """[source i, receiver j] tensors "value", "lo", "hi", "share": the change of F when model j's
    `heads` take their END outputs from model i (logits; share of the gap F(i) − F(j)); text
    [i][j] "undefined" (why a value is NaN: no heads to patch) and "share_undefined" (why a share
    is: the diagonal, or a gap too small, :func:`ioi.methods.cmap.summarize`). `acts`: each model's
    clean run on `clean` (:func:`ioi.methods.patching.prepare`), read once instead of once per pair."""
    n = len(models)
    out: dict = {
        k: torch.full((n, n), float("nan"), dtype=torch.float64) for k in ("value", "lo", "hi", "share")
    }
    if not heads:
        why = "not defined: no circuit heads to patch (the reference checkpoint's model does not do the task)"
        return out | {
            "undefined": [[why] * n for _ in range(n)],
            "share_undefined": [[why] * n for _ in range(n)],
        }
    out["undefined"] = [[""] * n for _ in range(n)]
    out["share_undefined"] = [[""] * n for _ in range(n)]
    for i, source in enumerate(models):
        for j, receiver in enumerate(models):
            if i == j:
                out["value"][i, j] = out["lo"][i, j] = out["hi"][i, j] = 0.0
                out["share_undefined"][i][j] = "not defined: a model with itself has no gap F(i) − F(j)"
                continue
            reads = (acts[j], acts[i]) if acts is not None else None
            r = cmap(receiver, source, clean, groups=[list(heads)], reads=reads)
            s = summarize(r.joint, r.f_source - r.f_receiver, n_boot=n_boot, seed=seed)
            out["value"][i, j], out["lo"][i, j] = s.value[0], s.ci_low[0]
            out["hi"][i, j], out["share"][i, j] = s.ci_high[0], s.share[0]
            out["share_undefined"][i][j] = f"not defined: {s.share_undefined}" if s.share_undefined else ""
    return out
