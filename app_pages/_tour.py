"""The guided tour: the three findings told in steps, each with the chart that shows it, a text
whose numbers and heads come from that chart's cached data, and a link that opens the detailed
page at the same view (its URL state). The step is in the URL too (``step``).

A step states no conclusion of its own: where it is about a finding, it quotes the verdict the
Findings page shows (judged by `ioi.present.findings` with its criterion and intervals), so the
tour and the Findings page cannot disagree."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from app_pages._store import (
    VERDICT_WORDS,
    Experiment,
    circuit_at,
    clean_run,
    data_stamp,
    judged,
    result,
    reversal_of,
    roots,
    series,
    toxic_run,
)
from app_pages._ui import set_url, show_chart
from app_pages._views import (
    INTACT,
    cmap_directions,
    cmap_view,
    curves_view,
    dla_difference_view,
    dla_view,
    knockout_view,
)
from ioi.present import charts
from ioi.task.circuit import OTHER
from ioi.task.corruptions import readable


@dataclass(frozen=True)
class Step:
    title: str
    text: str
    page: str
    params: dict[str, str]
    draw: Callable[[], None]


def heads_of(exp: Experiment, epoch: int, cls: str) -> list[str]:
    circuit = circuit_at(exp, epoch)
    return [str(h) for h in circuit.classes.get(cls, ())] if circuit else []


def listed(heads: list[str]) -> str:
    return " ".join(heads) if heads else "none"


def class_words(cls: str) -> str:
    """A class name as a sentence writes it: "name movers", "S-inhibition heads"."""
    word = cls.replace("s-inhibition", "S-inhibition")
    return f"{word}s" if word.endswith("mover") else f"{word} heads"


def circuit_words(exp: Experiment, epoch: int) -> str:
    """What the outline at `epoch` holds, class by class: the IOI classes with a head, then the heads
    that carry the effect without passing a class test (named as such, not as an IOI class)."""
    circuit = circuit_at(exp, epoch)
    if circuit is None or not circuit.heads:
        return "none found at this checkpoint"
    named = [f"{class_words(cls)} {listed(heads_of(exp, epoch, cls))}"
             for cls, heads in circuit.classes.items() if heads and cls != OTHER]  # fmt: skip
    other = heads_of(exp, epoch, OTHER)
    words = "; ".join(named) if named else "no head in an IOI class"
    if other:
        verb = "carries" if len(other) == 1 else "carry"
        words += f"; and {listed(other)}, which {verb} the effect without passing any IOI class's test"
    return words


def verdict_words(exp: Experiment, finding: str, scope: str = "") -> str:
    """The Findings page's verdict on `finding` (`scope`: its toxic dataset or reversal) for the
    cache and model of `exp`, as a sentence: what the tour says instead of a conclusion of its own."""
    stored, _ = judged()
    found = next((v for v in stored if v["finding"] == finding and v["scope"] == scope
                  and v.get("root") == exp.root and v.get("model") == exp.model), None)  # fmt: skip
    if found is None:
        return f"The Findings page judges whether {finding} holds once the study's results are cached."
    return (f"**Verdict (Findings page): {finding} {VERDICT_WORDS[found['holds']]}.** "
            f"{readable(found['summary'])}")  # fmt: skip


def value_at(exp: Experiment, column: str, epoch: int) -> float:
    s = series(exp)
    row = s[s["epoch"] == epoch]
    return float(row[column].iloc[0]) if column in s and len(row) else float("nan")


def ld(exp: Experiment, epoch: int) -> str:
    """The checkpoint's logit difference as every step quotes it: its evaluation (the held-out
    prompts of the run's metrics) with its standard error, so a checkpoint has one number
    throughout the tour."""
    value, se = value_at(exp, "logit_diff", epoch), value_at(exp, "logit_diff_se", epoch)
    return f"{value:.1f} ± {se:.1f}" if se == se else f"{value:.1f}"


def evaluated_on(exp: Experiment) -> str:
    n = value_at(exp, "n", 0)
    return f"mean over {n:.0f} held-out evaluation prompts ± s.e." if n == n else "evaluation prompts' mean"


def bar(rows, target: str) -> str:
    """A knockout bar's F with its interval, as "3.7 [3.1, 4.3]" (no interval on older entries)."""
    r = rows.loc[target]
    if pd.notna(r.get("lo")) and pd.notna(r.get("hi")):
        return f"{r['value']:.1f} [{r['lo']:.1f}, {r['hi']:.1f}]"
    return f"{r['value']:.1f}"


