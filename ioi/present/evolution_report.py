"""The report's timeline section: what the comparison across checkpoints (ioi.runs.compare) shows,
written from the cached "compare" / "compare-family" entries, every number with its interval."""

from __future__ import annotations

import math

import pandas as pd

from ioi.methods.recovery import in_pretrained_state
from ioi.methods.stats import NO_TASK
from ioi.methods.verdicts import fmt, seeds_estimate, within
from ioi.present.findings import SeedStudy, analysis, edge_revivals, jaccard_at, lineage_comparisons
from ioi.runs.compare import COMPARE, lineage_reversal


def _ci(value: float, lo: float, hi: float) -> str:
    if any(isinstance(x, float) and math.isnan(x) for x in (value, lo, hi)):
        return "undefined"
    return f"{value:.2f} [{lo:.2f}, {hi:.2f}]"


def _overlap_table(overlap: pd.DataFrame) -> list[str]:
    lines = [
        "| checkpoint | F(M) | edges | edge Jaccard | node Jaccard | faithfulness "
        "| stability (self-Jaccard) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in overlap.to_dict("records"):
        stable = "stable" if r["stable"] else "not stable"
        stability = (f"{r['stability']:.2f} (5th pct. {r['stability_p05']:.2f}; {stable})" if r["n_edges"]
                     else "undefined (no circuit: the model does not do the task)")  # fmt: skip
        lines.append(
            f"| {r['checkpoint']} | {_ci(r['f_model'], r['f_model_lo'], r['f_model_hi'])} | {r['n_edges']} "
            f"| {_ci(r['edge_jaccard'], r['edge_jaccard_lo'], r['edge_jaccard_hi'])} "
            f"| {_ci(r['node_jaccard'], r['node_jaccard_lo'], r['node_jaccard_hi'])} "
            f"| {_ci(r['faithfulness'], r['faithfulness_lo'], r['faithfulness_hi'])} "
            f"| {stability} |"
        )
    return lines


def _changes(result) -> list[str]:
    t = result.tables
    roles = t["roles"]
    moved = roles[roles["changed"]]
    flips = roles[roles["sign_flip"]]
    lines = []
    for r in t["changes"].to_dict("records")[1:]:
        lines.append(
            f"- {r['checkpoint']}: heads entering {r['heads_entering'] or 'none'}, leaving "
            f"{r['heads_leaving'] or 'none'}; {len(r['edges_entering'].split())} edges entering, "
            f"{len(r['edges_leaving'].split())} leaving."
        )
    if moved.empty:
        lines.append(
            "- No head's role score (DLA, direct path, S-inhibition) changed between consecutive "
            "checkpoints by an interval that excludes 0 and at least 5% of F(M)."
        )
    else:
        for r in moved.to_dict("records"):
            lines.append(
                f"- {r['role']} of {r['layer']}.{r['head']} changed at {r['checkpoint']}, to "
                f"{_ci(r['value'], r['lo'], r['hi'])}."
            )
    lines.append(
        f"- Sign flips against the first checkpoint: {len(flips)}"
        + (
            ": "
            + ", ".join(
                f"{r['role']} of {r['layer']}.{r['head']} at {r['checkpoint']}"
                for r in flips.to_dict("records")
            )
            if len(flips)
            else ""
        )
        + "."
    )
    tr = t["transfer"]
    first, last = result.summary["checkpoints"][0], result.summary["checkpoints"][-1]
    cell = tr[(tr["circuit_of"] == first) & (tr["model"] == last)].iloc[0]
    back = tr[(tr["circuit_of"] == last) & (tr["model"] == first)].iloc[0]
    lines.append(
        f"- Transfer: the circuit of {first} on the model of {last} keeps faithfulness "
        f"{_transfer_cell(cell)}; the circuit of {last} on {first}: {_transfer_cell(back)}."
    )
    return lines


def _transfer_cell(r: dict) -> str:
    """A transfer cell: faithfulness with its interval or, where the model does not do the task, the
    marker and the circuit's own logit difference there (older entries: "undefined")."""
    if not r.get("undefined") or "f_circuit" not in r:
        return _ci(r["value"], r["lo"], r["hi"])
    f_c = _ci(r["f_circuit"], r["f_circuit_lo"], r["f_circuit_hi"])
    return f"{NO_TASK} (F(M) = {r['f_model']:.2f}; F(circuit) = {f_c} logits)"


def transfer_table(transfer: pd.DataFrame, order: list[str]) -> list[str]:
    """The transfer matrix as markdown: row = whose circuit, column = which model."""
    cells = {(r["circuit_of"], r["model"]): r for r in transfer.to_dict("records")}
    lines = [
        "| circuit of \\ on the model of | " + " | ".join(order) + " |",
        "| --- |" + " ---: |" * len(order),
    ]
    for a in order:
        lines.append(f"| {a} | " + " | ".join(_transfer_cell(cells[(a, b)]) for b in order) + " |")
    return lines


def timeline_section(studies: list[SeedStudy]) -> list[str]:
    """The markdown lines of the section (none when no study has a cached comparison)."""
    found = []
    for s in studies:  # per seed: the clean run's comparison, then its toxic runs' lineages
        clean = analysis(s, s.clean, max(s.clean.epochs), COMPARE)
        found += [(s, clean)] if clean is not None else []
        found += [(s, r) for _, _, r in lineage_comparisons([s])]
    if not found:
        return []
    lines = [
        "## The circuit across checkpoints (timeline)",
        "",
        "Generated from the cached comparisons (`python -m ioi compare --experiment ID [--family]`). Each "
        "checkpoint's edge circuit is the fewest edges, ranked by exact edge patching, reaching 80% "
        "faithfulness (other edges patched to the ABC run); Jaccard indices are against the first "
        "checkpoint, with 95% paired-bootstrap intervals over the analysis prompts (each resample keeps "
        "each checkpoint's number of top edges); stability is the bootstrap self-Jaccard (Méloux et al. "
        "2025: stable at ≥ 0.8 over ≥ 100 resamples). Nodes are the heads the edges touch.",
        "",
    ]
    for s, r in found:
        lines += [
            f"### Seed {s.seed}: {' → '.join(r.summary['checkpoints'])}",
            "",
            f"{r.summary['n_prompts']} prompts, {r.summary['resamples']} resamples.",
            "",
            *_overlap_table(r.tables["overlap"]),
            "",
            "Transfer faithfulness F_j(circuit i)/F_j(M), 95% paired-bootstrap intervals. Where model j "
            f"does not do the task the ratio is not defined and the cell says so ({NO_TASK}: "
            "|F_j(M)| < 0.5 logits, or its interval contains 0) with F_j(circuit i) itself in logits.",
            "",
            *transfer_table(r.tables["transfer"], r.summary["checkpoints"]),
            "",
            *_changes(r),
            *_recovery(s, r),
            "",
        ]
    return lines + across_seeds_lines([r for _, r in found]) + revival_lines(found)


def across_seeds_lines(results: list) -> list[str]:
    """The timeline's across-seed lines: the clean run's edge Jaccard at the last epoch every seed
    has, and each reversal's edge revival verdict with its criterion."""
    clean = [r for r in results if set(r.summary["scenarios"]) == {"clean"}]
    revivals = edge_revivals(results)
    if not clean and not revivals:
        return []
    lines = ["### Across seeds", ""]
    if clean:
        common = min(max(r.summary["epochs"]) for r in clean)
        values = [v for r in clean if (v := jaccard_at(r, "clean", common)) is not None]
        lines.append(
            f"- Clean fine-tuning, epoch {common}: edge Jaccard with the pretrained edge circuit "
            f"{fmt(within(seeds_estimate(values), 0.0, 1.0))} ({len(values)} seed{'s' * (len(values) != 1)})."
        )
    for v in revivals:
        lines.append(f"- {v.summary}")
    if revivals:
        lines += ["", f"Criterion: {revivals[0].criterion}."]
    return lines + [""]


def _recovery(study: SeedStudy, r) -> list[str]:
    """The recovery dynamics of the lineage's reversal, when cached."""
    from ioi.runs.cache import load_analysis

    rev = lineage_reversal(r.summary)
    dyn = load_analysis(study.root, *rev, "recovery") if rev else None
    if dyn is None:
        return []
    d, pts = dyn.summary, dyn.tables["points"]
    f0, base = d["pretrained_logit_diff"], d["baseline_jaccard"]
    rev = pts[pts.run == "reversal"].sort_values("step")
    tox = pts[pts.run == "toxic"].sort_values("step")
    end = rev.iloc[-1]
    revive = d["steps_to_revive"]
    out = [
        f"- Recovery (snapshots every {d['every']} steps, top-{d['n_edges']} edges by exact edge patching): "
        "the "
        f"toxic run takes F from {tox.iloc[0]['logit_diff']:.2f} to {tox.iloc[-1]['logit_diff']:.2f} and the "
        f"Jaccard with the pretrained circuit to {tox.iloc[-1]['jaccard']:.2f}; the reversal ends at step "
        f"{int(end['step'])} with F {_ci(end['logit_diff'], end['lo'], end['hi'])} (pretrained "
        f"{_ci(f0['value'], f0['lo'], f0['hi'])}) and Jaccard {end['jaccard']:.2f}, against "
        f"{_ci(base['value'], base['lo'], base['hi'])} for random edge sets of the same size and layers. "
        + (
            f"Steps to revive: {revive}."
            if revive is not None
            else f"It does not revive within the run (F inside the pretrained interval and Jaccard ≥ "
            f"{d['jaccard_floor']:.2f}, the pretrained circuit's own 5th-percentile self-Jaccard)."
        )
    ]
    m = dyn.tables["matched"]
    if len(m):
        gap = (m["jaccard_reversal"] - m["jaccard_toxic"]).mean()
        out.append(
            f"- At matched logit difference ({m.logit_diff.min():.2f}–{m.logit_diff.max():.2f}), the "
            f"reversal's overlap minus the toxic run's averages {gap:+.2f} (0: the same path back)."
        )
    return out


def revival_tally(dataset: str, steps: list[int | None], left: list[bool]) -> str:
    """'Recovery dynamics of the reversal of X: the toxic run left the pretrained state on k of n
    seeds; the reversal revived within the run on m (at steps …).'"""
    back = sorted(s for s in steps if s is not None)
    at = f" (at step{'s' * (len(back) > 1)} {', '.join(map(str, back))})" if back else ""
    return (
        f"- Recovery dynamics of the reversal of {dataset}: the toxic run left the pretrained state on "
        f"{sum(left)} of {len(steps)} seed{'s' * (len(steps) != 1)}; the reversal revived within the run "
        f"on {len(back)}{at}."
    )


def revival_lines(found: list) -> list[str]:
    """Per toxic dataset, how many seeds' cached recovery dynamics revived (criterion: F inside the
    pretrained interval and the top edges' Jaccard at or above the pretrained circuit's 5th-percentile
    self-Jaccard, both at one snapshot)."""
    from ioi.runs.cache import load_analysis

    steps: dict[str, list[int | None]] = {}
    left: dict[str, list[bool]] = {}
    for study, r in found:
        rev = lineage_reversal(r.summary)
        dyn = load_analysis(study.root, *rev, "recovery") if rev else None
        if dyn is not None:
            d, pts = dyn.summary, dyn.tables["points"]
            end = pts[pts.run == "toxic"].sort_values("step").iloc[-1:]
            f0 = d["pretrained_logit_diff"]
            out = not in_pretrained_state(end, (f0["lo"], f0["hi"]), d["jaccard_floor"]).iloc[0]
            dataset = r.summary["scenarios"][0]
            steps.setdefault(dataset, []).append(d["steps_to_revive"])
            left.setdefault(dataset, []).append(bool(out))
    if not steps:
        return []
    return [
        *(revival_tally(d, v, left[d]) for d, v in sorted(steps.items())),
        "",
        "The pretrained state: F inside the pretrained interval and the top edges' Jaccard with the "
        "pretrained circuit at or above its own 5th-percentile bootstrap self-Jaccard. The toxic run left "
        "it when its last snapshot is outside; the reversal revived at the first snapshot back inside.",
        "",
    ]
