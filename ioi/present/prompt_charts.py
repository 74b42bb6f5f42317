"""Altair charts of one prompt (the Playground) and one head (the head page): the next-token
bars, a head's attention pattern as a token × token grid with IO, S1, S2 and END marked, the END
row as bars over the prompt, and a per-head heatmap that opens a head when a cell is clicked.

Each chart is one panel, or one panel per checkpoint side by side (`panels`: the frames of
several checkpoints stacked by `stack`, one Vega view in all, one shared colour scale): a page
that compares three checkpoints draws one chart where it would draw three, which is what keeps a
newly typed prompt quick to draw (BENCHMARKS.md, the Playground).

Pure like :mod:`ioi.present.charts`: tidy frames in (from :mod:`ioi.methods.prompt`), charts out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import altair as alt
import pandas as pd

from ioi.present.charts import _title, color_span, head_cells

ROLE_COLORS = {
    "IO": "#1f77b4",
    "S1": "#d62728",
    "S2": "#d62728",
    "S1 S2": "#d62728",
    "END": "#2ca02c",
    "": "#9e9e9e",
}
"""Bar colours by the role of a token: IO blue, S red (both occurrences), END green, others grey."""
_PAD = alt.AutoSizeParams(type="pad", contains="padding")
"""Fixed-size charts keep their size; legend and axes come on top (see `charts.head_heatmap`)."""
HEAD_SELECTION = "head"
"""The name of the click selection on a selectable heatmap (its event carries layer and head)."""
PANEL = "checkpoint"
"""The column of a stacked frame (`stack`) that names each row's panel."""


