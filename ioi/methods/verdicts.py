"""The reproduced paper's findings as code: each is a pure function with a stated criterion that
turns measured numbers (with their intervals) into a verdict.

A verdict is True when the criterion holds with its intervals, False when the intervals rule it
out, and None (undetermined) when an interval straddles a threshold or a ratio is undefined. The
report's and the Findings page's sentences come from these results, so every claim names the
rule it was judged by. The inputs are Estimates read from cached analyses (see
:mod:`ioi.present.findings`); the helpers at the end read them from an AnalysisResult.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from ioi.methods.analyses import AnalysisResult
from ioi.methods.stats import MIN_DENOMINATOR, Estimate, across_seeds, mean_estimate

AMPLIFICATION_SHARE = 0.5
OUTSIDE_MAX_SHARE = 0.2
LOCALIZED_SHARE = 0.5
RECOVERY = 0.8
REVERSAL_FAITHFULNESS = 0.8
REVERSAL_OVERLAP = 0.8
MLP_MAX_CHANGE = 0.1


@dataclass(frozen=True)
class Verdict:
    """One finding judged by its criterion (see the module docstring); `scope` says which run it is
    about (e.g. a toxic dataset), `view` the query parameters of the page that shows it."""

    finding: str
    holds: bool | None
    criterion: str
    numbers: dict[str, Estimate]
    summary: str
    view: dict[str, str] = field(default_factory=dict)
    scope: str = ""


def at_least(x: Estimate, bar: float) -> bool | None:
    """True if x's interval is wholly ≥ bar, False if wholly below, None if it straddles or x is
    undefined."""
    if not x.defined:
        return None
    return True if x.lo >= bar else False if x.hi < bar else None


def at_most(x: Estimate, bar: float) -> bool | None:
    """True if x's interval is wholly ≤ bar, False if wholly above, None otherwise."""
    if not x.defined:
        return None
    return True if x.hi <= bar else False if x.lo > bar else None


def all_of(parts: Sequence[bool | None]) -> bool | None:
    """False if any part is False, True if every part is True, None otherwise."""
    return False if any(p is False for p in parts) else True if all(p is True for p in parts) else None


def combine_seeds(holds: Sequence[bool | None]) -> bool | None:
    """A finding holds across seeds when it holds on every seed, fails when it fails on every one."""
    if not holds:
        return None
    return True if all(h is True for h in holds) else False if all(h is False for h in holds) else None


def fmt(x: Estimate, digits: int = 2) -> str:
    """'0.84 [0.71, 0.95]', or 'undefined (reason)'."""
    if not x.defined:
        return f"undefined ({x.reason})" if x.reason else "undefined"
    return f"{x.value:.{digits}f} [{x.lo:.{digits}f}, {x.hi:.{digits}f}]"


def holds_word(holds: bool | None) -> str:
    """ "holds", "does not hold" or "is undetermined": the verb a summary opens with."""
    return {True: "holds", False: "does not hold", None: "is undetermined"}[holds]


def outside_words(head: str, share: Estimate) -> str:
    """The largest head outside a circuit and its share of the gap, as a sentence writes it:
    "head 0.7 (share 0.10 [0.08, 0.12])", or "none" when no head is outside it."""
    return "none" if head == "none" else f"head {head} (share {fmt(share)})"


AMPLIFICATION_CRITERION = (
    f"amplification holds when clean fine-tuning raises F by ≥ {MIN_DENOMINATOR} logits (interval above "
    f"0), the pretrained circuit's heads patched jointly from the fine-tuned model into the pretrained "
    f"one (CMAP, base ← fine-tuned, at END) carry ≥ {AMPLIFICATION_SHARE:.0%} of that gain (interval "
    f"lower bound), and no head outside that circuit carries more than {OUTSIDE_MAX_SHARE:.0%} alone "
    f"(interval upper bound)"
)


def amplification(
    gain: Estimate, circuit_share: Estimate, outside_max: Estimate, outside_head: str
) -> Verdict:
    """Amplification (the paper's clean fine-tuning finding) from CMAP base ← fine-tuned."""
    numbers = {
        "gain": gain,
        "circuit share": circuit_share,
        f"largest outside head ({outside_head})": outside_max,
    }
    if gain.defined and gain.value < MIN_DENOMINATOR:
        summary = f"Fine-tuning did not raise F (gain {fmt(gain)} logits): there is no gain to amplify."
        return Verdict("amplification", False, AMPLIFICATION_CRITERION, numbers, summary)
    holds = all_of([
        at_least(gain, 0.0),
        at_least(circuit_share, AMPLIFICATION_SHARE),
        at_most(outside_max, OUTSIDE_MAX_SHARE),
    ])  # fmt: skip
    summary = (
        f"Amplification {holds_word(holds)}: the pretrained circuit carries {fmt(circuit_share)} of the "
        f"{fmt(gain)}-logit gain; the largest head outside it: {outside_words(outside_head, outside_max)}."
    )
    return Verdict("amplification", holds, AMPLIFICATION_CRITERION, numbers, summary)


