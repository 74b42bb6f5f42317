"""Findings: the paper's three findings on one screen, each with its verdict, the stated criterion,
the numbers with their 95% intervals, the comparison that shows it, and a link into the detailed
view (its URL state).

The verdicts are those `ioi.present.findings.findings` judged — the same call that writes
REPRODUCTION.md's verdict lines — stored in each cache when its results were computed
(`store_findings`, run by `ioi reproduce` and `ioi precompute`); their numbers are the report's
texts, so the two agree. The page only reads them: judging needs the paired bootstrap (torch), which
runs here only when the user asks to judge results that changed since."""

import pandas as pd
import streamlit as st

from app_pages._store import VERDICT_WORDS, by_id, judged, result
from app_pages._ui import show_chart, show_user_errors
from app_pages._views import (
    cmap_class_caption,
    cmap_view,
    curves_view,
    dla_difference_view,
    dla_view,
    knockout_view,
)
from ioi.present import charts
from ioi.task.corruptions import readable

st.title("Findings")
st.write(
    "The paper's three findings, tested on this project's model. Each verdict follows from a stated "
    "criterion applied to numbers with 95% intervals; under it, the comparison that shows it, and a "
    "link that opens that view on its detailed page."
)
FINDINGS = ("amplification", "localized corruption", "neuroplasticity")
PAGES = {
    "attribution": "app_pages/attribution.py", "faithfulness": "app_pages/faithfulness.py",
    "knockout": "app_pages/knockout.py", "cmap": "app_pages/cmap.py", "circuit": "app_pages/circuit.py",
    "evolution": "app_pages/evolution.py",
}  # fmt: skip
COLOURS = {True: "green", False: "red", None: "orange"}


def badge(v: dict) -> str:
    return f":{COLOURS[v['holds']]}-badge[{VERDICT_WORDS[v['holds']]}]"


def numbers_table(v: dict) -> pd.DataFrame:
    """The verdict's numbers as the report writes them (3 decimals, 95% interval, what it is over)."""
    rows = [
        {"number": k, "value [95% interval]": e["text"], "interval over": e["over"]}
        for k, e in v["numbers"].items()
    ]
    return pd.DataFrame(rows)


def headline(v: dict) -> str:
    """The summary's first sentence, for the summary cards: the verdict over every seed or
    checkpoint with its tally ("… undetermined over 4 checkpoints (it fails on 1, …)"), which the
    badge beside it sums up. The first seed's numbers, which may judge otherwise, are below."""
    first = v["summary"].split(". ")[0]
    return readable(first if first.endswith(".") else f"{first}.")


def judge(root, why: str) -> None:
    """Say that a cache's findings are missing or older than its results; offer to judge them
    (the user's cache) or say how the read-only demo cache is rebuilt."""
    from ioi.runs.cache import is_demo

    where = "the demo results" if is_demo(root) else "your results"
    state = "have not been judged yet" if why == "missing" else "changed since their findings were judged"
    if is_demo(root):
        st.warning(f"The findings of {where} {state}; rebuild them with `python -m ioi reproduce "
                   "--from-cache --cache cache/demo` (with IOI_DEMO_WRITE=1).", icon="⚠️")  # fmt: skip
        return
    st.info(f"The findings of {where} {state}.", icon="ℹ️")
    hint = "runs the verdicts' paired bootstrap on the cached results (a few seconds)"
    if st.button("Judge the findings on your results", key=f"judge-{root}", help=hint):
        from ioi.present.findings import store_findings

        with st.spinner("Judging the findings on the cached results…"):
            store_findings(root)
        st.cache_data.clear()
        st.rerun()


def show_me(v: dict) -> None:
    view = dict(v["view"])
    page = PAGES.get(view.pop("page", ""))
    if page is not None:
        st.page_link(
            page, label="Show me on the detailed page", icon=":material/open_in_new:", query_params=view
        )


def amplification_charts(v) -> None:
    """Pretrained vs last clean DLA on one scale, their difference, and the faithfulness curve."""
    clean = by_id(v["view"].get("exp"))
    if clean is None or not clean.epochs_with("dla"):
        return
    last = clean.epochs_with("dla")[-1]
    a, b = result(clean, 0, "dla"), result(clean, last, "dla")
    if a is None or b is None:
        return
    span = charts.color_span(a.heads, b.heads)
    top, bottom = st.columns(2), st.columns(2)
    with top[0]:
        show_chart(*dla_view(clean, 0, a.heads, f"A: {clean.checkpoint_label(0)}", span), "find-amp-a")
    with top[1]:
        show_chart(*dla_view(clean, last, b.heads, f"B: {clean.checkpoint_label(last)}", span), "find-amp-b")
    with bottom[0]:
        show_chart(*dla_difference_view(clean, 0, a.heads, clean, last, b.heads), "find-amp-diff")
    chart = curves_view([clean], "faithfulness")
    with bottom[1]:
        if chart[0] is not None:
            show_chart(*chart, "find-amp-curve")


