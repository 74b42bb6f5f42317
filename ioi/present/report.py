"""The reproduction study and its report: the paper's three findings, measured on one model.

`reproduce` runs (or reuses from the cache) the demo study of :mod:`ioi.runs.precompute` — baseline,
clean fine-tuning, each toxic dataset and a reversal of each — then `write_report` reads the cached
results and writes tables (CSV), figures (SVG via Altair) and a markdown summary to
``reports/<model>/``. Every number in the summary is computed here from the cache.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ioi.runs.cache import load_analysis, load_metrics_series
from ioi.runs.catalog import ExperimentInfo, list_experiments
from ioi.task.circuit import Circuit
from ioi.task.reference import GPT2_REFERENCE

TOP_K = 5


@dataclass(frozen=True)
class Study:
    """The cached experiments of one model: the clean run, toxic runs and reversals by corruption."""

    root: Path
    clean: ExperimentInfo
    toxic: dict[str, ExperimentInfo]
    reversal: dict[str, ExperimentInfo]


def find_study(root: str | Path, model: str) -> Study:
    """The latest complete study of `model` in the cache at `root`; ValueError if there is none."""
    exps = [e for e in list_experiments(root) if e.config.get("model") == model and e.epochs]
    by_id = {e.id: e for e in exps}
    clean = [e for e in exps if e.config["scenario"] == "clean"]
    if not clean:
        raise ValueError(f"no cached clean experiment of {model!r} in {root}: run `python -m ioi reproduce`")
    toxic = {e.config["scenario"]: e for e in exps if e.config["scenario"] not in ("clean", "reversal")}
    reversal = {
        by_id[e.config["parent"]].config["scenario"]: e
        for e in exps
        if e.config["scenario"] == "reversal" and e.config.get("parent") in by_id
    }
    return Study(Path(root), max(clean, key=lambda e: max(e.epochs)), toxic, reversal)


def reproduce(
    model: str,
    *,
    quick: bool = False,
    root: str | Path | None = None,
    lr: float = 1e-4,
    clean_epochs: int = 100,
    n_jobs: int | None = None,
    device: str = "cpu",
) -> Study:
    """Run the whole study through the job machinery and cache (cached parts return at once)."""
    from ioi.runs.precompute import demo_stages
    from ioi.runs.sweep import run_sweep

    stages = demo_stages(model, quick=quick, clean_epochs=clean_epochs, lr=lr)
    run_sweep(stages, root, n_jobs=n_jobs, device=device)
    from ioi.runs.cache import cache_root

    return find_study(cache_root(root), model)


def _dla(study: Study, exp: ExperimentInfo, epoch: int) -> pd.Series:
    result = load_analysis(study.root, exp.id, epoch, "dla")
    if result is None:
        return pd.Series(dtype=float)
    return result.heads.set_index(["layer", "head"])["value"]


def _circuit(study: Study, exp: ExperimentInfo, epoch: int) -> Circuit | None:
    for name in ("faithfulness", "knockout"):
        result = load_analysis(study.root, exp.id, epoch, name)
        if result is not None and "circuit" in result.summary:
            return Circuit.from_json(result.summary["circuit"])
    return None


def top_heads(dla: pd.Series, k: int = TOP_K) -> set[tuple[int, int]]:
    """The k heads with the largest |DLA|."""
    return set(dla.abs().sort_values(ascending=False).index[:k])


def series_table(study: Study) -> pd.DataFrame:
    """One row per (run, epoch) with logit difference, accuracy, faithfulness and MLP share."""
    runs = [
        ("clean", study.clean),
        *((f"toxic: {k}", v) for k, v in study.toxic.items()),
        *((f"reversal of {k}", v) for k, v in study.reversal.items()),
    ]
    frames = []
    for label, exp in runs:
        s = load_metrics_series(study.root, exp.id)
        s.insert(0, "run", label)
        frames.append(s)
    keep = [
        "run",
        "epoch",
        "logit_diff",
        "logit_diff_se",
        "accuracy",
        "faithfulness.faithfulness",
        "dla.mlp_share",
        "dla.head_share",
    ]
    table = pd.concat(frames, ignore_index=True)
    return table[[c for c in keep if c in table.columns]]


def cmap_class_sums(study: Study, exp: ExperimentInfo, epoch: int, circuit: Circuit) -> pd.DataFrame:
    """CMAP (this checkpoint ← the starting model's head outputs at END) summed over the baseline circuit's
    classes. The interval adds the per-head 95% half-widths: a conservative bound, since the
    per-prompt effects are not stored for a joint bootstrap."""
    result = load_analysis(study.root, exp.id, epoch, "cmap")
    if result is None:
        return pd.DataFrame()
    heads = result.heads.set_index(["layer", "head"])
    rows = []
    for cls, members in circuit.classes.items():
        sel = heads.loc[[tuple(h) for h in members if tuple(h) in heads.index]]
        if sel.empty:
            continue
        half = ((sel["ci_high"] - sel["ci_low"]) / 2).sum()
        rows.append(
            {
                "class": cls,
                "heads": " ".join(f"{layer}.{h}" for layer, h in sel.index),
                "value": sel["value"].sum(),
                "ci_low": sel["value"].sum() - half,
                "ci_high": sel["value"].sum() + half,
            }
        )
    rest = heads.drop(index=[tuple(h) for h in circuit.heads if tuple(h) in heads.index])
    rows.append(
        {
            "class": "(not in circuit)",
            "heads": f"{len(rest)} heads",
            "value": rest["value"].sum(),
            "ci_low": np.nan,
            "ci_high": np.nan,
        }
    )
    return pd.DataFrame(rows)


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table (pandas' to_markdown needs the optional tabulate package)."""
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    return "\n".join(
        [head, rule, *("| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False))]
    )


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def _row(table: pd.DataFrame, run: str, epoch: int | None = None) -> pd.Series:
    rows = table[table["run"] == run]
    return rows.iloc[-1] if epoch is None else rows[rows["epoch"] == epoch].iloc[0]


def write_report(study: Study, model: str, out_dir: str | Path) -> Path:
    """Write tables, figures and REPORT.md for `study` into `out_dir`; returns the markdown path."""
    from ioi.present import charts

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = series_table(study)
    table.to_csv(out / "metrics.csv", index=False)
    base_dla = _dla(study, study.clean, 0)
    circuit = _circuit(study, study.clean, 0)
    last = max(study.clean.epochs)
    lines = [
        f"# Reproduction report: `{model}`",
        "",
        "Generated by `python -m ioi reproduce` from the result cache; every number below is "
        "measured on this model. Faithfulness uses the circuit classified on each checkpoint "
        "with per-template mean ablation over ABC; logit difference is logit(IO) − logit(S) at END "
        "(± is one standard error over prompts).",
        "",
    ]
    if circuit is not None:
        lines += [
            "Baseline circuit (classified on the pretrained model): "
            + "; ".join(f"{c}: {' '.join(str(h) for h in hs)}" for c, hs in circuit.classes.items() if hs),
            "",
        ]

    # 1. amplification
    b, f = _row(table, "clean", 0), _row(table, "clean", last)
    final_dla = _dla(study, study.clean, last)
    overlap = top_heads(base_dla) & top_heads(final_dla)
    corr = (
        float(np.corrcoef(base_dla.sort_index(), final_dla.sort_index())[0, 1]) if len(final_dla) else np.nan
    )
    lines += [
        "## 1. Circuit amplification (clean fine-tuning)",
        "",
        f"Logit difference {_fmt(b.logit_diff)} ± {_fmt(b.logit_diff_se)} → {_fmt(f.logit_diff)} ± "
        f"{_fmt(f.logit_diff_se)} after {last} epochs; accuracy {_fmt(b.accuracy)} → {_fmt(f.accuracy)}; "
        f"faithfulness {_fmt(b.get('faithfulness.faithfulness'))} → "
        f"{_fmt(f.get('faithfulness.faithfulness'))}.",
        f"Top-{TOP_K} heads by |DLA| shared between the pretrained and the epoch-{last} model: "
        f"{len(overlap)}/{TOP_K} ({', '.join(f'{la}.{h}' for la, h in sorted(overlap))}); Pearson "
        f"correlation of the per-head DLA maps {_fmt(corr)}. "
        + (
            "The same heads carry the effect, amplified: amplification, not a new circuit."
            if len(overlap) >= TOP_K - 1 and corr > 0.8
            else "The heads carrying the effect changed noticeably."
        ),
        "",
    ]
    clean_cmap = cmap_class_sums(study, study.clean, last, circuit) if circuit is not None else pd.DataFrame()
    if not clean_cmap.empty:
        lines += [
            f"CMAP localisation (change in the epoch-{last} model's logit difference when a class's heads "
            "take the pretrained model's outputs at END; negative: those heads carry the gain; 95% "
            "interval, conservative):",
            "",
            markdown_table(clean_cmap.round(3)),
            "",
        ]
    # 2. corruption
    lines += [
        "## 2. Localized corruption (toxic fine-tuning)",
        "",
        "| toxic dataset | logit diff (final) | accuracy | DLA corr. with baseline | largest CMAP class |",
        "|---|---|---|---|---|",
    ]
    cmap_frames = []
    for name, exp in study.toxic.items():
        e = max(exp.epochs)
        r = _row(table, f"toxic: {name}", e)
        d = _dla(study, exp, e)
        c = float(np.corrcoef(base_dla.sort_index(), d.sort_index())[0, 1]) if len(d) else np.nan
        sums = cmap_class_sums(study, exp, e, circuit) if circuit is not None else pd.DataFrame()
        top = sums.iloc[sums["value"].abs().idxmax()] if not sums.empty else None
        if not sums.empty:
            cmap_frames.append(sums.assign(toxic=name))
        top_text = (
            f"{top['class']} {_fmt(top['value'])} [{_fmt(top['ci_low'])}, {_fmt(top['ci_high'])}]"
            if top is not None
            else "n/a"
        )
        lines.append(
            f"| {name} | {_fmt(r.logit_diff)} ± {_fmt(r.logit_diff_se)} | {_fmt(r.accuracy)} | "
            f"{_fmt(c)} | {top_text} |"
        )
    if cmap_frames:
        cm = pd.concat(cmap_frames, ignore_index=True)
        cm.to_csv(out / "cmap_classes.csv", index=False)
        lines += [
            "",
            "CMAP class sums (change in the toxic model's logit difference when a class's heads take "
            "the pretrained model's outputs at END; 95% interval, conservative): see `cmap_classes.csv`.",
            "",
            markdown_table(cm.round(3)),
        ]
    lines.append("")
    # 3. neuroplasticity
    lines += [
        "## 3. Neuroplasticity (clean retraining of each toxic model)",
        "",
        "| reversed from | logit diff | accuracy | faithfulness | DLA corr. with baseline |",
        "|---|---|---|---|---|",
    ]
    for name, exp in study.reversal.items():
        e = max(exp.epochs)
        r = _row(table, f"reversal of {name}", e)
        d = _dla(study, exp, e)
        c = float(np.corrcoef(base_dla.sort_index(), d.sort_index())[0, 1]) if len(d) else np.nan
        lines.append(
            f"| {name} | {_fmt(r.logit_diff)} | {_fmt(r.accuracy)} | "
            f"{_fmt(r.get('faithfulness.faithfulness'))} | {_fmt(c)} |"
        )
    lines += [
        "",
        f"Pretrained baseline: logit difference {_fmt(b.logit_diff)}, faithfulness "
        f"{_fmt(b.get('faithfulness.faithfulness'))}.",
        "",
    ]
    # 4. MLPs
    lines += [
        "## 4. MLPs",
        "",
        f"Share of the direct effect carried by MLPs: {_fmt(b.get('dla.mlp_share'))} "
        f"(pretrained), {_fmt(f.get('dla.mlp_share'))} (clean epoch {last}).",
        "",
    ]
    lines += [
        "## The paper's GPT-2 small numbers, for comparison",
        "",
        *(f"- {p['label']}" for p in GPT2_REFERENCE),
        "- GPT-2 small: MLPs contribute little (layer 0 MLP acts as an extended embedding)",
        "",
    ]

    figures = {
        "logit_diff_curves": charts.epoch_curves(
            table.assign(
                value=table.logit_diff,
                low=table.logit_diff - 1.96 * table.logit_diff_se,
                high=table.logit_diff + 1.96 * table.logit_diff_se,
            ),
            series="run",
            y_title="logit difference",
            title="Logit difference across epochs",
        ),
        "dla_baseline": charts.head_heatmap(
            base_dla.rename("value").reset_index(),
            circuit=circuit,
            title="DLA, pretrained",
            value_title="DLA",
        ),
        f"dla_clean_epoch_{last}": charts.head_heatmap(
            final_dla.rename("value").reset_index(),
            circuit=circuit,
            title=f"DLA, clean epoch {last}",
            value_title="DLA",
        ),
    }
    if "faithfulness.faithfulness" in table:
        figures["faithfulness_curves"] = charts.epoch_curves(
            table.assign(value=table["faithfulness.faithfulness"]),
            series="run",
            low=None,
            high=None,
            y_title="faithfulness",
            title="Faithfulness across epochs",
        )
    lines += ["## Figures", ""]
    for name, chart in figures.items():
        (out / f"{name}.svg").write_bytes(charts.chart_bytes(chart, "svg"))
        lines.append(f"![{name}]({name}.svg)")
    path = out / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    (out / "study.json").write_text(
        json.dumps(
            {
                "model": model,
                "clean": study.clean.id,
                "toxic": {k: v.id for k, v in study.toxic.items()},
                "reversal": {k: v.id for k, v in study.reversal.items()},
            },
            indent=2,
        )
    )
    return path


def report_dir(model: str) -> Path:
    """reports/<model> with the model name made path-safe."""
    return Path("reports") / re.sub(r"[^A-Za-z0-9_.-]+", "_", model).strip("_")