LOCALIZED_CRITERION = (
    f"a corruption is localized when it moves F by ≥ {MIN_DENOMINATOR} logits, the pretrained "
    f"circuit's heads, patched jointly from the toxic model into the pretrained one (CMAP, base ← "
    f"toxic, at END), carry ≥ {LOCALIZED_SHARE:.0%} of that change (interval lower bound), and no head "
    f"outside that circuit carries more than {OUTSIDE_MAX_SHARE:.0%} alone (interval upper bound)"
)


def localized_corruption(
    dataset: str,
    gap: Estimate,
    circuit_share: Estimate,
    class_shares: dict[str, Estimate],
    ioi_labels: float,
    outside: tuple[str, Estimate] = ("none", Estimate.undefined("no head outside the circuit")),
) -> Verdict:
    """Localized corruption (the paper's toxic fine-tuning finding) for one toxic dataset.
    `ioi_labels` is the share of its training labels that are the IOI answer anyway (the name
    mentioned once): near 1, the 'toxic' set is a relabelled clean set and a rise in F is by
    construction. `outside` is the head outside the circuit with the largest single-head share."""
    head, outside_max = outside
    numbers = {"toxic change in F": gap, "circuit share": circuit_share} | {
        f"{c} share": s for c, s in class_shares.items()
    }
    numbers[f"largest outside head ({head})"] = outside_max
    by_construction = (
        f" Its labels are the IOI answer on {ioi_labels:.0%} of its samples (a role-swapped clean set), "
        "so a rise in F is by construction, not evidence about the corruption."
        if ioi_labels >= 0.99
        else ""
    )
    if not gap.defined or abs(gap.value) < MIN_DENOMINATOR:
        summary = (
            f"{dataset}: the toxic run moved F by {fmt(gap)} logits; nothing to localize.{by_construction}"
        )
        return Verdict("localized corruption", None, LOCALIZED_CRITERION, numbers, summary, scope=dataset)
    outside_ok = at_most(outside_max, OUTSIDE_MAX_SHARE) if outside_max.defined else True
    holds = all_of([at_least(circuit_share, LOCALIZED_SHARE), outside_ok])
    top = max(
        class_shares, key=lambda c: abs(class_shares[c].value) if class_shares[c].defined else -1, default=""
    )
    top_text = f"; the largest class: {top} (share {fmt(class_shares[top])})" if top else ""
    summary = (
        f"{dataset}: localized corruption {holds_word(holds)}: F moves by {fmt(gap)} logits and the "
        f"pretrained circuit carries {fmt(circuit_share)} of it{top_text}; the largest head outside "
        f"the circuit: {outside_words(head, outside_max)}.{by_construction}"
    )
    return Verdict("localized corruption", holds, LOCALIZED_CRITERION, numbers, summary, scope=dataset)


NEUROPLASTICITY_CRITERION = (
    f"neuroplasticity holds when the toxic run left F below {RECOVERY:.0%} of the pretrained F (paired "
    f"interval upper bound: there was damage to restore; a toxic run that kept F at ≥ {RECOVERY:.0%} "
    f"leaves it undetermined) and clean retraining of the toxic model brings F back to ≥ {RECOVERY:.0%} "
    f"of the pretrained F (paired interval lower bound), the circuit found on the retrained model "
    f"has faithfulness ≥ {REVERSAL_FAITHFULNESS:.0%} (interval lower bound) and contains "
    f"≥ {REVERSAL_OVERLAP:.0%} of the pretrained circuit's heads (interval over seeds when there are "
    f"several)"
)


