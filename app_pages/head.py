"""Head: everything about one attention head across the checkpoints of chosen experiments — its
circuit class, DLA, attention to IO and S, knockout, CMAP and copy score, and its attention pattern."""

import pandas as pd
import streamlit as st

from app_pages._live import parse_heads
from app_pages._prompt import (
    checkpoints,
    dataset_prompts,
    default_checkpoints,
    panel_names,
    pattern_views,
    profile,
    reading,
)
from app_pages._store import Experiment, by_id, circuit_at, clean_run, experiments, result, shape_of
from app_pages._ui import empty_state, set_url, show_chart, show_user_errors, url_value
from app_pages._views import panel_of
from ioi.present import charts
from ioi.present.head_table import CheckpointResults, head_table, without_intervals
from ioi.task.circuit import Head

st.title("Head")
st.write(
    "One attention head across the checkpoints of the experiments you pick: the circuit class it is "
    "given at each, its direct logit attribution (DLA) and its attention from END to IO and to S "
    "(with 95% bootstrap intervals over the analysis prompts where the checkpoint's weights are at "
    "hand), the logit difference when it is knocked out, its CMAP effect, its OV copy score, and "
    "its attention pattern on an example prompt. Open it by clicking a head on a heatmap, or type L.H."
)


# display names of the head table's columns (a bare string here would be drawn: Streamlit's magic)
COLUMNS = {
    "dla": "DLA", "dla_lo": "DLA low", "dla_hi": "DLA high", "knockout_change": "ΔF knocked out",
    "cmap": "CMAP ΔF", "cmap_lo": "CMAP low", "cmap_hi": "CMAP high", "end_to_io": "attn END→IO",
    "end_to_io_lo": "END→IO low", "end_to_io_hi": "END→IO high", "end_to_s": "attn END→S",
    "end_to_s_lo": "END→S low", "end_to_s_hi": "END→S high", "copy_score": "OV copy score",
}  # fmt: skip


def pick_experiments() -> list[Experiment]:
    """Experiments with DLA cached; URL ``exps`` (ids, comma-separated), else the clicked one
    (``exp``) with the story's runs (clean, subject duplication, its reversal)."""
    found = [e for e in experiments() if e.epochs_with("dla")]
    ids = [e.id for e in found]
    wanted = [i for i in (url_value("exps") or "").split(",") if i in ids]
    if not wanted:
        story = [c.exp.id for c in default_checkpoints()] or (
            [clean_run("dla").id] if clean_run("dla") else []
        )
        wanted = list(dict.fromkeys([*([url_value("exp")] if url_value("exp") in ids else []), *story]))
        wanted = [i for i in wanted if i in ids] or ids[:1]
    labels = {e.id: e.label for e in found}
    chosen = st.multiselect("Experiments", ids, default=wanted, format_func=labels.get, key="head_exps")
    set_url(exps=",".join(chosen) or None)
    return [e for e in found if e.id in chosen]


def pick_head(exp: Experiment) -> Head:
    n_layers, n_heads = shape_of(result(exp, exp.epochs_with("dla")[0], "dla").heads)
    circuit = circuit_at(exp, 0)
    movers = circuit.classes.get("name mover", ()) if circuit else ()
    default = url_value("head") or (str(movers[0]) if movers else f"{n_layers - 1}.0")
    text = st.text_input(
        f"Head (L.H; this model has layers 0–{n_layers - 1}, heads 0–{n_heads - 1})", default, key="head_lh"
    )
    head = Head.parse(parse_heads(text, n_layers, n_heads)[0]) if text.strip() else None
    if head is None:
        raise ValueError("type a head as L.H, e.g. 1.4")
    set_url(head=str(head))
    return head


def checkpoint_results(chosen: list[Experiment], known: dict[str, Experiment]) -> list[CheckpointResults]:
    """Each cached checkpoint's results for the head table: the cached analyses, and the head
    profile where it is cached, else measured live where the weights are at hand."""
    live = {c.key: c for c in checkpoints()}
    out = []
    for exp in chosen:
        parent = known.get(str(exp.parent)) if exp.parent else None
        for epoch in exp.epochs_with("dla"):
            ran = exp.epochs.get(epoch, [])
            cached = result(exp, epoch, "head-profile") if "head-profile" in ran else None
            ck = live.get(f"{exp.id}:{epoch}")
            out.append(
                CheckpointResults(
                    exp.label, exp.lineage, panel_of(exp, known, True), exp.checkpoint_label(epoch), epoch,
                    int(parent.config.get("epochs", 0)) if parent is not None else 0, circuit_at(exp, epoch),
                    result(exp, epoch, "dla").heads,
                    result(exp, epoch, "knockout").heads if "knockout" in ran else None,
                    result(exp, epoch, "cmap").heads if "cmap" in ran else None,
                    cached.heads if cached is not None else profile(ck) if ck is not None else None,
                    "cached" if cached is not None else "live" if ck is not None else "",
                )
            )  # fmt: skip
    return out


