"""The paper's findings judged on the cached results: `findings(roots)` for the Findings page and the
report (one call, so both show the same numbers).

A study is, for one model and one training seed, the clean run, each toxic run and the reversal of
each (see :mod:`ioi.runs.precompute`). Each finding is judged per seed by the pure functions of
:mod:`ioi.methods.verdicts` — prompt intervals from the paired bootstrap stored in the cache — and
then across seeds: it holds when it holds on every seed, and the seeds' mean with a t interval is
reported beside the first seed's numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ioi.methods.analyses import AnalysisResult
from ioi.methods.stats import Estimate, difference_estimate, ratio_estimate
from ioi.methods.verdicts import (
    Verdict,
    amplification,
    circuit_overlap,
    cmap_gap,
    cmap_group_share,
    combine_seeds,
    edge_revival,
    fmt,
    holds_word,
    ioi_label_share,
    largest_outside_head,
    localized_corruption,
    mlps,
    neuroplasticity,
    row_estimate,
    seeds_estimate,
)
from ioi.runs.cache import load_analysis, load_entry
from ioi.runs.catalog import ExperimentInfo, list_experiments, write_verdicts
from ioi.runs.compare import COMPARE_FAMILY
from ioi.task.circuit import Circuit

__all__ = ["Estimate", "SeedStudy", "Verdict", "find_studies", "findings", "store_findings"]


@dataclass(frozen=True)
class SeedStudy:
    """The cached experiments of one model and one training seed."""

    root: Path
    model: str
    seed: int
    clean: ExperimentInfo
    toxic: dict[str, ExperimentInfo]
    reversal: dict[str, ExperimentInfo]

    @property
    def last(self) -> int:
        """The clean run's last cached epoch."""
        return max(self.clean.epochs)


STUDY_DESIGN = ("train_size", "eval_size", "analysis_size", "lr", "weight_decay", "batch_size")
"""The settings the seeds of one study share: runs with other values are other studies."""


def find_studies(root: str | Path, model: str) -> list[SeedStudy]:
    """Every seed's study of `model` in the cache at `root`, by seed, from the finished runs of one
    design (`STUDY_DESIGN`: the one whose clean runs cover the most seeds, then the most runs), so
    a throwaway run with other sizes is not read as another seed; the clean run of a seed is its
    longest one. A seed without a clean run is left out."""
    # only finished runs: a run still training has early epochs cached but not its last one
    exps = [
        e for e in list_experiments(root) if e.config.get("model") == model and e.config["epochs"] in e.epochs
    ]
    design = lambda e: tuple(e.config.get(k) for k in STUDY_DESIGN)  # noqa: E731
    cleans = [e for e in exps if e.config["scenario"] == "clean"]
    seeds = {d: len({e.config.get("seed", 0) for e in cleans if design(e) == d}) for d in map(design, cleans)}
    designs = set(seeds)
    chosen = max(designs, key=lambda d: (seeds[d], sum(design(e) == d for e in exps)), default=None)
    exps = [e for e in exps if design(e) == chosen]
    by_id = {e.id: e for e in exps}
    out = []
    for seed in sorted({e.config.get("seed", 0) for e in exps}):
        mine = [e for e in exps if e.config.get("seed", 0) == seed]
        clean = [e for e in mine if e.config["scenario"] == "clean"]
        if not clean:
            continue
        toxic = {e.config["scenario"]: e for e in mine if e.config["scenario"] not in ("clean", "reversal")}
        reversal = {
            by_id[e.config["parent"]].config["scenario"]: e
            for e in mine
            if e.config["scenario"] == "reversal" and e.config.get("parent") in by_id
        }
        longest = max(clean, key=lambda e: max(e.epochs))
        out.append(SeedStudy(Path(root), model, seed, longest, toxic, reversal))
    return out


def studied_models(root: str | Path) -> list[str]:
    """Models with a cached clean run under `root`."""
    return sorted({e.config["model"] for e in list_experiments(root) if e.config["scenario"] == "clean"})


def analysis(study: SeedStudy, exp: ExperimentInfo, epoch: int, name: str) -> AnalysisResult | None:
    return load_analysis(study.root, exp.id, epoch, name)


def _view(page: str, exp: ExperimentInfo, epoch: int) -> dict[str, str]:
    return {"page": page, "exp": exp.id, "epoch": str(epoch)}


def tally(verdicts: list[Verdict]) -> str:
    """'holds on 2, is undetermined on 1': how a finding fared over several checkpoints."""
    words = (("holds", True), ("fails", False), ("is undetermined", None))
    counts = {w: sum(v.holds is h for v in verdicts) for w, h in words}
    return ", ".join(f"{w} on {n}" for w, n in counts.items() if n)