def neuroplasticity(
    dataset: str, damage: Estimate, recovery: Estimate, faithfulness: Estimate, overlap: Estimate
) -> Verdict:
    """Neuroplasticity (the paper's reversal finding) for the reversal of one toxic dataset; `damage`
    is the toxic model's F as a share of the pretrained F, `recovery` the retrained model's."""
    numbers = {
        "toxic share of F": damage,
        "recovered share of F": recovery,
        "faithfulness": faithfulness,
        "pretrained heads found again": overlap,
    }
    scope = f"reversal of {dataset}"
    after = (
        f"F back to {fmt(recovery)} of the pretrained F, faithfulness {fmt(faithfulness)}, "
        f"{fmt(overlap)} of the pretrained circuit's heads found again."
    )
    damaged = at_most(damage, RECOVERY)
    if damaged is False:
        summary = (
            f"Reversal of {dataset}: neuroplasticity is undetermined: the toxic run left F at "
            f"{fmt(damage)} of the pretrained F, so there was no damage to restore. After the reversal: "
            f"{after}"
        )
        return Verdict("neuroplasticity", None, NEUROPLASTICITY_CRITERION, numbers, summary, scope=scope)
    holds = all_of([
        damaged, at_least(recovery, RECOVERY), at_least(faithfulness, REVERSAL_FAITHFULNESS),
        at_least(overlap, REVERSAL_OVERLAP),
    ])  # fmt: skip
    summary = (
        f"Reversal of {dataset}: neuroplasticity {holds_word(holds)}: the toxic run left F at "
        f"{fmt(damage)} of the pretrained F; {after}"
    )
    return Verdict("neuroplasticity", holds, NEUROPLASTICITY_CRITERION, numbers, summary, scope=scope)


def within(x: Estimate, lo: float, hi: float) -> Estimate:
    """x with its interval cut to the range the quantity can take (a t interval over 3 seeds of a
    Jaccard index can reach past 1); `over` says so when it was cut."""
    if not x.defined or (x.lo >= lo and x.hi <= hi):
        return x
    return Estimate(x.value, max(x.lo, lo), min(x.hi, hi), f"{x.over}, cut to [{lo:g}, {hi:g}]", x.reason)


EDGE_REVIVAL_CRITERION = (
    "the reversal revives the pretrained edge circuit when its circuit's edge Jaccard with the "
    "pretrained circuit exceeds the toxic model's: the mean over seeds of Jaccard(reversal) − "
    "Jaccard(toxic) has its 95% t interval above 0 (below 0: it does not; one seed, or an interval "
    "containing 0: undetermined)"
)


def edge_revival(dataset: str, toxic: Sequence[float], reversal: Sequence[float]) -> Verdict:
    """Neuroplasticity at the level of edges, from each seed's edge Jaccard (against the pretrained
    edge circuit) of the toxic model's and of the reversal's circuit."""
    diff = seeds_estimate([r - t for t, r in zip(toxic, reversal, strict=True)])
    holds = None if not diff.excludes(0.0) else diff.lo > 0
    numbers = {
        "edge Jaccard, toxic": within(seeds_estimate(list(toxic)), 0.0, 1.0),
        "edge Jaccard, reversal": within(seeds_estimate(list(reversal)), 0.0, 1.0),
        "reversal − toxic": diff,
    }
    summary = (
        f"Reversal of {dataset}: the edge circuit's revival {holds_word(holds)}: edge Jaccard with the "
        f"pretrained circuit {fmt(numbers['edge Jaccard, toxic'])} after the toxic run, "
        f"{fmt(numbers['edge Jaccard, reversal'])} after the reversal (difference {fmt(diff)}, "
        f"{diff.over})."
    )
    return Verdict(
        "edge revival", holds, EDGE_REVIVAL_CRITERION, numbers, summary, scope=f"reversal of {dataset}"
    )


MLP_CRITERION = (
    f"MLPs contribute little when mean-ablating every MLP after layer 0 changes F by at most "
    f"{MLP_MAX_CHANGE:.0%} of F(M) (interval within ±{MLP_MAX_CHANGE:.0%}) in the pretrained and the "
    f"fine-tuned model; the layer-0 MLP (the paper: an extended embedding) is reported apart"
)


def mlps(later: dict[str, Estimate], first: dict[str, Estimate]) -> Verdict:
    """The paper's MLP finding: `later` / `first` map a model label ("pretrained", "clean epoch N")
    to the relative change of F with the MLPs after layer 0 / the layer-0 MLP ablated."""
    holds = all_of(
        [all_of([at_most(x, MLP_MAX_CHANGE), at_least(x, -MLP_MAX_CHANGE)]) for x in later.values()]
    )
    numbers = {f"MLPs 1+ ablated, {k}": v for k, v in later.items()} | {
        f"MLP 0 ablated, {k}": v for k, v in first.items()
    }
    parts = "; ".join(f"{k}: {fmt(v)}" for k, v in later.items())
    first_parts = "; ".join(f"{k}: {fmt(v)}" for k, v in first.items())
    summary = (
        f"'MLPs contribute little' {holds_word(holds)}. Relative change of F with every MLP after layer 0 "
        f"ablated — {parts}; with the layer-0 MLP ablated — {first_parts}."
    )
    return Verdict("mlp", holds, MLP_CRITERION, numbers, summary)


