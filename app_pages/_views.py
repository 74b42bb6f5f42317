"""The views the detailed pages, the tour and the Findings page share: a checkpoint's DLA heatmap,
a run's knockout bars, curves across epochs per lineage, a CMAP heatmap. Each returns what to draw
(chart, data, caption) from cached results; the caller lays it out with `show_chart`."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pandas as pd

from app_pages._store import Experiment, circuit_at, data_stamp, experiments, result, series
from app_pages._ui import circuit_caption, heads_with_labels
from ioi.present import charts
from ioi.task.reference import reference_points

DLA_CAPTION = (
    "Per-head DLA on logit(IO) − logit(S) at END (mean over the analysis prompts; no ablation), "
    "layers × heads; diverging colour centred at 0. Outlined: the heads of the circuit classified "
    "at this checkpoint (faithfulness analysis)"
)
METRICS = {
    "logit_diff": ("logit_diff", "logit_diff_se", "logit difference F(M)"),
    "faithfulness": ("faithfulness.faithfulness", None, "faithfulness F(C)/F(M)"),
    "accuracy": ("accuracy", None, "accuracy (logit IO > logit S)"),
}
MIN_F_MODEL = 0.5
"""Logits: below this |F(M)| the model no longer does the task and F(C)/F(M) means nothing (the
findings' guard on ratios); such points are left out of the faithfulness chart, and said so."""
INTACT = "(nothing: intact model)"
F = TypeVar("F", bound=Callable[..., Any])


def _key(x: Any) -> Any:
    """A hashable stand-in for a view's argument: an experiment by where it is and its label, a
    list by its items, a plain value by itself, anything else (a cached result, its tables) by its
    identity — the store hands out one object per cached entry, and the memo keeps it alive."""
    if isinstance(x, Experiment):
        return ("experiment", x.root, x.id, x.label)
    if isinstance(x, (list, tuple)):
        return tuple(_key(i) for i in x)
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return ("object", id(x))


def memoised(fn: F) -> F:
    """`fn` (a view or chart of cached results) with its results kept, per arguments, until an
    entry of the cache changes (`data_stamp`): a warm rerun redraws the same chart objects, whose
    specs `show_chart` has already converted. Shared by the sessions (views are never mutated)."""
    kept: dict[Any, tuple[Any, Any]] = {}
    lock = threading.Lock()

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = (data_stamp(), _key(args), tuple(sorted((k, _key(v)) for k, v in kwargs.items())))
        with lock:
            if key in kept:
                return kept[key][1]
        found = fn(*args, **kwargs)
        with lock:
            while len(kept) >= 64:
                kept.pop(next(iter(kept)))
            kept[key] = ((args, kwargs), found)  # the arguments stay alive: their ids stay theirs
        return found

    return wrapper  # type: ignore[return-value]


head_heatmap = memoised(charts.head_heatmap)
class_bars = memoised(charts.class_bars)


def cmap_roles(found, a: str, b: str, direction: str | None = None) -> tuple[str, str]:
    """(receiver, source) of a CMAP entry's `direction` (default its first), A being `a`, B `b`."""
    tables = cmap_directions(found)
    direction = direction if direction in tables else next(iter(tables))
    return (a, b) if direction == "a<-b" else (b, a)


CMAP_POSITIONS = {"end": "END", "all": "every position"}


def cmap_gap(found, direction: str | None = None) -> float:
    """The stored gap F(source) − F(receiver) of a CMAP entry's `direction` (default its first)."""
    tables = cmap_directions(found)
    direction = direction if direction in tables else next(iter(tables))
    key = "gap" if tables[direction] == "heads" else "reverse_gap"
    return float(found.summary.get(key, float("nan")))


def cmap_class_caption(found, a: str, b: str, direction: str | None = None, share: bool = False) -> str:
    """What the per-class CMAP bars of `direction` show (cmap_view's caption is the per-head one):
    the change in F, or with `share` its share of the gap F(source) − F(receiver)."""
    receiver, source = cmap_roles(found, a, b, direction)
    what = ("The change in F as a share of the gap F(source) − F(receiver) (1: the class closes it alone)"
            if share else "Change in F = logit(IO) − logit(S)")  # fmt: skip
    return (
        f"Per circuit class: the receiver ({receiver}) runs with all the heads of one class taken "
        f"together from the source ({source}); also the whole circuit, everything outside it, the "
        f"largest heads outside it one by one ('outside: L.H') and all heads. {what}; bars: bootstrap 95% "
        "confidence intervals over prompts."
    )


@memoised
def dla_view(exp: Experiment, epoch: int, heads: pd.DataFrame, title: str, span: float | None = None):
    """(chart, table, caption) of a checkpoint's DLA, outlined with that checkpoint's own circuit."""
    circuit = circuit_at(exp, epoch)
    chart = charts.head_heatmap(heads, title=title, value_title="DLA (logits)", circuit=circuit, span=span)
    outlined = circuit_caption(circuit) if circuit else "no circuit recorded at this checkpoint"
    scale = " One colour scale for both panels." if span is not None else ""
    return chart, heads_with_labels(heads), f"{DLA_CAPTION}: {outlined}.{scale}"


@memoised
def dla_difference_view(exp_a: Experiment, epoch_a: int, a: pd.DataFrame, exp_b: Experiment, epoch_b: int,
                        b: pd.DataFrame):  # fmt: skip
    """(chart, table, caption) of the per-head DLA change B − A, outlined with A's circuit."""
    diff = charts.difference_frame(a, b)
    circuit = circuit_at(exp_a, epoch_a)
    title = f"DLA B − A: ({exp_b.checkpoint_label(epoch_b)}) − ({exp_a.checkpoint_label(epoch_a)})"
    chart = charts.head_heatmap(diff, title=title, value_title="ΔDLA (logits)", circuit=circuit)
    caption = (
        "Per-head change in DLA (B − A) on logit(IO) − logit(S) at END, no ablation; blue: the head "
        f"pushes more towards IO at B than at A. Outlined: A's circuit — "
        f"{circuit_caption(circuit) if circuit else 'none recorded'}."
    )
    return chart, heads_with_labels(diff), caption


def knockout_frame(found, chosen: str = "") -> pd.DataFrame:
    """A knockout result as bars (target, value, lo, hi): each class's F with its interval (none
    on entries written before knockouts had intervals), the `chosen` heads' when they were
    knocked out together, and the intact model's."""
    t = found.tables.get("classes", pd.DataFrame(columns=["class", "f_knockout"]))
    names = {"class": "target", "f_knockout": "value", "f_knockout_lo": "lo", "f_knockout_hi": "hi"}
    rows = t[[c for c in names if c in t]].rename(columns=names)
    s = found.summary
    more = [(chosen, "f_knockout")] if chosen else []
    bars = [{"target": label, "value": s.get(k), "lo": s.get(f"{k}_lo"), "hi": s.get(f"{k}_hi")}
            for label, k in [*more, (INTACT, "f_model")]]  # fmt: skip
    return pd.concat([rows, pd.DataFrame(bars)], ignore_index=True)


def knockout_rows(exp: Experiment, epoch: int, found) -> pd.DataFrame:
    """One bar per knocked-out class at this checkpoint, labelled with the class's heads there,
    plus the intact model's F."""
    circuit = circuit_at(exp, epoch)
    rows = knockout_frame(found)
    rows["heads"] = [
        " ".join(map(str, circuit.classes.get(c, ()))) if circuit else "" for c in rows["target"]
    ]
    return rows.assign(checkpoint=exp.checkpoint_label(epoch))


@memoised
def knockout_view(exp: Experiment, epochs: list[int]):
    """(chart, table, caption, notes) of the class knockouts at `epochs`; `notes` says which
    checkpoints have no class to knock out (they still show the intact F), never dropping one."""
    frames, ablations, notes = [], set(), []
    for epoch in epochs:
        found = result(exp, epoch, "knockout")
        if found is None:
            notes.append(f"No knockout result is cached at {exp.epoch_label(epoch)}.")
            continue
        rows = knockout_rows(exp, epoch, found)
        if len(rows) == 1:
            notes.append(
                f"At {exp.epoch_label(epoch)} the classifier finds no circuit heads, so there is no "
                "class to knock out: only the intact model's logit difference is drawn."
            )
        ablations.add(str(found.summary.get("ablation", "mean")))
        frames.append(rows)
    if not frames:
        return None, None, "", notes
    data = pd.concat(frames, ignore_index=True)
    how = ", ".join(sorted(ablations))
    chart = charts.knockout_bars(data, title=f"Logit difference with a class knocked out ({how} ablation)")
    caption = (
        f"Logit difference F after {how}-ablating every head of one circuit class (all positions), one "
        f"bar per checkpoint of {exp.label}; each bar names the heads it knocked out (the classes are "
        f"classified at each checkpoint). '{INTACT}' is F with nothing ablated. Error bars: 95% bootstrap "
        "intervals over the evaluation prompts (none on results cached before knockouts had them)."
    )
    return chart, data, caption, notes


def panel_of(exp: Experiment, known: dict[str, Experiment], follow: bool) -> str:
    """The panel a run is drawn in: with `follow`, a toxic run and its reversal share one."""
    if follow and exp.scenario == "reversal" and exp.parent in known:
        return f"{known[exp.parent].lineage} → reversal"
    if (
        follow
        and exp.scenario not in ("clean", "reversal")
        and any(e.parent == exp.id for e in known.values())
    ):
        return f"{exp.lineage} → reversal"
    return exp.lineage


@memoised
def curves_view(chosen: list[Experiment], metric: str, *, follow: bool = True, overlay: bool = True):
    """(chart, data, caption) of `metric` across epochs for `chosen`, one panel per lineage with its
    own epoch axis; a reversal continues where its toxic run ended (`follow`). None when no run has
    the metric cached."""
    column, se, title = METRICS[metric]
    known = {e.id: e for e in experiments()}
    frames, ablations, hidden, shift = [], set(), 0, {}
    for exp in chosen:
        s = series(exp)
        if column not in s:
            continue
        parent = known.get(str(exp.parent)) if exp.parent else None
        offset = int(parent.config.get("epochs", 0)) if follow and parent is not None else 0
        panel = panel_of(exp, known, follow)
        shift[panel] = max(shift.get(panel, 0), offset)
        part = pd.DataFrame(
            {
                "epoch": s["epoch"] + offset,
                "value": s[column],
                "series": exp.label,
                "lineage": exp.lineage,
                "panel": panel,
                "scenario": exp.scenario,
                "seed": exp.config.get("seed"),
            }
        )
        if se and se in s:
            part["low"], part["high"] = s[column] - 1.96 * s[se], s[column] + 1.96 * s[se]
        if f"{column}_lo" in s:  # the analysis stored a bootstrap interval of its own
            part["low"], part["high"] = s[f"{column}_lo"], s[f"{column}_hi"]
        if metric == "faithfulness" and "faithfulness.f_model" in s:
            # Undefined ratios: those the analysis left NaN (its own guard) and, in caches written
            # before it had one, those with |F(M)| below the same bound.
            f_model = s["faithfulness.f_model"]
            guarded = (f_model.notna() & ((f_model.abs() < MIN_F_MODEL) | s[column].isna())).to_numpy()
            hidden += int(guarded.sum())
            part.loc[guarded, "value"] = float("nan")
            entry = result(exp, exp.epochs_with("faithfulness")[-1], "faithfulness")
            if entry is not None:
                ablations.add(str(entry.summary.get("ablation", "mean")))
        frames.append(part.dropna(subset=["value"]))
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if data.empty:
        return None, None, ""
    ref = reference_frame(data, metric, shift) if overlay else None
    chart = charts.epoch_curves(
        data,
        y_title=title,
        reference=ref,
        color="lineage",
        panel="panel",
        title=f"{title} across epochs",
        columns=min(2, data["panel"].nunique()),
    )
    band = (
        "95% CI (±1.96 standard errors over prompts)" if se else
        "95% bootstrap interval over prompts" if "low" in data else "no band: one value per checkpoint"
    )  # fmt: skip
    how = f"; circuit kept, other heads {', '.join(sorted(ablations))}-ablated" if ablations else ""
    guard = (
        f" {hidden} checkpoint(s) left out where F(M) < {MIN_F_MODEL} logits (negative included): the "
        "model no longer does the task, so no circuit is found and the ratio is undefined (see the "
        "logit difference)."
        if hidden
        else ""
    )
    refs = (" Black diamonds: the paper's GPT-2 small numbers (METHODS §9) — reference points for a "
            "different model, not targets.") if ref is not None else ""  # fmt: skip
    runs = data.groupby("lineage")[["series", "seed"]].nunique()
    several = runs[runs["series"] > 1]
    numbers = ", ".join(str(int(x)) for x in sorted(data["seed"].dropna().unique()))
    seeds = (
        f" Lines of one colour are runs of one lineage with different seeds ({numbers}); hover a line "
        "for its run."
        if len(several) and (several["seed"] == several["series"]).all() else
        " Lines of one colour are runs of one lineage; hover a line for its run." if len(several) else ""
    )  # fmt: skip
    darker = (
        " A reversal is drawn in a darker shade of its toxic run's colour"
        + (", continuing where that run ended." if follow else ".")
        if (data["scenario"] == "reversal").any() else ""
    )  # fmt: skip
    which = (" C is the checkpoint's head circuit (its classes and the heads carrying the effect); the "
             "Evolution page's edge circuit is the fewest edges reaching 80%, so its faithfulness sits near "
             "0.8 by construction.") if metric == "faithfulness" else ""  # fmt: skip
    caption = (
        f"{title} at each cached checkpoint (epoch 0: before fine-tuning), one panel per lineage, each "
        f"with its own epoch axis; {band}{how}.{seeds}{darker}{guard}{refs}{which}"
    )
    return chart, data, caption


def reference_frame(data: pd.DataFrame, metric: str, shift: dict[str, int]) -> pd.DataFrame | None:
    """The paper's reference points of `metric` placed in the panels whose runs they belong to."""
    points = reference_points(metric)
    rows = []
    for panel, group in data.groupby("panel", sort=False):
        for _, p in points[points["scenario"].isin(set(group["scenario"]))].iterrows():
            offset = shift.get(panel, 0) if p["scenario"] == "reversal" else 0
            rows.append(p.to_dict() | {"panel": panel, "epoch": p["epoch"] + offset})
    return pd.DataFrame(rows) if rows else None


CMAP_FIELDS = {"value": "change in F (logits)", "share_of_gap": "share of the gap"}


def cmap_directions(found) -> dict[str, str]:
    """The directions a CMAP entry holds ("a<-b": A receives B's heads; "b<-a": the reverse) ->
    the table that holds each ("heads" for the first, "reverse" for the other)."""
    s = found.summary
    out = {str(s.get("direction", "a<-b")): "heads"}
    if "reverse" in found.tables and s.get("reverse_direction"):
        out[str(s["reverse_direction"])] = "reverse"
    return out


@memoised
def cmap_view(found, a: str, b: str, field: str = "value", direction: str | None = None):
    """(chart, table, caption, classes) of a CMAP entry where A is `a` (the checkpoint) and B is
    `b` (the run's starting model), in `direction` (default: the entry's first). `classes` is
    the per-class table of that direction, or None."""
    tables = cmap_directions(found)
    direction = direction if direction in tables else next(iter(tables))
    heads = found.heads if tables[direction] == "heads" else found.tables["reverse"]
    classes = found.tables.get("classes" if tables[direction] == "heads" else "reverse_classes")
    receiver, source = cmap_roles(found, a, b, direction)
    field = field if field in heads else "value"
    title = f"CMAP: {receiver} run with heads of {source}"
    chart = charts.head_heatmap(heads, field=field, title=title, value_title=CMAP_FIELDS[field])
    s = found.summary
    caption = (
        f"{s.get('mode', 'output')} patching: the receiver ({receiver}) runs with one head at a time taken "
        f"from the source ({source}), at {CMAP_POSITIONS.get(str(s.get('positions', 'end')), 'END')}; "
        "per head, the "
        + (
            "change in the receiver's logit difference F = logit(IO) − logit(S). Positive: the source's "
            "head raises the receiver's F."
            if field == "value" else
            "change in F as a share of the gap F(source) − F(receiver). Positive: the head moves the "
            "receiver towards the source (when the gap is negative, that lowers the receiver's F); 1: it "
            "closes the whole gap alone. So blue here means towards the source, not towards IO as on the "
            "logits view: with a toxic source it is the direction of the corruption."
        )
        + " No ablation; the CSV has bootstrap 95% CIs over prompts."
    )  # fmt: skip
    return chart, heads_with_labels(heads), caption, classes
