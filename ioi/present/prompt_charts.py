"""Altair charts of one prompt (the Playground) and one head (the head page): the next-token
bars, a head's attention pattern as a token × token grid with IO, S1, S2 and END marked, the END
row as bars over the prompt, and a per-head heatmap that opens a head when a cell is clicked.

Pure like :mod:`ioi.present.charts`: tidy frames in (from :mod:`ioi.methods.prompt`), charts out.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from ioi.present.charts import _title

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


def shown_token(token: str) -> str:
    """A token as text on an axis: a leading space shown as '␣' so ' Mary' and 'Mary' differ."""
    return "␣" + token[1:] if token.startswith(" ") else token


def top_tokens_bars(top: pd.DataFrame, io: str, s: str, *, title: str = "") -> alt.Chart:
    """Horizontal bars of the next-token probabilities in `top` (rows rank, token, prob), most
    likely first, IO's token blue, S's red, others grey."""
    data = top.assign(shown=[shown_token(t) for t in top["token"]])
    data["role"] = ["IO" if t.strip() == io else "S" if t.strip() == s else "other" for t in top["token"]]
    order = [f"{r}. {t}" for r, t in zip(data["rank"], data["shown"])]
    data["label"] = order
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=200)),
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
        .properties(title=_title(title), width=200, height=22 * len(data), autosize=_PAD)
    )


def _axis_label(index: pd.Series, token: pd.Series, role: pd.Series) -> list[str]:
    return [f"{i}: {shown_token(t)}" + (f"  [{r}]" if r else "") for i, t, r in zip(index, token, role)]


def attention_grid(
    frame: pd.DataFrame, *, title: str = "", cell: int = 17, max_width: int | None = None
) -> alt.LayerChart:
    """A head's attention pattern, queries as rows and keys as columns (rows of
    :func:`ioi.methods.prompt.pattern_frame`), one sequential colour scale from 0 to 1; the rows and
    columns of IO, S1, S2 and END are labelled with their role in bold and their cells outlined.
    Cells are `cell` pixels, smaller when the grid would be wider than `max_width`."""
    data = frame.copy()
    data["q_label"] = _axis_label(
        data["query"], data["query_token"].str.split(":", n=1).str[1], data["role_query"]
    )
    data["k_label"] = _axis_label(data["key"], data["key_token"].str.split(":", n=1).str[1], data["role_key"])
    n = int(data["query"].max()) + 1
    cell = max(8, min(cell, max_width // n)) if max_width else cell  # a long prompt gets smaller cells
    order_q = list(dict.fromkeys(data.sort_values("query")["q_label"]))
    order_k = list(dict.fromkeys(data.sort_values("key")["k_label"]))
    bold = alt.ExprRef("indexof(datum.label, '[') >= 0 ? 'bold' : 'normal'")
    base = alt.Chart(data).encode(
        x=alt.X(
            "k_label:N",
            sort=order_k,
            title="key (attended to)",
            axis=alt.Axis(
                labelAngle=-60, labelFontWeight=bold, labelLimit=160, labelOverlap=False, labelFontSize=9
            ),
        ),
        y=alt.Y(
            "q_label:N",
            sort=order_q,
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
    return (cells + marked).properties(
        title=_title(title),
        width=cell * n,
        height=cell * n,
        autosize=_PAD,
    )


def end_row_bars(frame: pd.DataFrame, *, title: str = "", width: int = 420) -> alt.Chart:
    """The END row of a head's pattern as bars over the prompt's tokens (rows of
    :func:`ioi.methods.prompt.end_row`), coloured by role (IO blue, S red, END green)."""
    data = frame.assign(label=_axis_label(frame["pos"], frame["token"], frame["role"]))
    data["role"] = data["role"].where(data["role"].isin(ROLE_COLORS), "S1 S2")
    roles = [r for r in ROLE_COLORS if r in set(data["role"])]
    names = {"": "other"}
    data["role_name"] = [names.get(r, r) for r in data["role"]]
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X(
                "label:N",
                sort=list(data["label"]),
                title=None,
                axis=alt.Axis(labelAngle=-60, labelLimit=160, labelOverlap=False, labelFontSize=9),
            ),
            y=alt.Y("attention:Q", title="attention from END", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color(
                "role_name:N",
                title="token is",
                legend=alt.Legend(orient="bottom"),
                scale=alt.Scale(
                    domain=[names.get(r, r) for r in roles], range=[ROLE_COLORS[r] for r in roles]
                ),
            ),
            tooltip=[alt.Tooltip("label:N", title="token"), alt.Tooltip("attention:Q", format=".3f")],
        )
        .properties(title=_title(title), width=width, height=180, autosize=_PAD)
    )


def selectable(heatmap: alt.LayerChart) -> alt.LayerChart:
    """A per-head heatmap (:func:`ioi.present.charts.head_heatmap`) whose cells are clickable: a
    click selects that head (selection `HEAD_SELECTION`, fields layer and head)."""
    pick = alt.selection_point(name=HEAD_SELECTION, fields=["layer", "head"], on="click")
    out = heatmap.copy(deep=True)
    out.layer[0] = out.layer[0].add_params(pick)
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


def head_row(frame: pd.DataFrame | None, layer: int, head: int) -> dict:
    """The row of head (layer, head) of a per-head table as a dict ({} when absent)."""
    if frame is None or frame.empty:
        return {}
    rows = frame[(frame["layer"] == layer) & (frame["head"] == head)]
    return rows.iloc[0].to_dict() if len(rows) else {}