# --- reading the numbers from analysis results -----------------------------------------------------


def row_estimate(row: pd.Series, value: str, lo: str, hi: str, over: str, reason: str = "") -> Estimate:
    """An Estimate from a table row's columns (NaN value: undefined with `reason`)."""
    x = float(row[value])
    if math.isnan(x):
        return Estimate.undefined(reason or "undefined", over)
    return Estimate(x, float(row[lo]), float(row[hi]), over)


def cmap_over(result: AnalysisResult) -> str:
    n = int(result.tables["prompt_f"]["prompt"].nunique()) if "prompt_f" in result.tables else 0
    return f"prompts (paired bootstrap, n={n})"


def cmap_gap(result: AnalysisResult) -> Estimate:
    """F(source) − F(receiver) of the primary direction, with its bootstrap interval over prompts."""
    f = result.tables["prompt_f"]
    f = f[f["direction"] == result.summary["direction"]]
    return mean_estimate(torch.tensor((f["f_source"] - f["f_receiver"]).to_numpy()))


def cmap_group_share(result: AnalysisResult, group: str, *, reverse: bool = False) -> Estimate:
    """The share of the gap a group of the class table carries (joint patch), with its interval."""
    table = result.tables["reverse_classes" if reverse else "classes"].set_index("class")
    reason = result.summary.get("reverse_share_undefined" if reverse else "share_undefined", "")
    if group not in table.index:
        return Estimate.undefined(f"no {group!r} in this CMAP result", cmap_over(result))
    return row_estimate(
        table.loc[group], "share_of_gap", "share_ci_low", "share_ci_high", cmap_over(result), reason
    )


def largest_outside_head(result: AnalysisResult) -> tuple[str, Estimate]:
    """The head outside the circuit with the largest single-head share of the gap, and that share."""
    heads = result.heads
    outside = heads[heads["class"].isna() | (heads["class"] == "")]
    if outside.empty or outside["share_of_gap"].isna().all():
        return "none", Estimate.undefined(
            result.summary.get("share_undefined", "no share"), cmap_over(result)
        )
    row = outside.loc[outside["share_of_gap"].abs().idxmax()]
    head = f"{int(row['layer'])}.{int(row['head'])}"
    return head, row_estimate(row, "share_of_gap", "share_ci_low", "share_ci_high", cmap_over(result))


def circuit_overlap(pretrained: Sequence[str], found: Sequence[str]) -> float:
    """Share of the pretrained circuit's heads that are in `found` (NaN for an empty pretrained one)."""
    return len(set(pretrained) & set(found)) / len(set(pretrained)) if pretrained else math.nan


def seeds_estimate(values: Sequence[float]) -> Estimate:
    """Mean and t interval of a per-seed number (a single seed: its value with no interval)."""
    if len(values) == 1:
        return Estimate(values[0], math.nan, math.nan, "seeds (n=1)", "one seed: no interval")
    return across_seeds(values)


def ioi_label_share(corruption: str, n: int = 300) -> float:
    """Share of a toxic dataset's training samples whose label is the IOI answer anyway: a name
    the prompt mentions exactly once while another is mentioned twice."""
    import re

    from ioi.task.corruptions import corrupt
    from ioi.task.data import make_dataset
    from ioi.task.names import TRAIN_NAMES

    samples = corrupt(make_dataset(n, 0, "train", names=TRAIN_NAMES), corruption)
    hits = 0
    for x in samples:
        counts = {name: len(re.findall(rf"\b{name}\b", x.prompt)) for name in {x.io, x.s, x.s2, x.label}}
        hits += counts[x.label] == 1 and 2 in counts.values()
    return hits / len(samples)


def heads_carrying(result: AnalysisResult, share: float = OUTSIDE_MAX_SHARE) -> list[str]:
    """Heads whose single-head CMAP share of the gap has its interval lower bound ≥ `share`."""
    heads = result.heads.dropna(subset=["share_ci_low"])
    picked = heads[heads["share_ci_low"] >= share]
    return [f"{int(r.layer)}.{int(r.head)}" for r in picked.itertuples()]