def over_epochs(table: pd.DataFrame, head: Head) -> None:
    """DLA and attention to IO / S across epochs, with their intervals."""
    views = [
        ("dla", "dla_lo", "dla_hi", "DLA (logits)"),
        ("end_to_io", "end_to_io_lo", "end_to_io_hi", "attention END → IO"),
        ("end_to_s", "end_to_s_lo", "end_to_s_hi", "attention END → S (S1 + S2)"),
    ]
    for field, lo, hi, title in views:
        if field not in table or table[field].isna().all():
            st.info(
                f"No {title} here: it is measured live and none of these checkpoints' weights is at hand."
            )
            continue
        data = (
            table.rename(columns={"epoch": "own_epoch", "x": "epoch"})
            .assign(value=table[field], low=table.get(lo), high=table.get(hi), series=table["experiment"])
            .dropna(subset=["value"])
        )
        chart = charts.epoch_curves(
            data, y_title=title, color="lineage", panel="panel", columns=2, title=f"{head}: {title}"
        )
        show_chart(
            chart,
            data[["experiment", "checkpoint", "epoch", "value", "low", "high"]],
            f"Head {head}'s {title} at each checkpoint (epoch 0: before fine-tuning; a reversal "
            "continues where its toxic run ended), one colour per lineage. Band: 95% bootstrap "
            "interval over the analysis prompts, at the checkpoints whose weights (or profile) are "
            "at hand" + ("; the DLA points are the cached analysis values." if field == "dla" else "."),
            f"head-{field}-{head}",
        )


def example_pattern(head: Head) -> None:
    """The head's attention on one prompt (the URL's, else the first evaluation prompt) at the
    story's checkpoints, side by side."""
    from ioi.task.prompt import find_roles

    example = dataset_prompts()[0]
    prompt = url_value("prompt") or example["prompt"]
    io, s = (url_value("io"), url_value("s")) if url_value("io") else find_roles(prompt)
    shown = default_checkpoints()
    opened = next(
        (c for c in checkpoints() if c.exp.id == url_value("exp") and str(c.epoch) == url_value("epoch")),
        None,
    )
    if opened is not None and opened.key not in [c.key for c in shown]:
        shown = [opened, *shown][:3]
    st.subheader("Its attention on an example prompt")
    st.caption(f"Prompt: “{prompt}” (IO {io}, S {s}).")
    names = panel_names(shown)
    tag = "-".join(f"{ck.exp.id[:8]}e{ck.epoch}" for ck in shown)
    (grids, grid), (bars, row) = pattern_views(
        [reading(ck, prompt, io, s) for ck in shown], [names[ck.key] for ck in shown], *head, str(head), 230
    )
    show_chart(
        grids,
        grid,
        f"Attention of {head} (rows: query tokens; columns: the tokens attended to). IO, S1, S2 "
        "and END in bold; the END row's cells on them outlined.",
        f"head-attn-{head}-{tag}",
    )
    show_chart(
        bars, row, f"{head}'s attention from END over the prompt; IO blue, S red.", f"head-end-{head}-{tag}"
    )


def body() -> None:
    chosen = pick_experiments()
    if not chosen:
        empty_state(
            "DLA results", "Run `python -m ioi precompute`, or launch an experiment on the Experiments page."
        )
        return
    head = pick_head(chosen[0])
    known = {e.id: e for e in experiments()}
    table = head_table(head, checkpoint_results(chosen, known))
    opened = by_id(url_value("exp"))
    epoch = int(url_value("epoch")) if (url_value("epoch") or "").isdigit() else 0
    here = (
        table[(table["experiment"] == opened.label) & (table["epoch"] == epoch)] if opened else table.iloc[:0]
    )
    here = here if len(here) else table.iloc[:1]
    r = here.iloc[0]
    m = st.columns([1.7, 1.2, 0.9, 1])  # the first holds a value with its interval
    interval = f" [{r['dla_lo']:.2f}, {r['dla_hi']:.2f}]" if pd.notna(r.get("dla_lo")) else ""
    m[0].metric(
        f"DLA of {head} — {r['checkpoint']}",
        f"{r['dla']:.2f}{interval}",
        help="the cached DLA analysis value (logits), as on the Logit attribution page, with its 95% "
        "bootstrap interval over the analysis prompts where the head profile has one",
    )
    m[1].metric("circuit class there", r["class"])
    if pd.notna(r.get("copy_score")):
        m[2].metric(
            "OV copy score",
            f"{r['copy_score']:.2f}",
            help="share of names copied into their own top-5 logits",
        )
    if pd.notna(r.get("knockout_change")):
        m[3].metric("ΔF when knocked out", f"{r['knockout_change']:.3f}")
    st.subheader("Across checkpoints")
    shown = table.drop(columns=["lineage", "panel", "x"]).rename(columns=COLUMNS)
    st.dataframe(shown.style.format(precision=3), hide_index=True, key="head_table", placeholder="—")
    st.caption(
        "One row per cached checkpoint; — where that analysis did not run at that checkpoint (CMAP "
        "never at a run's start, which is the model it starts from). DLA: the cached analysis value "
        "(logits); ΔF knocked out: change "
        "in logit difference when this head alone is mean-ablated (where the knockout analysis ran); "
        "CMAP: change in F when the checkpoint runs with this head's output taken from the model it "
        "started from, with its 95% CI; attention and copy score from the head profile (the "
        "“intervals” column says where it comes from)."
    )
    bare = without_intervals(table)
    if bare:
        st.info(
            f"No interval, attention or copy score at {len(bare)} of {len(table)} checkpoints "
            f"({', '.join(bare)}): their weights are not in the demo or your cache and no head profile "
            "is cached, so only the cached analysis values (DLA, knockout, CMAP) are shown there; the "
            "charts below draw those checkpoints as points without a band.",
            icon="ℹ️",
        )
    over_epochs(table, head)
    example_pattern(head)


show_user_errors(body)
