"""Recovery dynamics of a reversal: how fast the logit difference and the circuit come back.

Every k training steps of the toxic run (forward from the pretrained model) and of the reversal
(from the toxic model back), a snapshot of the model is measured on the analysis prompts: its
logit difference with a bootstrap interval, and the Jaccard index of its top edges (by exact edge
patching; as many as the pretrained edge circuit has) with the pretrained edge circuit.

*Steps to revive*: the first reversal step at which both are back — the logit difference inside the
pretrained model's interval and the Jaccard at least the pretrained circuit's own bootstrap floor
(the 5th percentile of its self-Jaccard). *Matched path*: the two runs' Jaccard interpolated at the
same logit differences, so degradation and recovery are compared where the model does the task
equally well (a gap is hysteresis). *Baseline*: the Jaccard with the pretrained circuit of random
edge sets of the same size drawn with the same (sender layer, receiver layer) counts — what overlap
chance alone gives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ioi.methods.edges import EdgeGraph, edge_runs, exact_edge_scores
from ioi.methods.evolution import jaccard
from ioi.methods.patching import prepare
from ioi.methods.stats import Estimate, interval, mean_estimate
from ioi.models.load import LoadedModel
from ioi.task.data import IOIBatch


def snapshot(
    model: LoadedModel, clean: IOIBatch, abc: IOIBatch, graph: EdgeGraph, reference: set[str]
) -> dict:
    """{logit_diff, lo, hi, jaccard}: the snapshot's F(M) with its interval and the Jaccard of its
    len(reference) top edges with `reference`."""
    acts = prepare(model, clean, abc)
    scores = exact_edge_scores(model, clean, abc, runs=edge_runs(model, clean, abc, acts))
    top = {graph.names[i] for i in scores.abs().argsort(descending=True)[: len(reference)].tolist()}
    f = mean_estimate(acts.ld_clean.cpu())
    return {"logit_diff": f.value, "lo": f.lo, "hi": f.hi, "jaccard": jaccard(top, reference)}


def _layer(node: str) -> int:
    """The layer a node writes or reads at (embed -1, logits a large number)."""
    if node == "embed":
        return -1
    if node == "logits":
        return 10**6
    return int(node.removeprefix("mlp").split(".")[0])


def random_edge_baseline(
    graph: EdgeGraph, reference: set[str], *, n_draws: int = 1000, seed: int = 0
) -> Estimate:
    """Jaccard with `reference` of random edge sets with its (sender layer, receiver layer) counts."""
    groups: dict[tuple[int, int], list[str]] = {}
    for (i, j), name in zip(graph.edges, graph.names, strict=True):
        groups.setdefault((_layer(graph.senders[i]), _layer(graph.receivers[j])), []).append(name)
    want = {k: sum(e in reference for e in v) for k, v in groups.items()}
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_draws):
        pick = set()
        for k, n in want.items():
            if n:
                pick |= set(rng.choice(groups[k], size=n, replace=False).tolist())
        draws.append(jaccard(pick, reference))
    x = torch.tensor(draws, dtype=torch.float64)
    lo, hi = interval(x[:, None])
    return Estimate(x.mean().item(), lo.item(), hi.item(), f"random edge sets ({n_draws} draws)")


def in_pretrained_state(
    points: pd.DataFrame, ld_range: tuple[float, float], jaccard_floor: float
) -> pd.Series:
    """Per snapshot (columns logit_diff, jaccard): the logit difference inside `ld_range` and the
    Jaccard ≥ `jaccard_floor`, the state a reversal revives to."""
    return points.logit_diff.between(*ld_range) & (points.jaccard >= jaccard_floor)


def steps_to_revive(points: pd.DataFrame, ld_range: tuple[float, float], jaccard_floor: float) -> int | None:
    """The first step of `points` (columns step, logit_diff, jaccard) with the logit difference in
    `ld_range` and the Jaccard ≥ `jaccard_floor`; None if the run never gets there."""
    ok = points[in_pretrained_state(points, ld_range, jaccard_floor)].sort_values("step")
    return int(ok.iloc[0]["step"]) if len(ok) else None


def matched_path(toxic: pd.DataFrame, reversal: pd.DataFrame, n: int = 12) -> pd.DataFrame:
    """Both runs' Jaccard interpolated on `n` logit differences inside both runs' ranges."""
    lo = max(toxic.logit_diff.min(), reversal.logit_diff.min())
    hi = min(toxic.logit_diff.max(), reversal.logit_diff.max())
    if not lo < hi:
        return pd.DataFrame(columns=["logit_diff", "jaccard_toxic", "jaccard_reversal"])
    grid = np.linspace(lo, hi, n)

    def at(run: pd.DataFrame) -> np.ndarray:
        r = run.sort_values("logit_diff")
        return np.interp(grid, r.logit_diff.to_numpy(), r.jaccard.to_numpy())

    return pd.DataFrame({"logit_diff": grid, "jaccard_toxic": at(toxic), "jaccard_reversal": at(reversal)})