def lead(v: Verdict) -> str:
    """What a finding's summary is about: "Amplification", "Localized corruption (name_moving)"."""
    name = "'MLPs contribute little'" if v.finding == "mlp" else v.finding.capitalize()
    return f"{name} ({v.scope})" if v.scope else name


def _across(per_seed: list[Verdict], studies: list[SeedStudy], keys: list[str], what: str) -> Verdict:
    """The first seed's verdict with the seeds' means of `keys` added and the holds of every seed;
    its summary opens with the verdict across seeds, then quotes the first seed's own."""
    first = per_seed[0]
    numbers = dict(first.numbers)
    for key in keys:
        values = [v.numbers[key].value for v in per_seed if key in v.numbers]
        numbers[f"{key} (seeds)"] = seeds_estimate(values)
    seeds = ", ".join(str(s.seed) for s in studies)
    holds = combine_seeds([v.holds for v in per_seed])
    spread = "; ".join(f"{k} {fmt(numbers[f'{k} (seeds)'])}" for k in keys)
    summary = (
        f"{lead(first)} {holds_word(holds)} over seeds {seeds} (it {tally(per_seed)}). Seed "
        f"{studies[0].seed} ({what}): {first.summary}{f' Across seeds: {spread}.' if spread else ''}"
    )
    return replace(first, holds=holds, numbers=numbers, summary=summary)


def _amplification_at(s: SeedStudy, epoch: int) -> Verdict | None:
    result = analysis(s, s.clean, epoch, "cmap")
    if result is None:
        return None
    head, outside = largest_outside_head(result)
    v = amplification(cmap_gap(result), cmap_group_share(result, "circuit (all classes)"), outside, head)
    return replace(v, view=_view("cmap", s.clean, epoch))


def amplification_verdict(studies: list[SeedStudy]) -> Verdict | None:
    """The first seed at its last clean checkpoint, every seed at the last clean epoch they all
    have (the across-seed numbers); holds when it holds on all of them."""
    common = min(s.last for s in studies)
    headline = _amplification_at(studies[0], studies[0].last)
    per_seed = [_amplification_at(s, common) for s in studies]
    if headline is None or any(v is None for v in per_seed):
        return None
    numbers = dict(headline.numbers)
    for key in ("gain", "circuit share"):
        numbers[f"{key} at epoch {common} (seeds)"] = seeds_estimate([v.numbers[key].value for v in per_seed])
    seeds = ", ".join(str(s.seed) for s in studies)
    share, gain = (numbers[f"{k} at epoch {common} (seeds)"] for k in ("circuit share", "gain"))
    holds = combine_seeds([v.holds for v in [headline, *per_seed]])
    summary = (
        f"Amplification {holds_word(holds)} over {len(per_seed) + 1} checkpoints (it "
        f"{tally([headline, *per_seed])}). Seed {studies[0].seed} at epoch {studies[0].last}: "
        f"{headline.summary} At epoch {common}, which every seed ({seeds}) has, the circuit share "
        f"across seeds is {fmt(share)} of a gain of {fmt(gain)} logits."
    )
    return replace(headline, holds=holds, numbers=numbers, summary=summary)


def seed_runs(studies: list[SeedStudy], kind: str, dataset: str) -> list[tuple[SeedStudy, ExperimentInfo]]:
    """(study, experiment) of every seed that ran `dataset` as `kind` ("toxic" or "reversal")."""
    return [(s, getattr(s, kind)[dataset]) for s in studies if dataset in getattr(s, kind)]


def corruption_verdicts(studies: list[SeedStudy]) -> list[Verdict]:
    out = []
    for dataset in studies[0].toxic:
        per_seed = []
        for s, exp in seed_runs(studies, "toxic", dataset):
            result = analysis(s, exp, max(exp.epochs), "cmap")
            if result is None:
                continue
            classes = result.tables["classes"]
            shares = {c: cmap_group_share(result, c) for c in classes[classes["kind"] == "class"]["class"]}
            share = cmap_group_share(result, "circuit (all classes)")
            labels = ioi_label_share(dataset)
            v = localized_corruption(
                dataset, cmap_gap(result), share, shares, labels, largest_outside_head(result)
            )
            per_seed.append(replace(v, view=_view("cmap", exp, max(exp.epochs))))
        if per_seed:
            epochs = max(studies[0].toxic[dataset].epochs)
            out.append(_across(per_seed, studies, ["toxic change in F", "circuit share"], f"epoch {epochs}"))
    return out


