"""Widgets shared by the pages: pickers whose choice lives in the URL, chart output, messages.

URL state: every picker reads its starting value from `st.query_params` (a bookmarked or reloaded
view opens as it was) and writes its value back, so the address bar always names the view:
``exp`` (experiment id), ``epoch``, ``compare`` (``<id>:<epoch>``), ``mode`` and page-specific keys.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from app_pages._store import Experiment, UserError, experiments, result
from ioi.present import charts, prompt_charts


def url_value(name: str) -> str | None:
    """The query parameter `name` of the page's URL, or None."""
    return st.query_params.get(name)


def set_url(**values: Any) -> None:
    """Write view state into the URL (None removes a key); no rerun."""
    for name, value in values.items():
        if value is None or value == "":
            if name in st.query_params:
                del st.query_params[name]
        elif st.query_params.get(name) != str(value):
            st.query_params[name] = str(value)


def choice(
    label: str, options: Sequence[Any], key: str, *, param: str | None, default: Any = None,
    where=st, format_func: Callable[[Any], str] = str, radio: bool = False, **kwargs: Any,
) -> Any:  # fmt: skip
    """A selectbox (or radio) of `options` that opens on the URL's `param` when it names one of
    them, else on `default` (else the first), and writes the choice back to the URL (with
    `param` None the caller keeps the URL)."""
    options = list(options)
    by_text = {str(o): o for o in options}
    start = by_text.get(
        (url_value(param) if param else None) or "", default if default in options else options[0]
    )
    widget = where.radio if radio else where.selectbox
    chosen = widget(label, options, index=options.index(start), key=key, format_func=format_func, **kwargs)
    if param:
        set_url(**{param: chosen})
    return chosen


def pick_experiment(
    label: str, key: str, *, analysis: str | None = None, where=st, param: str | None = "exp",
    default: Experiment | None = None, exclude: Callable[[Experiment], bool] | None = None,
) -> Experiment | None:  # fmt: skip
    """A selectbox of experiments (only those with `analysis` cached), labelled by lineage; opens
    on the URL's `param`, else the experiment opened from the Experiments page, else `default`."""
    found = [e for e in experiments() if analysis is None or e.epochs_with(analysis)]
    if not found:
        return None
    ids = [e.id for e in found]
    opened = st.session_state.get("opened_experiment") if param == "exp" else None
    start = opened if opened in ids else (default.id if default is not None and default.id in ids else ids[0])
    labels = {e.id: e.label for e in found}
    chosen = choice(label, ids, key, param=param, default=start, where=where, format_func=labels.get)
    return found[ids.index(chosen)]


def pick_epoch(
    exp: Experiment, name: str, label: str, key: str, *, where=st, param: str | None = "epoch",
    default: int | None = None,
) -> int:  # fmt: skip
    """A selectbox of the epochs at which `name` is cached; epoch 0 is labelled as what it is
    (the pretrained model, or the toxic model a reversal starts from). Defaults to `default`,
    else the latest epoch."""
    epochs = exp.epochs_with(name)
    start = default if default in epochs else epochs[-1]
    # The key carries the experiment: another experiment's epochs are another widget.
    return choice(label, epochs, f"{key}-{exp.id}", param=param, default=start, where=where,
                  format_func=exp.epoch_label)  # fmt: skip


def parse_checkpoint(text: str | None) -> tuple[str | None, int | None]:
    """ "<id>:<epoch>" (the URL's ``compare``) -> (id, epoch); (None, None) when malformed."""
    exp_id, _, epoch = (text or "").partition(":")
    return (exp_id, int(epoch)) if exp_id and epoch.isdigit() else (None, None)


def empty_state(what: str, how: str) -> None:
    """Say that there is nothing to show and what to run to get it."""
    st.info(f"**No {what} yet.** {how}", icon="ℹ️")


def show_user_errors(fn: Callable[[], None]) -> None:
    """Run a page body; a user's error (ValueError and kin) is shown as a message, not a trace."""
    try:
        fn()
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        st.error(str(err), icon="⚠️")


def recompute_button(exp: Experiment, name: str, key: str) -> None:
    """Offer to recompute a missing or damaged entry by re-running its experiment as a job."""
    if st.button(f"Recompute {name}", key=key, help="re-runs the experiment's job; cached parts are reused"):
        from app_pages._forms import resubmit

        st.success(f"Job {resubmit(exp, name)} started; follow it on the Experiments page.")


def result_or_offer(exp: Experiment, epoch: int, name: str):
    """The cached result, or None after saying it is missing or damaged, with a recompute button."""
    try:
        found = result(exp, epoch, name)
    except UserError as err:
        st.error(f"{err} It can be recomputed.", icon="⚠️")
        found = None
    else:
        if found is None:
            st.warning(f"No {name} result is cached at {exp.epoch_label(epoch)} of {exp.label}.", icon="⚠️")
    if found is None:
        recompute_button(exp, name, f"recompute-{name}-{exp.id}-{epoch}")
    return found