def corruption_charts(v) -> None:
    """The toxic run's DLA difference, its CMAP classes patched jointly, and its knockouts."""
    toxic = by_id(v["view"].get("exp"))
    if toxic is None or not toxic.epochs_with("dla"):
        return
    last = toxic.epochs_with("dla")[-1]
    a, b = result(toxic, 0, "dla"), result(toxic, last, "dla")
    cols = st.columns(2)
    with cols[0]:
        if a is not None and b is not None:
            show_chart(
                *dla_difference_view(toxic, 0, a.heads, toxic, last, b.heads), f"find-cor-diff-{toxic.id[:8]}"
            )
    epoch = int(v["view"].get("epoch", last))
    found = result(toxic, epoch, "cmap") if epoch in toxic.epochs_with("cmap") else None
    with cols[1]:
        if found is not None:
            a, b = toxic.checkpoint_label(epoch), toxic.checkpoint_label(0)
            classes = cmap_view(found, a, b)[3]
            if classes is not None and not classes.empty:
                caption = cmap_class_caption(found, a, b)
                chart = charts.class_bars(classes, value_title="change in F (logits)", title="CMAP per class")
                show_chart(chart, classes, caption, f"find-cor-cmap-{toxic.id[:8]}")
    if toxic.epochs_with("knockout"):
        chart, data, caption, notes = knockout_view(toxic, sorted({0, toxic.epochs_with("knockout")[-1]}))
        if chart is not None:
            show_chart(chart, data, " ".join([caption, *notes]), f"find-cor-ko-{toxic.id[:8]}")


def plasticity_charts(v) -> None:
    """The toxic → reversal logit-difference curve, then the pretrained and the reversed model's DLA
    side by side on one colour scale (whether the heads came back is judged by eye there)."""
    rev = by_id(v["view"].get("exp"))
    toxic = by_id(rev.parent) if rev is not None and rev.parent else None
    if rev is None or toxic is None:
        return
    chart = curves_view([toxic, rev], "logit_diff")
    if chart[0] is not None:
        show_chart(*chart, f"find-np-curve-{rev.id[:8]}")
    last = rev.epochs_with("dla")[-1] if rev.epochs_with("dla") else None
    before = result(toxic, 0, "dla") if toxic.epochs_with("dla") else None
    after = result(rev, last, "dla") if last is not None else None
    if before is None or after is None:
        return
    span = charts.color_span(before.heads, after.heads)
    cols = st.columns(2)
    for col, (exp, epoch, found) in zip(cols, ((toxic, 0, before), (rev, last, after))):
        with col:
            show_chart(*dla_view(exp, epoch, found.heads, f"DLA — {exp.checkpoint_label(epoch)}", span),
                       f"find-np-dla-{exp.id[:8]}-e{epoch}")  # fmt: skip
    st.caption("Both heatmaps share one colour scale.")


def edge_revival(v: dict) -> None:
    """A reversal's edge-level verdict, from its lineage comparison (the Evolution page's)."""
    st.markdown(f"**At the level of edges** — is the reversal's edge circuit closer to the pretrained one "
                f"than the toxic model's was? {badge(v)}")  # fmt: skip
    st.caption("A narrower question than neuroplasticity above: moving back towards the pretrained "
               "circuit, not restoring it.")  # fmt: skip
    st.write(readable(v["summary"]))
    st.caption(f"Criterion: {v['criterion']}")
    st.dataframe(numbers_table(v), hide_index=True, width="stretch", placeholder="—")
    show_me(v)


CHARTS = {"amplification": amplification_charts, "localized corruption": corruption_charts,
          "neuroplasticity": plasticity_charts}  # fmt: skip


# The toxic datasets in the order the story tells them (as the tour: subject duplication first).
# (A comment, not a string: Streamlit's magic would print a bare string on the page.)
STORY = ("subject_duplication", "name_moving", "duplication")


def story_rank(v: dict) -> int:
    base = v["scope"].removeprefix("reversal of ")
    return STORY.index(base) if base in STORY else len(STORY)


def scope(v: dict) -> str:
    return readable(v["scope"])


def where(v: dict) -> tuple[str, str, str]:
    """Which cache, model and run a verdict is about: an edge revival goes with the neuroplasticity
    verdict of the same reversal."""
    return v.get("root", ""), v.get("model", ""), v["scope"]


def title(v: dict) -> str:
    return f"{v['finding'].capitalize()}{f' — {scope(v)}' if v['scope'] else ''}"


def body() -> None:
    stored, pending = judged()
    for root, why in pending:
        judge(root, why)
    found = [v for v in stored if v["finding"] in FINDINGS]
    # Each reversal's edge revival (from its lineage comparison) is shown with its neuroplasticity.
    edges = {where(v): v for v in stored if v["finding"] == "edge revival"}
    if not found:
        st.info(
            "**No findings yet.** Run `python -m ioi reproduce` (or `precompute`) to build the results.",
            icon="ℹ️",
        )
        return
    by_finding = {f: sorted((v for v in found if v["finding"] == f), key=story_rank) for f in FINDINGS}
    cols = st.columns(3)
    for col, (finding, group) in zip(cols, by_finding.items()):
        with col.container(border=True):
            st.markdown(f"#### {finding.capitalize()}")
            if not group:
                st.caption("Not judged: the cache holds no runs for it.")
            for v in group:
                st.markdown(f"{badge(v)} **{scope(v) or 'clean fine-tuning'}**")
                st.caption(headline(v))
                if finding == "neuroplasticity" and where(v) in edges:
                    st.markdown(f"Edges moved back towards pretrained: {badge(edges[where(v)])}")
    for finding, group in by_finding.items():
        if not group:
            continue
        st.header(finding.capitalize())
        st.caption(f"Criterion: {group[0]['criterion']}")
        tabs = st.tabs([scope(v) or finding for v in group]) if len(group) > 1 else [st.container()]
        for tab, v in zip(tabs, group):
            with tab:
                st.markdown(f"**{title(v)}** {badge(v)}")
                st.write(readable(v["summary"]))
                st.dataframe(numbers_table(v), hide_index=True, width="stretch", placeholder="—")
                show_me(v)
                CHARTS[finding](v)
                if finding == "neuroplasticity" and where(v) in edges:
                    edge_revival(edges[where(v)])


show_user_errors(body)