def _prompts(study: SeedStudy, exp: ExperimentInfo, epoch: int) -> AnalysisResult | None:
    return analysis(study, exp, epoch, "faithfulness")


def faithfulness_estimate(result: AnalysisResult) -> Estimate:
    s = result.summary
    if s.get("faithfulness") is None or math.isnan(s["faithfulness"]):
        return Estimate.undefined(s.get("ratio_undefined", "undefined"), s.get("interval_over", ""))
    return Estimate(s["faithfulness"], s["faithfulness_lo"], s["faithfulness_hi"], s["interval_over"])


def prompt_f(result: AnalysisResult) -> torch.Tensor:
    """F(M) per prompt ([prompt]) from a faithfulness entry."""
    return torch.tensor(result.tables["prompts"]["f_model"].to_numpy())


def circuit_heads(result: AnalysisResult) -> list[str]:
    return [str(h) for h in Circuit.from_json(result.summary["circuit"]).heads]


def neuroplasticity_verdicts(studies: list[SeedStudy]) -> list[Verdict]:
    out = []
    for dataset in studies[0].reversal:
        per_seed = []
        for s, exp in seed_runs(studies, "reversal", dataset):
            toxic = s.toxic.get(dataset)
            after, before = _prompts(s, exp, max(exp.epochs)), _prompts(s, s.clean, 0)
            hurt = _prompts(s, toxic, max(toxic.epochs)) if toxic is not None else None
            if after is None or before is None or hurt is None:
                continue
            # the same prompts (one seed, one eval set): paired ratios
            damage, recovery = (ratio_estimate(prompt_f(r), prompt_f(before)) for r in (hurt, after))
            share = circuit_overlap(circuit_heads(before), circuit_heads(after))
            overlap = (
                Estimate(share, share, share, "exact (two sets of heads)")
                if not math.isnan(share)
                else Estimate.undefined("the pretrained model has no circuit: it does not do the task")
            )
            v = neuroplasticity(dataset, damage, recovery, faithfulness_estimate(after), overlap)
            per_seed.append(replace(v, view=_view("faithfulness", exp, max(exp.epochs))))
        if per_seed:
            epochs = max(studies[0].reversal[dataset].epochs)
            keys = ["toxic share of F", "recovered share of F", "faithfulness",
                    "pretrained heads found again"]  # fmt: skip
            out.append(_across(per_seed, studies, keys, f"after {epochs} clean epochs"))
    return out


def mlp_rows(result: AnalysisResult) -> dict[str, Estimate]:
    table = result.tables["mlps"].set_index("ablated")
    over, reason = result.summary.get("interval_over", ""), result.summary.get("ratio_undefined", "")
    cols = ("relative", "relative_lo", "relative_hi")
    return {n: row_estimate(table.loc[n], *cols, over, reason) for n in table.index}


def mlp_verdict(studies: list[SeedStudy]) -> Verdict | None:
    per_seed = []
    for s in studies:
        later, first = {}, {}
        for label, epoch in (("pretrained", 0), (f"clean epoch {s.last}", s.last)):
            result = _prompts(s, s.clean, epoch)
            if result is None or "mlps" not in result.tables:
                return None
            rows = mlp_rows(result)
            later[label] = rows.get("MLPs 1+", Estimate.undefined("one-layer model"))
            first[label] = rows["MLP 0"]
        per_seed.append(replace(mlps(later, first), view=_view("faithfulness", s.clean, 0)))
    keys = [k for k in per_seed[0].numbers if k.startswith("MLPs 1+") and "pretrained" in k]
    return _across(per_seed, studies, keys, "pretrained and last clean checkpoint")


def jaccard_at(result, scenario: str, epoch: int | None = None) -> float | None:
    """The edge Jaccard (against the first checkpoint) of the lineage's checkpoint of `scenario`
    (its last one, or at `epoch`); None when the lineage has no such checkpoint."""
    s, overlap = result.summary, result.tables["overlap"]
    rows = [i for i, (sc, ep) in enumerate(zip(s["scenarios"], s["epochs"], strict=True))
            if sc == scenario and (epoch is None or ep == epoch) and ep > 0]  # fmt: skip
    return float(overlap.iloc[rows[-1]]["edge_jaccard"]) if rows else None