def top_heads(frame, n: int = 3, field: str = "value") -> str:
    """The `n` heads with the largest |`field`|, as "1.4 (+3.2), …"."""
    rows = frame.reindex(frame[field].abs().sort_values(ascending=False).index).head(n)
    return ", ".join(f"{int(r['layer'])}.{int(r['head'])} ({r[field]:+.1f})" for _, r in rows.iterrows())


def steps() -> list[Step]:
    """The tour's steps over what the cache holds: the clean run, a toxic run and its reversal."""
    clean = clean_run("dla")
    if clean is None or not clean.epochs_with("dla"):
        return []
    out: list[Step] = []
    last = clean.epochs_with("dla")[-1]
    a, b = result(clean, 0, "dla"), result(clean, last, "dla")
    movers0 = heads_of(clean, 0, "name mover")
    if a is None or b is None:
        return out
    # Logit differences come from the evaluations (`ld`): one number per checkpoint on every step.
    ld0, ldn = ld(clean, 0), ld(clean, last)
    out.append(
        Step(
            "The pretrained model's circuit",
            f"Before fine-tuning, {clean.model} predicts the indirect object over the subject by "
            f"{ld0} logits ({evaluated_on(clean)}). Direct logit attribution shows which heads write that "
            "answer: the "
            f"strongest are {top_heads(a.heads)}. Outlined are the heads of its circuit — "
            f"{circuit_words(clean, 0)}.",
            "app_pages/attribution.py",
            {"exp": clean.id, "epoch": "0", "mode": "one"},
            lambda: show_chart(
                *dla_view(clean, 0, a.heads, f"DLA — {clean.checkpoint_label(0)}"), "tour-dla"
            ),
        )
    )
    if last > 0:
        movers = heads_of(clean, last, "name mover")
        same = "the same name movers" if set(movers) == set(movers0) else f"name movers {listed(movers)}"
        span = charts.color_span(a.heads, b.heads)

        def side_by_side() -> None:
            left, right = st.columns(2)
            with left:
                show_chart(
                    *dla_view(clean, 0, a.heads, f"A: {clean.checkpoint_label(0)}", span), "tour-amp-a"
                )
            with right:
                show_chart(
                    *dla_view(clean, last, b.heads, f"B: {clean.checkpoint_label(last)}", span), "tour-amp-b"
                )

        out.append(
            Step(
                "Amplification: does clean fine-tuning strengthen the same heads?",
                f"After {last} epochs of clean fine-tuning the logit difference is {ldn} "
                f"(from {ld0}), and the circuit classified at epoch {last} has {same}. Both panels "
                f"share one colour scale.\n\n{verdict_words(clean, 'amplification')}",
                "app_pages/attribution.py",
                {
                    "exp": clean.id,
                    "epoch": "0",
                    "mode": "side",
                    "compare": f"{clean.id}:{last}",
                    "scale": "shared",
                },
                side_by_side,
            )
        )
    f0, fn = (
        value_at(clean, "faithfulness.faithfulness", 0),
        value_at(clean, "faithfulness.faithfulness", last),
    )
    if fn == fn:  # not NaN: the faithfulness analysis is cached
        curve = curves_view([clean], "faithfulness")
        faith = result(clean, last, "faithfulness")
        how = str(faith.summary.get("ablation", "mean")) if faith is not None else "mean"
        where = (
            f"{clean.model}'s circuit explains all of its logit difference before fine-tuning already, so "
            f"this ratio cannot show a strengthening; the logit difference itself went from {ld0} to "
            f"{ldn} (step 2, whose verdict says whether that is amplification). "
            if min(f0, fn) >= 0.95 else ""
        )  # fmt: skip
        out.append(
            Step(
                "Faithfulness across epochs",
                f"The circuit alone (every other head {how}-ablated) explains {f0:.0%} of the pretrained "
                f"model's logit difference and {fn:.0%} after {last} clean epochs. {where}The black "
                "diamonds are GPT-2 small's numbers in the paper (87% → 99.9%), for a different, larger "
                "model.",
                "app_pages/faithfulness.py",
                {"metric": "faithfulness", "exps": clean.id},
                lambda: show_chart(*curve, "tour-faithfulness"),
            )
        )
    toxic = toxic_run(analysis="dla")
    if toxic is not None:
        out += corruption_steps(clean, toxic)
    return out


