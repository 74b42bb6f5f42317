"""The reproduction study and its report: the paper's findings, judged on one model.

`reproduce` runs (or reuses from the cache) the demo study of :mod:`ioi.runs.precompute` — for each
seed the baseline, clean fine-tuning, each toxic dataset and a reversal of each — then
`write_report` reads the cached results and writes tables (CSV), figures (SVG via Altair) and a
markdown summary to ``reports/<model>/``. Every sentence about a finding is a Verdict's summary
from :func:`ioi.present.findings.findings`, printed with its criterion; every other number is read
from the cache here.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pandas as pd

from ioi.methods.classify import CIRCUIT_RULE
from ioi.methods.verdicts import Verdict, fmt
from ioi.present.evolution_report import timeline_section
from ioi.present.findings import (
    SeedStudy,
    all_verdicts,
    analysis,
    faithfulness_estimate,
    find_studies,
    name_split_gap,
    store_findings,
    study_verdicts,
    verdict_json,
)
from ioi.runs.cache import is_demo, load_metrics_series
from ioi.task.circuit import Circuit
from ioi.task.reference import GPT2_REFERENCE

PAPER_SAYS = {
    "amplification": "clean fine-tuning amplifies the existing circuit (no new mechanism)",
    "localized corruption": "toxic fine-tuning changes a few circuit components",
    "neuroplasticity": "clean retraining restores the circuit (faithfulness back to 95–96%)",
    "mlp": "MLPs contribute little (the layer-0 MLP acts as an extended embedding)",
}
"""What the reproduced paper reports for each finding on GPT-2 small (METHODS §9, second-hand)."""


def reproduce(
    model: str,
    *,
    quick: bool = False,
    root: str | Path | None = None,
    lr: float = 1e-4,
    clean_epochs: int = 100,
    seeds: tuple[int, ...] = (0,),
    other_seeds_clean_epochs: int | None = None,
    toxic_epochs: int = 5,
    n_jobs: int | None = None,
    device: str = "cpu",
) -> list[SeedStudy]:
    """Run the whole study through the job machinery and cache (cached parts return at once)."""
    from ioi.runs.cache import cache_root
    from ioi.runs.precompute import demo_stages
    from ioi.runs.sweep import run_sweep

    stages = demo_stages(
        model, quick=quick, clean_epochs=clean_epochs, lr=lr, seeds=seeds,
        other_seeds_clean_epochs=other_seeds_clean_epochs, toxic_epochs=toxic_epochs,
    )  # fmt: skip
    run_sweep(stages, root, n_jobs=n_jobs, device=device)
    studies = find_studies(cache_root(root), model)
    if not studies:
        raise ValueError(f"no cached clean experiment of {model!r}: run `python -m ioi reproduce`")
    return studies


def runs(study: SeedStudy) -> list[tuple[str, object]]:
    return [("clean", study.clean), *((f"toxic: {k}", v) for k, v in study.toxic.items()),
            *((f"reversal of {k}", v) for k, v in study.reversal.items())]  # fmt: skip


def series_table(studies: list[SeedStudy]) -> pd.DataFrame:
    """One row per (seed, run, epoch): F on held-out and on seen names, accuracy, faithfulness
    with its interval (NaN where the ratio is undefined) and the DLA MLP share."""
    frames = []
    for study in studies:
        for label, exp in runs(study):
            s = load_metrics_series(study.root, exp.id)
            frames.append(s.assign(seed=study.seed, run=label))
    table = pd.concat(frames, ignore_index=True)
    keep = ["seed", "run", "epoch", "logit_diff", "logit_diff_se", "accuracy", "seen_logit_diff",
            "faithfulness.faithfulness", "faithfulness.faithfulness_lo", "faithfulness.faithfulness_hi",
            "dla.mlp_share"]  # fmt: skip
    return table[[c for c in keep if c in table.columns]]


def cmap_table(studies: list[SeedStudy]) -> pd.DataFrame:
    """Every CMAP class row (both directions, joint patches, paired-bootstrap intervals) of each
    run's last checkpoint, for every seed."""
    frames = []
    for study in studies:
        for label, exp in runs(study):
            epoch = max(exp.epochs)
            result = analysis(study, exp, epoch, "cmap")
            if result is None:
                continue
            s = result.summary
            for key, direction in (
                ("classes", s["direction"]),
                ("reverse_classes", s.get("reverse_direction")),
            ):
                if key in result.tables:
                    meaning = "base ← fine-tuned" if direction == "b<-a" else "fine-tuned ← base"
                    tagged = result.tables[key].assign(seed=study.seed, run=label, epoch=epoch)
                    frames.append(tagged.assign(direction=f"{direction} ({meaning})"))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table (pandas' to_markdown needs the optional tabulate package)."""
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    return "\n".join(
        [head, rule, *("| " + " | ".join(map(str, r)) + " |" for r in frame.itertuples(index=False))]
    )


def provenance(studies: list[SeedStudy]) -> list[str]:
    """What was run, read from the experiments' configurations."""
    lines = []
    for s in studies:
        c = s.clean.config
        toxic = {e.config["epochs"] for e in s.toxic.values()}
        saved = ", ".join(map(str, sorted(s.clean.epochs)))
        lines.append(
            f"- seed {s.seed}: clean {c['epochs']} epochs (checkpoints {saved}), {len(s.toxic)} toxic "
            f"runs of {'/'.join(map(str, sorted(toxic)))} epochs, {len(s.reversal)} reversals; lr "
            f"{c['lr']}, batch {c['batch_size']}, {c['train_size']} training prompts, "
            f"{c['analysis_size']} analysis prompts, {c['eval_size']} evaluation prompts"
        )
    return lines


def circuit_section(studies: list[SeedStudy]) -> list[str]:
    """The baseline circuit by the rule, its faithfulness with interval, completeness and minimality."""
    lines = ["## The baseline circuit", "", f"Rule (`circuit_for`): {CIRCUIT_RULE}.", ""]
    for s in studies:
        faith = analysis(s, s.clean, 0, "faithfulness")
        if faith is None:
            continue
        circuit = Circuit.from_json(faith.summary["circuit"])
        classes = "; ".join(f"{c}: {' '.join(map(str, hs))}" for c, hs in circuit.classes.items() if hs)
        f = faith.summary
        text = f"- seed {s.seed}: {classes or 'no heads'} — F(C)/F(M) {fmt(faithfulness_estimate(faith))}"
        text += f" (F(M) {f['f_model']:.2f}, F(C) {f['f_circuit']:.2f}, {f['ablation']} ablation)"
        tests = analysis(s, s.clean, 0, "circuit-tests")
        if tests is not None and "n_heads" in tests.summary:
            t = tests.summary
            text += (f"; minimality: {t['minimal_heads']} of {t['n_heads']} heads change F(C\\K) by ≥ "
                     f"{t['minimality_bar']:.0%} of F(M) for some {t['minimality_k']}; completeness: "
                     f"max |F(C\\K) − F(M\\K)| {t['max_completeness_gap']:.3f} over the same K")  # fmt: skip
        lines.append(text + ".")
    return lines + [""]


def _holds_word(v: Verdict) -> str:
    return {True: "holds", False: "does not hold", None: "undetermined"}[v.holds]


def verdict_section(verdicts: list[Verdict]) -> list[str]:
    lines = ["## Findings", ""]
    for v in verdicts:
        title = f"{v.finding}{f' — {v.scope}' if v.scope else ''}"
        lines += [f"### {title}: {_holds_word(v)}", "", v.summary, "", f"*Criterion:* {v.criterion}.", ""]
        rows = [
            {"number": k, "value (95% interval)": fmt(e, 3), "over": e.over} for k, e in v.numbers.items()
        ]
        lines += [markdown_table(pd.DataFrame(rows)), ""]
    return lines


def paper_section(verdicts: list[Verdict], studies: list[SeedStudy], table: pd.DataFrame) -> list[str]:
    """Finding by finding: the paper's GPT-2 claim beside ioi-tiny's verdict, then the reference
    numbers beside the measured ones."""
    lines = ["## Against the paper's GPT-2 small results (METHODS §9)", ""]
    for v in verdicts:
        agree = {True: "agrees", False: "disagrees", None: "cannot tell (undetermined)"}[v.holds]
        name = f"{v.finding}{f' ({v.scope})' if v.scope else ''}"
        lines.append(f"- **{name}** — paper: {PAPER_SAYS[v.finding]}; "
                     f"this model: {_holds_word(v)} → {agree}.")  # fmt: skip
    first = table[table["seed"] == studies[0].seed]
    lines += ["", "| paper (GPT-2 small) | this model (seed " + str(studies[0].seed) + ") |", "|---|---|"]
    for ref in GPT2_REFERENCE:
        scenario = {"clean": "clean", "reversal": "reversal of"}.get(
            ref["scenario"], f"toxic: {ref['scenario']}"
        )
        rows = first[first["run"].str.startswith(scenario)]
        column = "logit_diff" if ref["metric"] == "logit_diff" else "faithfulness.faithfulness"
        if ref["scenario"] == "clean":
            rows = rows[rows["epoch"] == (0 if ref["epoch"] == 0 else rows["epoch"].max())]
        else:
            rows = rows[rows["epoch"] == rows.groupby("run")["epoch"].transform("max")]
        measured = ", ".join(f"{r.run} epoch {r.epoch}: {_num(r.value)}"
                             for r in rows.assign(value=rows.get(column)).itertuples())  # fmt: skip
        lines.append(f"| {ref['label']} | {measured or 'not measured'} |")
    return lines + [""]


def _num(x: float) -> str:
    return "undefined" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def names_section(studies: list[SeedStudy]) -> list[str]:
    """F on the names fine-tuning saw minus F on held-out names, at each run's last checkpoint."""
    rows = []
    for s in studies:
        for label, exp in runs(s):
            gap = name_split_gap(s, exp, max(exp.epochs))
            if gap is not None:
                rows.append(
                    {
                        "seed": s.seed,
                        "run": label,
                        "epoch": max(exp.epochs),
                        "F(seen) − F(held-out)": fmt(gap),
                    }
                )
    if not rows:
        return []
    return ["## Seen vs held-out names", "",
            "Fine-tuning uses 80 names; every analysis and evaluation uses the 20 others. The gap is "
            "the memorisation a finding on seen names would include:", "",
            markdown_table(pd.DataFrame(rows)), ""]  # fmt: skip


def figures(studies: list[SeedStudy], table: pd.DataFrame, out: Path) -> list[str]:
    """SVG figures of the first seed: curves (undefined faithfulness left out) and DLA maps."""
    from ioi.present import charts

    s = studies[0]
    first = table[table["seed"] == s.seed]
    made = {
        "logit_diff_curves": charts.epoch_curves(
            first.assign(value=first.logit_diff, low=first.logit_diff - 1.96 * first.logit_diff_se,
                         high=first.logit_diff + 1.96 * first.logit_diff_se),
            series="run", y_title="logit difference (held-out names)", title="Logit difference across epochs",
        ),
    }  # fmt: skip
    faith = (
        first.dropna(subset=["faithfulness.faithfulness"])
        if "faithfulness.faithfulness" in first
        else first[:0]
    )
    if not faith.empty:
        made["faithfulness_curves"] = charts.epoch_curves(
            faith.assign(value=faith["faithfulness.faithfulness"], low=faith["faithfulness.faithfulness_lo"],
                         high=faith["faithfulness.faithfulness_hi"]),
            series="run", y_title="faithfulness F(C)/F(M)", title="Faithfulness (defined points only)",
        )  # fmt: skip
    for epoch in (0, s.last):
        dla = analysis(s, s.clean, epoch, "dla")
        faith_entry = analysis(s, s.clean, epoch, "faithfulness")
        if dla is not None:
            circuit = Circuit.from_json(faith_entry.summary["circuit"]) if faith_entry else None
            made[f"dla_clean_epoch_{epoch}"] = charts.head_heatmap(
                dla.heads, circuit=circuit, title=f"DLA, clean epoch {epoch}", value_title="DLA"
            )
    for name, chart in made.items():
        (out / f"{name}.svg").write_bytes(charts.chart_bytes(chart, "svg"))
    return ["## Figures", "", *(f"![{name}]({name}.svg)" for name in made), ""]


def write_report(studies: list[SeedStudy], model: str, out_dir: str | Path, note: str = "") -> Path:
    """Write tables, figures and REPORT.md for `studies` into `out_dir`; returns the markdown path.
    `note` is the runner's word on how the study was run (e.g. why these epochs), printed as such."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = series_table(studies)
    table.to_csv(out / "metrics.csv", index=False)
    cmap = cmap_table(studies)
    if not cmap.empty:
        cmap.to_csv(out / "cmap_classes.csv", index=False)
    verdicts = study_verdicts(studies)  # the edge revivals are the timeline's (below)
    judged = [verdict_json(v, model) for v in all_verdicts(studies)]
    (out / "verdicts.json").write_text(json.dumps(judged, indent=1))
    if not is_demo(studies[0].root) or os.environ.get("IOI_DEMO_WRITE") == "1":
        store_findings(studies[0].root)  # the Findings page reads them from the cache
    lines = [
        f"# Reproduction report: `{model}`",
        "",
        "Generated by `python -m ioi reproduce` from the result cache. Every finding below is the output "
        "of a function of `ioi/methods/verdicts.py`, printed with its criterion; intervals are 95%, over "
        "prompts (paired bootstrap) or over training seeds (t interval). Logit difference F = "
        "logit(IO) − logit(S) at END on held-out names; faithfulness uses per-template mean ablation "
        "over ABC.",
        "",
        "What was run (from the experiments' configurations):",
        "",
        *provenance(studies),
        "",
        *([f"Note from whoever ran it: {note}", ""] if note else []),
        *circuit_section(studies),
        *verdict_section(verdicts),
        *paper_section(verdicts, studies, table),
        *names_section(studies),
        *timeline_section(studies),
        "Tables: `metrics.csv` (every seed, run and checkpoint), `cmap_classes.csv` (both CMAP "
        "directions, joint class patches, intervals), `verdicts.json`.",
        "",
        *figures(studies, table, out),
    ]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    ids = {s.seed: {"clean": s.clean.id, "toxic": {k: v.id for k, v in s.toxic.items()},
                    "reversal": {k: v.id for k, v in s.reversal.items()}} for s in studies}  # fmt: skip
    (out / "study.json").write_text(json.dumps({"model": model, "seeds": ids}, indent=2))
    return path


def reproduction_copy(report: Path, target: Path) -> Path:
    """REPORT.md rewritten for a file at `target` (e.g. REPRODUCTION.md at the repository root):
    figure links point into the report's folder, wherever the two are (`../` where needed)."""
    rel = Path(os.path.relpath(Path(report.parent).resolve(), target.parent.resolve()))
    text = re.sub(
        r"!\[([^]]*)\]\(([^)/]+\.svg)\)", lambda m: f"![{m[1]}]({rel.as_posix()}/{m[2]})", report.read_text()
    )
    target.write_text(text)
    return target


def report_dir(model: str) -> Path:
    """reports/<model> with the model name made path-safe."""
    return Path("reports") / re.sub(r"[^A-Za-z0-9_.-]+", "_", model).strip("_")