_SPECS: dict[tuple[int, bool], tuple[alt.TopLevelMixin, dict]] = {}
_SPECS_LOCK = threading.Lock()


def vega_spec(chart: alt.TopLevelMixin, select_head: bool = False) -> dict:
    """The chart's Vega-Lite spec as Streamlit's own conversion makes it (Altair's "none" theme:
    no fixed 300-px view), without the schema validation (tests/test_charts.py validates every
    chart builder), converted once per chart object: a memoised view redraws without converting.
    With `select_head`, the spec of the clickable heatmap (`prompt_charts.selectable`)."""
    with _SPECS_LOCK:
        kept = _SPECS.get((id(chart), select_head))
        if kept is None or kept[0] is not chart:
            drawn = prompt_charts.selectable(chart) if select_head else chart
            with alt.theme.enable("none"):
                kept = (chart, drawn.to_dict(validate=False))
            while len(_SPECS) >= 256:
                _SPECS.pop(next(iter(_SPECS)))
            _SPECS[(id(chart), select_head)] = kept
    return copy.deepcopy(kept[1])  # Streamlit moves the datasets out of the spec it is given


def show_chart(
    chart: alt.TopLevelMixin, data: pd.DataFrame, caption: str, key: str, *, select_head: bool = False
) -> Any:
    """The chart, its caption, and downloads: CSV of `data`, PNG and SVG of the chart. Charts of a
    fixed size (heatmaps) keep it; others fill the width. With `select_head` (a per-head heatmap)
    it returns the chart's selection event (`prompt_charts.clicked_head` reads the clicked head)."""
    spec = vega_spec(chart, select_head)
    fixed = isinstance(spec.get("width"), int)  # a heatmap: its cells set its size ("pad" autosize)
    height = spec.get("height")
    # Charts that fill the width: Streamlit fits the whole chart (title, axes, legend) into
    # `height` and collapses ordinal axes without one, so pass the plot's height plus room for the rest.
    room = (spec.get("usermeta") or {}).get("room", 130)  # a chart may say how much it needs
    # the key gives every chart its own element: a reused one keeps the last one's size
    event = st.vega_lite_chart(
        spec=spec,
        key=f"{key}-chart",
        on_select="rerun" if select_head else "ignore",
        width="content" if fixed or "facet" in spec else "stretch",
        height=height + room if isinstance(height, int) and not fixed else "content",
    )
    st.caption(caption)
    with st.container(horizontal=True, gap="small"):
        st.download_button(
            "CSV", data.to_csv(index=False), file_name=f"{key}.csv", mime="text/csv", key=f"{key}-csv",
            on_click="ignore", icon=":material/download:",
        )  # fmt: skip
        st.download_button(
            "PNG", lambda: charts.chart_bytes(chart, "png"), file_name=f"{key}.png", mime="image/png",
            key=f"{key}-png", on_click="ignore", icon=":material/image:",
        )  # fmt: skip
        st.download_button(
            "SVG", lambda: charts.chart_bytes(chart, "svg"), file_name=f"{key}.svg", mime="image/svg+xml",
            key=f"{key}-svg", on_click="ignore", icon=":material/image:",
        )  # fmt: skip
    return event if select_head else None


HEAD_PAGE = "app_pages/head.py"


def heatmap_opening_heads(
    chart, data: pd.DataFrame, caption: str, key: str, exp: Experiment, epoch: int, *,
    panels: dict[str, tuple[Experiment, int]] | None = None, **params: str,
) -> None:  # fmt: skip
    """A per-head heatmap (`show_chart`) whose clicked cell opens that head's page at `exp`,
    `epoch` (and `params`, e.g. the prompt) in the URL; in a heatmap of several checkpoints
    (`prompt_charts.head_heatmaps`), at the clicked panel's (`panels`: panel -> experiment, epoch)."""
    event = show_chart(chart, data, caption, key, select_head=True)
    clicked = prompt_charts.clicked_head(event)
    if clicked is not None:
        exp, epoch = (panels or {}).get(prompt_charts.clicked_panel(event) or "", (exp, epoch))
        query = {"head": f"{clicked[0]}.{clicked[1]}", "exp": exp.id, "epoch": str(epoch), **params}
        st.switch_page(HEAD_PAGE, query_params=query)


def heads_with_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """A per-head table with an L.H column first, for display and CSV."""
    out = frame.copy()
    out.insert(0, "L.H", charts.head_labels(out))
    return out


def circuit_caption(circuit) -> str:
    """The heads of a circuit in words, class by class (empty classes left out)."""
    parts = [f"{c}: {' '.join(map(str, hs))}" for c, hs in circuit.classes.items() if hs]
    return "; ".join(parts) if parts else "no circuit heads found"