def corruption_steps(clean: Experiment, toxic: Experiment) -> list[Step]:
    """Localized corruption (DLA change, knockout, CMAP) and neuroplasticity (the reversal)."""
    out: list[Step] = []
    tl = toxic.epochs_with("dla")[-1]
    a, b = result(toxic, 0, "dla"), result(toxic, tl, "dla")
    if a is None or b is None:
        return out
    t0, tn = ld(toxic, 0), ld(toxic, tl)
    diff = charts.difference_frame(a.heads, b.heads)
    circuit = circuit_at(toxic, 0)
    top = diff.reindex(diff["value"].abs().sort_values(ascending=False).index).head(3)
    inside = sum(f"{int(r.layer)}.{int(r.head)}" in {str(h) for h in circuit.heads} for r in top.itertuples()
                 ) if circuit else 0  # fmt: skip
    out.append(
        Step(
            f"Corruption by {toxic.lineage}: is it localized?",
            f"{tl} epochs on the {toxic.lineage} dataset take the logit difference from {t0} to "
            f"{tn} ({evaluated_on(toxic)}): the model now prefers the "
            f"{'subject' if value_at(toxic, 'logit_diff', tl) < 0 else 'indirect object'}. "
            f"The heads whose direct effect changed most: {top_heads(diff)} logits — {inside} of these "
            f"{len(top)} belong to the pretrained circuit (outlined).\n\n"
            + verdict_words(clean, "localized corruption", toxic.scenario),
            "app_pages/attribution.py",
            {"exp": toxic.id, "epoch": "0", "mode": "diff", "compare": f"{toxic.id}:{tl}"},
            lambda: show_chart(
                *dla_difference_view(toxic, 0, a.heads, toxic, tl, b.heads), "tour-corruption"
            ),
        )
    )
    if toxic.epochs_with("knockout"):
        epochs = sorted({0, toxic.epochs_with("knockout")[-1]})
        chart, data, caption, notes = knockout_view(toxic, epochs)
        if chart is not None:
            movers = heads_of(toxic, epochs[-1], "name mover")
            start = data[data["checkpoint"] == toxic.checkpoint_label(0)].set_index("target")
            end = data[data["checkpoint"] == toxic.checkpoint_label(epochs[-1])].set_index("target")
            n = toxic.config.get("analysis_size", "the")
            intact = f" (F {bar(end, INTACT)} on those prompts)" if INTACT in end.index else ""
            before = (
                f"On the {n} analysis prompts the knockouts use, knocking out the pretrained model's name "
                f"movers takes F from {bar(start, INTACT)} to {bar(start, 'name mover')} logits (95% "
                "intervals). "
                if 0 in epochs and {"name mover", INTACT} <= set(start.index) else ""
            )  # fmt: skip
            out.append(
                Step(
                    "Corruption: knock the classes out",
                    f"Knocking out each class shows what a model relies on. {before}"
                    + (
                        f"After {epochs[-1]} epochs of {toxic.lineage} its name movers are {listed(movers)}."
                        if movers
                        else f"After {epochs[-1]} epochs of {toxic.lineage}{intact} the classifier finds no "
                        "circuit doing the task (the pretrained name movers now push towards the subject, "
                        "previous step), so only the intact model's logit difference is drawn for it."
                    ),
                    "app_pages/knockout.py",
                    {"exp": toxic.id, "epoch": ",".join(map(str, epochs))},
                    lambda: show_chart(chart, data, caption, "tour-knockout"),
                )
            )
    if toxic.epochs_with("cmap"):
        ce = toxic.epochs_with("cmap")[-1]
        found = result(toxic, ce, "cmap")
        if found is not None and not found.heads.empty:
            a_label, b_label = toxic.checkpoint_label(ce), toxic.checkpoint_label(0)
            first = next(iter(cmap_directions(found)))
            receiver, source = (a_label, b_label) if first == "a<-b" else (b_label, a_label)
            out.append(
                Step(
                    "Corruption: which heads carry it (CMAP)",
                    f"Cross-model patching runs {receiver} with one head at a time taken from {source}; a "
                    "positive value means that head raises the receiver's logit difference (towards the "
                    "indirect object). "
                    f"The largest effects: {top_heads(found.heads)} logits.",
                    "app_pages/cmap.py",
                    {"exp": toxic.id, "epoch": str(ce)},
                    lambda: show_chart(*cmap_view(found, a_label, b_label)[:3], "tour-cmap"),
                )
            )
    rev = reversal_of(toxic)
    if rev is not None and rev.epochs:
        rl = rev.last_epoch
        t0, tn, r_ld = ld(toxic, 0), ld(toxic, tl), ld(rev, rl)
        movers = heads_of(rev, rl, "name mover")
        back = heads_of(clean, 0, "name mover")
        same = (
            "the pretrained model's name movers"
            if movers and set(movers) == set(back)
            else f"name movers {listed(movers)}"
        )
        curve = curves_view([toxic, rev], "logit_diff")
        out.append(
            Step(
                "Neuroplasticity: does clean data restore the circuit?",
                f"Fine-tuning the corrupted model on clean data for {rl} epochs takes the logit difference "
                f"from {tn} to {r_ld} (pretrained: {t0}; {evaluated_on(rev)}), and the circuit classified "
                "at the "
                f"end of the reversal has {same}.\n\n"
                + verdict_words(clean, "neuroplasticity", f"reversal of {toxic.scenario}"),
                "app_pages/faithfulness.py",
                {"metric": "logit_diff", "exps": f"{toxic.id},{rev.id}"},
                lambda: show_chart(*curve, "tour-reversal"),
            )
        )
    return out