def stack(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The frames of several checkpoints as one, each row's panel (the mapping's key) in column
    `PANEL`: the data of a chart with `panels`."""
    return pd.concat([f.assign(**{PANEL: name}) for name, f in frames.items()], ignore_index=True)


def _in_order(field: str) -> alt.EncodingSortField:
    """A nominal axis in the order of the numeric column `field` (rank, position), panel by panel."""
    return alt.EncodingSortField(field, op="min")


def _sized(chart, panels: Sequence[str] | None, *, title: str, width: int, height: int, shared: bool = False):
    """`chart` at `width` × `height` px with its title: alone, or faceted into one panel per
    value of `panels` (in that order). The panels' x and y scales are their own unless `shared`
    (the same axis values in every panel, e.g. one prompt's tokens: the y axis is drawn once, on
    the left); the colour scale is always shared."""
    if panels is None:
        return chart.properties(title=_title(title), width=width, height=height, autosize=_PAD)
    header = alt.Header(labelFontSize=12, labelFontWeight="bold", labelLimit=400, labelOrient="top")
    out = chart.properties(width=width, height=height).facet(
        column=alt.Column(f"{PANEL}:N", sort=list(panels), title=None, header=header), spacing=16
    )
    if not shared:
        out = out.resolve_scale(x="independent", y="independent")
    return out.properties(title=_title(title), autosize=_PAD)


def shown_token(token: str) -> str:
    """A token as text on an axis: a leading space shown as '␣' so ' Mary' and 'Mary' differ."""
    return "␣" + token[1:] if token.startswith(" ") else token


def top_tokens_bars(
    top: pd.DataFrame, io: str, s: str, *, title: str = "", panels: Sequence[str] | None = None
) -> alt.Chart | alt.FacetChart:
    """Horizontal bars of the next-token probabilities in `top` (rows rank, token, prob), most
    likely first, IO's token blue, S's red, others grey; with `panels`, one panel per checkpoint
    of a `stack`-ed frame."""
    data = top.assign(shown=[shown_token(t) for t in top["token"]])
    data["role"] = ["IO" if t.strip() == io else "S" if t.strip() == s else "other" for t in top["token"]]
    data["label"] = [f"{r}. {t}" for r, t in zip(data["rank"], data["shown"])]
    rows = int(data["rank"].max()) if len(data) else 0
    chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=alt.Y("label:N", sort=_in_order("rank"), title=None, axis=alt.Axis(labelLimit=200)),
            x=alt.X("prob:Q", title="probability at END", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color(
                "role:N",
                title="token is",
                legend=alt.Legend(orient="bottom"),
                scale=alt.Scale(domain=["IO", "S", "other"], range=["#1f77b4", "#d62728", "#9e9e9e"]),
            ),
            tooltip=[
                alt.Tooltip("label:N", title="token"),
                alt.Tooltip("prob:Q", format=".4f"),
                alt.Tooltip("logit:Q", format=".3f"),
            ],
        )
    )
    return _sized(chart, panels, title=title, width=200, height=22 * rows)


def _axis_label(index: pd.Series, token: pd.Series, role: pd.Series) -> list[str]:
    return [f"{i}: {shown_token(t)}" + (f"  [{r}]" if r else "") for i, t, r in zip(index, token, role)]


def attention_grid(
    frame: pd.DataFrame,
    *,
    title: str = "",
    cell: int = 17,
    max_width: int | None = None,
    panels: Sequence[str] | None = None,
    shared: bool = False,
) -> alt.LayerChart | alt.FacetChart:
    """A head's attention pattern, queries as rows and keys as columns (rows of
    :func:`ioi.methods.prompt.pattern_frame`), one sequential colour scale from 0 to 1; the rows and
    columns of IO, S1, S2 and END are labelled with their role in bold and their cells outlined.
    Cells are `cell` pixels, smaller when the grid would be wider than `max_width`. With `panels`,
    one grid per checkpoint of a `stack`-ed frame (`shared`: the same tokens in each, their labels
    drawn once)."""
    data = frame.copy()
    data["q_label"] = _axis_label(
        data["query"], data["query_token"].str.split(":", n=1).str[1], data["role_query"]
    )
    data["k_label"] = _axis_label(data["key"], data["key_token"].str.split(":", n=1).str[1], data["role_key"])
    n = int(data["query"].max()) + 1
    cell = max(8, min(cell, max_width // n)) if max_width else cell  # a long prompt gets smaller cells
    bold = alt.ExprRef("indexof(datum.label, '[') >= 0 ? 'bold' : 'normal'")
    base = alt.Chart().encode(  # the data on the layer (see `charts.head_cells`)
        x=alt.X(
            "k_label:N",
            sort=_in_order("key"),
            title="key (attended to)",
            axis=alt.Axis(
                labelAngle=-60, labelFontWeight=bold, labelLimit=160, labelOverlap=False, labelFontSize=9
            ),
        ),
        y=alt.Y(
            "q_label:N",
            sort=_in_order("query"),
            title="query (attending)",
            axis=alt.Axis(labelFontWeight=bold, labelOverlap=False, labelFontSize=9),
        ),
        tooltip=[
            alt.Tooltip("q_label:N", title="query"),
            alt.Tooltip("k_label:N", title="key"),
            alt.Tooltip("attention:Q", format=".3f"),
        ],
    )
    cells = base.mark_rect().encode(
        color=alt.Color(
            "attention:Q",
            title="attention",
            scale=alt.Scale(scheme="blues", domain=[0, 1]),
            legend=alt.Legend(orient="bottom", gradientLength=120),
        )
    )
    marked = base.transform_filter((alt.datum.role_key != "") & (alt.datum.role_query == "END")).mark_rect(
        fill=None, stroke="#d62728", strokeWidth=2
    )
    grid = alt.layer(cells, marked, data=data)
    return _sized(grid, panels, title=title, width=cell * n, height=cell * n, shared=shared)


def end_row_bars(
    frame: pd.DataFrame, *, title: str = "", width: int = 420, panels: Sequence[str] | None = None,
    shared: bool = False,
) -> alt.Chart | alt.FacetChart:  # fmt: skip
    """The END row of a head's pattern as bars over the prompt's tokens (rows of
    :func:`ioi.methods.prompt.end_row`), coloured by role (IO blue, S red, END green); with
    `panels`, one panel per checkpoint of a `stack`-ed frame (`shared`: the same tokens in each)."""
    data = frame.assign(label=_axis_label(frame["pos"], frame["token"], frame["role"]))
    data["role"] = data["role"].where(data["role"].isin(ROLE_COLORS), "S1 S2")
    # S1 and S2 share S's red, so they share one legend entry (two red swatches read as a mistake)
    names = {"": "other", "S1": "S (S1, S2)", "S2": "S (S1, S2)", "S1 S2": "S (S1, S2)"}
    roles = list({names.get(r, r): r for r in ROLE_COLORS if r in set(data["role"])}.items())
    data["role_name"] = [names.get(r, r) for r in data["role"]]
    chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X(
                "label:N",
                sort=_in_order("pos"),
                title=None,
                axis=alt.Axis(labelAngle=-60, labelLimit=160, labelOverlap=False, labelFontSize=9),
            ),
            y=alt.Y("attention:Q", title="attention from END", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color(
                "role_name:N",
                title="token is",
                legend=alt.Legend(orient="bottom"),
                scale=alt.Scale(domain=[n for n, _ in roles], range=[ROLE_COLORS[r] for _, r in roles]),
            ),
            tooltip=[alt.Tooltip("label:N", title="token"), alt.Tooltip("attention:Q", format=".3f")],
        )
    )
    return _sized(chart, panels, title=title, width=width, height=180, shared=shared)


def head_heatmaps(
    frame: pd.DataFrame, panels: Sequence[str], *, title: str = "", value_title: str = "value",
    cell: int | None = None,
) -> alt.FacetChart:  # fmt: skip
    """`charts.head_heatmap` of each checkpoint of a `stack`-ed per-head frame, side by side on
    one diverging colour scale (from −max |value| to +max |value| over all of them), the layer
    axis drawn once."""
    cells, width, height = head_cells(frame, value_title=value_title, cell=cell, span=color_span(frame))
    return _sized(cells, panels, title=title, width=width, height=height, shared=True)


def selectable(heatmap: alt.LayerChart | alt.FacetChart) -> alt.LayerChart | alt.FacetChart:
    """A per-head heatmap (:func:`ioi.present.charts.head_heatmap`, or `head_heatmaps`) whose cells
    are clickable: a click selects that head (selection `HEAD_SELECTION`, fields layer and head,
    and the panel's checkpoint in panels)."""
    faceted = isinstance(heatmap, alt.FacetChart)
    fields = ["layer", "head", PANEL] if faceted else ["layer", "head"]
    pick = alt.selection_point(name=HEAD_SELECTION, fields=fields, on="click")
    out = heatmap.copy(deep=True)
    layers = out.spec.layer if faceted else out.layer
    layers[0] = layers[0].add_params(pick)
    return out


def clicked_head(event) -> tuple[int, int] | None:
    """(layer, head) of the cell clicked in a `selectable` heatmap, from Streamlit's selection
    state ({"selection": {"head": [{"layer": L, "head": H}]}}), or None."""
    try:
        points = event["selection"][HEAD_SELECTION]
    except (KeyError, TypeError):
        return None
    if not points or "layer" not in points[0] or "head" not in points[0]:
        return None
    return int(points[0]["layer"]), int(points[0]["head"])


def clicked_panel(event) -> str | None:
    """The panel (checkpoint) of the cell clicked in a `selectable` `head_heatmaps`, or None."""
    try:
        points = event["selection"][HEAD_SELECTION]
    except (KeyError, TypeError):
        return None
    return points[0].get(PANEL) if points else None