def revival_pair(result: AnalysisResult) -> tuple[str, float, float] | None:
    """(toxic dataset, edge Jaccard of the toxic model's circuit, of the reversal's) from a
    lineage comparison (pretrained → toxic → reversal); None when it has no reversal checkpoint."""
    scenarios = result.summary["scenarios"]
    if "reversal" not in scenarios:
        return None
    toxic, rev = jaccard_at(result, scenarios[0]), jaccard_at(result, "reversal")
    return None if toxic is None or rev is None else (scenarios[0], toxic, rev)


def edge_revivals(results: list[AnalysisResult]) -> list[Verdict]:
    """Per toxic dataset, `edge_revival` over the seeds whose lineage comparison is among `results`."""
    by_dataset: dict[str, list[tuple[float, float]]] = {}
    for dataset, toxic, rev in filter(None, map(revival_pair, results)):
        by_dataset.setdefault(dataset, []).append((toxic, rev))
    return [edge_revival(d, [t for t, _ in v], [x for _, x in v]) for d, v in sorted(by_dataset.items())]


def lineage_comparisons(studies: list[SeedStudy]) -> list[tuple[SeedStudy, ExperimentInfo, AnalysisResult]]:
    """Each toxic run's cached lineage comparison (`python -m ioi compare --family`), first seed first."""
    runs = [(s, exp) for s in studies for exp in s.toxic.values()]
    found = [(s, exp, analysis(s, exp, max(exp.epochs), COMPARE_FAMILY)) for s, exp in runs]
    return [(s, exp, r) for s, exp, r in found if r is not None]


def lineage_verdicts(studies: list[SeedStudy]) -> list[Verdict]:
    """The edge revival of each toxic dataset's reversal over the seeds' lineage comparisons; none
    where no seed has one. Each links to the Evolution page on the first seed's comparison among
    those it was judged from."""
    used = [(exp, r) for _, exp, r in lineage_comparisons(studies) if revival_pair(r) is not None]
    first: dict[str, str] = {}
    for exp, r in used:
        first.setdefault(r.summary["scenarios"][0], exp.id)
    return [
        replace(v, view={"page": "evolution", "exp": first[v.scope.removeprefix("reversal of ")],
                         "scope": COMPARE_FAMILY})
        for v in edge_revivals([r for _, r in used])
    ]  # fmt: skip


def study_verdicts(studies: list[SeedStudy]) -> list[Verdict]:
    """Every finding judged on one model's studies (first seed first)."""
    if not studies:
        return []
    found = [
        amplification_verdict(studies),
        *corruption_verdicts(studies),
        *neuroplasticity_verdicts(studies),
    ]
    found.append(mlp_verdict(studies))
    return [v for v in found if v is not None]


def all_verdicts(studies: list[SeedStudy]) -> list[Verdict]:
    """The report's verdict lines and, where lineage comparisons are cached, each reversal's edge
    revival (the report's timeline): every finding the Findings page shows for one model."""
    return [*study_verdicts(studies), *lineage_verdicts(studies)]


def findings(roots: list[Path]) -> list[Verdict]:
    """Every finding on every model studied in the caches at `roots`."""
    return [v for root in roots for m in studied_models(root) for v in all_verdicts(find_studies(root, m))]


def verdict_json(v: Verdict, model: str = "") -> dict:
    """A verdict as JSON; each number also as the report writes it (`text`: 3 decimals, interval);
    `model` says whose studies it was judged on (a cache may hold several models')."""
    numbers = {k: e.to_json() | {"text": fmt(e, 3)} for k, e in v.numbers.items()}
    return {"finding": v.finding, "scope": v.scope, "holds": v.holds, "criterion": v.criterion,
            "summary": v.summary, "numbers": numbers, "view": v.view, "model": model}  # fmt: skip


def store_findings(root: str | Path) -> list[Verdict]:
    """Judge the findings on the results cached at `root` and store them there
    (:func:`ioi.runs.catalog.write_verdicts`), so the Findings page only reads them."""
    judged = [(m, v) for m in studied_models(Path(root)) for v in all_verdicts(find_studies(Path(root), m))]
    write_verdicts(root, [verdict_json(v, m) for m, v in judged])
    return [v for _, v in judged]


def name_split_gap(study: SeedStudy, exp: ExperimentInfo, epoch: int) -> Estimate | None:
    """F on fine-tuning (seen) names minus F on held-out names at a checkpoint, with its interval."""
    entry = load_entry(study.root, exp.id, epoch, "metrics")
    if entry is None or "prompts" not in entry.tables:
        return None
    p = entry.tables["prompts"]
    seen = torch.tensor(p[p["names"] == "seen"]["logit_diff"].to_numpy())
    held = torch.tensor(p[p["names"] == "held-out"]["logit_diff"].to_numpy())
    return difference_estimate(seen, held)