@st.cache_resource(max_entries=2, show_spinner=False)
def cached_steps(stamp: float, roots: tuple[str, ...], verdicts: str) -> list[Step]:
    """`steps()`, rebuilt only when the cache or its stored verdicts change (a rerun of the Overview
    stays fast)."""
    return steps()


def tour() -> None:
    """The tour's current step: Back / Next on top (they never move), the text, its chart, its link."""
    verdicts = json.dumps(judged()[0], sort_keys=True, default=str)
    found = cached_steps(data_stamp(), tuple(map(str, roots())), verdicts)
    if not found:
        st.caption(
            "No experiment results are cached yet: run `python -m ioi precompute` or use the "
            "Experiments page."
        )
        return
    text = st.query_params.get("step", "1")
    step = min(max(int(text) if text.isdigit() else 1, 1), len(found))
    back, forward, progress = st.columns([1, 1, 6], vertical_alignment="center")
    back.button("Back", disabled=step == 1, key="tour_back", icon=":material/arrow_back:",
                on_click=set_url, kwargs={"step": step - 1})  # fmt: skip
    forward.button("Next", disabled=step == len(found), key="tour_next", icon=":material/arrow_forward:",
                   on_click=set_url, kwargs={"step": step + 1})  # fmt: skip
    set_url(step=step)
    current = found[step - 1]
    progress.progress(step / len(found), text=f"Step {step} of {len(found)}: {current.title}")
    st.markdown(f"#### {current.title}")
    st.write(current.text)
    st.page_link(current.page, label=f"Open this view: {current.title}", icon=":material/open_in_new:",
                 query_params=current.params)  # fmt: skip
    current.draw()
