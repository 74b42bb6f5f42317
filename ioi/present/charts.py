"""Altair chart builders over tidy DataFrames, shared by the dashboard and the reproduction report.

Every builder is pure: a DataFrame (and a few options) in, an Altair chart out; nothing here
reads caches or runs models. Per-head frames have columns ``layer``, ``head``, ``value`` (one row
per head, as ``AnalysisResult.heads``); heads are labelled ``L.H``. Signed per-head effects use a
diverging red–blue scale centred at 0 so that sign reads at a glance, and circuit heads are
outlined. `chart_bytes` renders a chart as PNG or SVG (vl-convert) for downloads.
"""

from __future__ import annotations

import textwrap

import altair as alt
import pandas as pd

from ioi.task.circuit import Circuit, Head

# Class colours of the circuit diagram and the class bars (downstream first, as CLASS_POSITIONS).
CLASS_COLORS: dict[str, str] = {
    "name mover": "#1f77b4",
    "backup name mover": "#6baed6",
    "negative name mover": "#d62728",
    "s-inhibition": "#9467bd",
    "induction": "#2ca02c",
    "duplicate token": "#8c564b",
    "previous token": "#ff7f0e",
}
# One colour per lineage on every chart (fixed, so adding a run never recolours the others); a
# reversal is a darker shade of the toxic run it reverses.
LINEAGE_COLORS: dict[str, str] = {
    "clean": "#1f77b4",
    "name moving": "#ff7f0e",
    "reversal of name moving": "#a63603",
    "subject duplication": "#d62728",
    "reversal of subject duplication": "#67000d",
    "duplication": "#9467bd",
    "reversal of duplication": "#3f007d",
}
EMPTY_LOOK = 'style="rounded,dashed,filled", fillcolor="#f7f7f7", color="#999999", fontcolor="#777777"'
# How the IOI classes feed each other (sender -> receiver, with the input they write into).
CIRCUIT_EDGES: tuple[tuple[str, str, str], ...] = (
    ("previous token", "induction", "K at S1+1"),
    ("duplicate token", "s-inhibition", "V at S2"),
    ("induction", "s-inhibition", "V at S2"),
    ("s-inhibition", "name mover", "Q at END"),
    ("s-inhibition", "backup name mover", "Q at END"),
    ("s-inhibition", "negative name mover", "Q at END"),
    ("name mover", "logits", "output at END"),
    ("backup name mover", "logits", "output at END"),
    ("negative name mover", "logits", "output at END (against IO)"),
)


def lineage(scenario: str, parent_scenario: str | None = None) -> str:
    """A run's lineage in words, the key of `LINEAGE_COLORS`: "clean", "subject duplication",
    "reversal of subject duplication" (a reversal names the toxic scenario it starts from)."""
    words = scenario.replace("_", " ")
    if scenario == "reversal":
        return f"reversal of {parent_scenario.replace('_', ' ')}" if parent_scenario else "reversal"
    return words


def lineage_color(field: str, title: str = "run", domain: list[str] | None = None) -> alt.Color:
    """A colour encoding of `field` (lineage names) with the fixed `LINEAGE_COLORS`, listing the
    lineages of `domain` (default all) in their fixed order; other values get grey."""
    shown = domain if domain is not None else list(LINEAGE_COLORS)
    names = [n for n in LINEAGE_COLORS if n in shown] + [d for d in shown if d not in LINEAGE_COLORS]
    colors = [LINEAGE_COLORS.get(n, "#7f7f7f") for n in names]
    scale = alt.Scale(domain=names, range=colors)
    return alt.Color(f"{field}:N", title=title, scale=scale, legend=alt.Legend(labelLimit=320))


def head_labels(frame: pd.DataFrame) -> pd.Series:
    """The ``L.H`` label of every row of a per-head frame."""
    return frame["layer"].astype(int).astype(str) + "." + frame["head"].astype(int).astype(str)


def with_classes(frame: pd.DataFrame, circuit: Circuit | None) -> pd.DataFrame:
    """A copy of a per-head frame with columns ``label`` (L.H) and ``class`` (the head's circuit
    class, or "" when it is not in `circuit`)."""
    out = frame.copy()
    out["label"] = head_labels(out)
    if circuit is None:
        out["class"] = out["class"].fillna("") if "class" in out else ""
    else:
        out["class"] = [
            circuit.class_of(Head(int(la), int(h))) or "" for la, h in zip(out["layer"], out["head"])
        ]
    return out


def _title(text: str, n: int = 56) -> alt.TitleParams:
    """A chart title never cut to the plot's width: its lines, wrapped at spaces at `n` characters."""
    return alt.TitleParams(text=textwrap.wrap(text, n) or text, limit=2000, anchor="start")


def color_span(*frames: pd.DataFrame, field: str = "value") -> float:
    """The largest |`field`| over `frames`: one symmetric colour scale for panels compared side by side."""
    span = max((float(f[field].abs().max()) for f in frames if len(f)), default=1.0)
    return span if span > 0 else 1.0


def _diverging(field: str, title: str, frame: pd.DataFrame, span: float | None = None) -> alt.Color:
    """Red (negative) – white (0) – blue (positive), symmetric so 0 is always the midpoint."""
    span = span if span is not None else color_span(frame, field=field)
    return alt.Color(
        f"{field}:Q",
        title=title,
        scale=alt.Scale(scheme="redblue", domain=[-span, span], domainMid=0),
    )


def head_heatmap(
    frame: pd.DataFrame, *, title: str = "", value_title: str = "value", circuit: Circuit | None = None,
    field: str = "value", cell: int | None = None, span: float | None = None,
) -> alt.LayerChart:  # fmt: skip
    """Layers × heads heatmap of `field`, diverging colour centred at 0 (from −`span` to `span`,
    default this frame's largest |value|), tooltips L.H / value / class, and the heads of
    `circuit` (or of a ``class`` column) outlined in black."""
    cells, width, height = head_cells(frame, value_title=value_title, circuit=circuit, field=field,
                                      cell=cell, span=span)  # fmt: skip
    # "pad": the cells keep their size and the legend comes on top (Streamlit's default "fit"
    # squeezes axes, legend and cells together into `width`).
    pad = alt.AutoSizeParams(type="pad", contains="padding")
    return cells.properties(title=_title(title), width=width, height=height, autosize=pad)


def head_cells(
    frame: pd.DataFrame, *, value_title: str = "value", circuit: Circuit | None = None, field: str = "value",
    cell: int | None = None, span: float | None = None,
) -> tuple[alt.LayerChart, int, int]:  # fmt: skip
    """The layers of `head_heatmap` (cells and outlines, no size or title) with the plot's width
    and height in pixels: for a heatmap drawn inside another chart (one panel per checkpoint)."""
    if frame.empty:
        raise ValueError("no heads to draw: the per-head table is empty")
    data = with_classes(frame, circuit)
    n_layers = int(data["layer"].max()) + 1
    n_heads = int(data["head"].max()) + 1
    cell = cell or max(22, min(40, 400 // n_heads))  # small models get big cells, GPT-2 fits 400 px
    base = alt.Chart().encode(  # the data on the layer: Altair need not compare the layers' data
        x=alt.X("head:O", title="head", sort=list(range(n_heads)), axis=alt.Axis(labelAngle=0)),
        y=alt.Y("layer:O", title="layer", sort=list(range(n_layers))),
        tooltip=[
            alt.Tooltip("label:N", title="head (L.H)"),
            alt.Tooltip(f"{field}:Q", title=value_title, format=".4f"),
            alt.Tooltip("class:N", title="circuit class"),
        ],
    )
    cells = base.mark_rect().encode(color=_diverging(field, value_title, data, span))
    outline = (
        base.transform_filter(alt.datum["class"] != "")
        .mark_rect(fill=None, stroke="black", strokeWidth=2)
        .encode(strokeDash=alt.value([1, 0]))
    )
    return alt.layer(cells, outline, data=data), max(160, cell * n_heads), max(120, cell * n_layers)


def difference_frame(a: pd.DataFrame, b: pd.DataFrame, field: str = "value") -> pd.DataFrame:
    """Per head: `field` of `b` minus `field` of `a` (columns layer, head, a, b, value)."""
    keep = ["layer", "head", field]
    merged = a[keep].merge(b[keep], on=["layer", "head"], suffixes=("_a", "_b"), validate="one_to_one")
    if len(merged) != len(a) or len(merged) != len(b):
        raise ValueError(
            "the two checkpoints have different heads (different model shapes); pick a matching pair"
        )
    merged = merged.rename(columns={f"{field}_a": "a", f"{field}_b": "b"})
    merged["value"] = merged["b"] - merged["a"]
    return merged


def difference_heatmap(a: pd.DataFrame, b: pd.DataFrame, *, title: str = "", value_title: str = "B − A",
                       circuit: Circuit | None = None) -> alt.LayerChart:  # fmt: skip
    """Heatmap of the per-head difference B − A (see `difference_frame`)."""
    return head_heatmap(difference_frame(a, b), title=title, value_title=value_title, circuit=circuit)


def epoch_curves(
    frame: pd.DataFrame,
    *,
    y: str = "value",
    y_title: str = "value",
    series: str = "series",
    low: str | None = "low",
    high: str | None = "high",
    reference: pd.DataFrame | None = None,
    title: str = "",
    color: str | None = None,
    panel: str | None = None,
    columns: int = 2,
) -> alt.TopLevelMixin:
    """Lines of `y` against ``epoch``, one per `series`, with a band from `low` to `high` where
    those columns exist, and `reference` points (columns epoch, value, label) drawn as black
    diamonds with their label — e.g. the paper's GPT-2 numbers.

    `color` names a column of lineage names coloured with `LINEAGE_COLORS` (default: colour by
    `series`). With `panel`, one small chart per value of that column (reference rows need it
    too), each with its own epoch axis so a 5-epoch run is not squeezed beside a 100-epoch one;
    the y axis is shared so panels compare."""
    if frame.empty:
        raise ValueError("no epochs to draw")
    data = frame.assign(_kind="curve")
    if reference is not None and not reference.empty:
        ref = reference.rename(columns={"value": y}) if y != "value" else reference
        data = pd.concat([data, ref.assign(_kind="reference")], ignore_index=True)
    far = data.groupby(panel)["epoch"].transform("max") if panel else data["epoch"].max()
    data["_right"] = data["epoch"] > 0.6 * far  # a reference label there reads leftwards, inside the plot
    enc_color = (
        lineage_color(color, domain=sorted(frame[color].dropna().unique())) if color else
        alt.Color(f"{series}:N", title=series)
    )  # fmt: skip
    curves = alt.Chart().transform_filter(alt.datum["_kind"] == "curve")
    epochs = alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1, format="d"))  # whole epochs
    base = curves.encode(x=epochs, color=enc_color)
    if color:
        base = base.encode(detail=f"{series}:N")
    layers: list[alt.Chart] = []
    if low and high and low in frame and high in frame and frame[[low, high]].notna().any().any():
        band = base.mark_area(opacity=0.2).encode(y=f"{low}:Q", y2=f"{high}:Q")
        quiet = enc_color.copy(deep=True)
        quiet.legend = None  # the band's faded swatch would stand in the legend for the line
        layers.append(band.encode(color=quiet))
    shown = alt.Tooltip(f"{y}:Q", title=y_title, format=".4f")
    tooltip = [alt.Tooltip(f"{series}:N", title="run"), "epoch:Q", shown]
    layers.append(base.mark_line(point=True).encode(y=alt.Y(f"{y}:Q", title=y_title), tooltip=tooltip))
    if reference is not None and not reference.empty:
        ref = alt.Chart().transform_filter(alt.datum["_kind"] == "reference").encode(x="epoch:Q", y=f"{y}:Q")
        layers.append(
            ref.mark_point(shape="diamond", size=120, filled=True, color="black").encode(
                tooltip=["label:N", "epoch:Q", alt.Tooltip(f"{y}:Q", format=".4f")]
            )
        )
        for right in (False, True):
            side = ref.transform_filter(alt.datum["_right"] == right)
            text = side.mark_text(align=["left", "right"][right], dx=-8 if right else 8, dy=12, fontSize=10)
            layers.append(text.encode(text="label:N"))
    if panel is None:
        return alt.layer(*layers, data=data).properties(title=_title(title), width="container", height=320)
    return (
        alt.layer(*layers, data=data)
        .properties(width=330, height=220)
        .facet(alt.Facet(f"{panel}:N", title=None, sort=list(dict.fromkeys(data[panel]))), columns=columns)
        .resolve_scale(x="independent")
        .properties(title=_title(title))
    )


def knockout_bars(
    frame: pd.DataFrame,
    *,
    target: str = "target",
    value: str = "value",
    series: str = "checkpoint",
    value_title: str = "logit difference",
    baseline: float | None = None,
    heads: str | None = "heads",
    low: str = "lo",
    high: str = "hi",
    title: str = "",
) -> alt.LayerChart:
    """Grouped horizontal bars: `value` for each knocked-out `target`, one bar per `series`
    (checkpoint), each labelled with the `heads` it knocked out (a class can hold other heads at
    another checkpoint), with error bars from `low` to `high` where the frame has them; an optional
    dashed rule at `baseline` (the intact model's value)."""
    if frame.empty:
        raise ValueError("no knockouts to draw")
    base = alt.Chart(frame).encode(
        y=alt.Y(f"{target}:N", title="knocked out", sort=None, axis=alt.Axis(labelLimit=260)),
        yOffset=alt.YOffset(f"{series}:N", sort=None),
        x=alt.X(f"{value}:Q", title=value_title),
    )
    tooltip = [f"{target}:N", f"{series}:N", alt.Tooltip(f"{value}:Q", title=value_title, format=".4f")]
    tooltip += [alt.Tooltip(f"{c}:Q", title=f"95% CI {c}", format=".4f") for c in (low, high) if c in frame]
    # below the bars, labels uncut: a checkpoint label ("subject duplication, epoch 3") is long
    legend = alt.Legend(orient="bottom", direction="vertical", labelLimit=0)
    color = alt.Color(f"{series}:N", title=series, sort=None, legend=legend)
    layers: list[alt.Chart] = [base.mark_bar().encode(color=color, tooltip=tooltip + (
        [alt.Tooltip(f"{heads}:N", title="heads")] if heads and heads in frame else []))]  # fmt: skip
    ci = low in frame and high in frame
    if ci:
        bounds = alt.X(f"{low}:Q", title=value_title)
        layers.append(base.mark_errorbar(ticks=True).encode(x=bounds, x2=f"{high}:Q"))
    if heads and heads in frame:  # the heads' label goes past the error bar
        label = base.mark_text(align="left", dx=4, fontSize=10).encode(text=f"{heads}:N")
        layers.append(label.encode(x=f"{high}:Q") if ci else label)
    if baseline is not None:
        layers.append(alt.Chart(pd.DataFrame({"b": [baseline]})).mark_rule(strokeDash=[4, 4]).encode(x="b:Q"))
    rows = frame[target].nunique() * frame[series].nunique()
    room = {"room": 150 + 20 * frame[series].nunique()}  # title, axis, legend: a page adds it to the height
    return alt.layer(*layers).properties(title=_title(title), width="container", height=max(120, 24 * rows),
                                         usermeta=room)  # fmt: skip


def class_bars(
    frame: pd.DataFrame,
    *,
    value: str = "value",
    low: str = "ci_low",
    high: str = "ci_high",
    series: str | None = None,
    value_title: str = "value",
    title: str = "",
) -> alt.LayerChart:
    """Bars of `value` per circuit ``class`` with error bars from `low` to `high`; grouped by
    `series` when given."""
    if frame.empty:
        raise ValueError("no classes to draw")
    classes = alt.Y("class:N", title="circuit class", sort=None, axis=alt.Axis(labelLimit=260))
    base = alt.Chart(frame).encode(y=classes)
    if series:
        base = base.encode(yOffset=alt.YOffset(f"{series}:N"))
    shown = list(dict.fromkeys(frame["class"]))  # a group that is no class (all heads, an outside head): grey
    scale = alt.Scale(domain=shown, range=[CLASS_COLORS.get(c, "#9e9e9e") for c in shown])
    by_class = alt.Color("class:N", scale=scale, legend=None)
    color = alt.Color(f"{series}:N", title=series) if series else by_class
    tooltip = ["class:N", alt.Tooltip(f"{value}:Q", format=".4f")]
    tooltip += [alt.Tooltip(f"{c}:Q", format=".4f") for c in (low, high) if c in frame]
    bars = base.mark_bar().encode(x=alt.X(f"{value}:Q", title=value_title), color=color, tooltip=tooltip)
    layers: list[alt.Chart] = [bars]
    if low in frame and high in frame:
        bounds = alt.X(f"{low}:Q", title=value_title)
        layers.append(base.mark_errorbar(ticks=True).encode(x=bounds, x2=f"{high}:Q"))
    rows = frame["class"].nunique() * (frame[series].nunique() if series else 1)
    return alt.layer(*layers).properties(title=title, width="container", height=max(100, 22 * rows))


def attention_scatter(frame: pd.DataFrame, *, title: str = "") -> alt.Chart:
    """Attention from END to IO (x) against END to S (y), one point per head (columns label,
    end_to_io, end_to_s, class); name movers sit low-right."""
    if frame.empty:
        raise ValueError("no heads to draw")
    diagonal = pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]})
    points = (
        alt.Chart(frame)
        .mark_circle(size=90)
        .encode(
            x=alt.X("end_to_io:Q", title="attention END → IO", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("end_to_s:Q", title="attention END → S", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("class:N", title="circuit class"),
            tooltip=[
                "label:N",
                "class:N",
                alt.Tooltip("end_to_io:Q", format=".3f"),
                alt.Tooltip("end_to_s:Q", format=".3f"),
            ],  # fmt: skip
        )
    )
    line = alt.Chart(diagonal).mark_line(strokeDash=[3, 3], color="gray").encode(x="x:Q", y="y:Q")
    return (line + points).properties(title=title, width=360, height=360)


def circuit_dot(circuit: Circuit | None = None) -> str:
    """Graphviz DOT of the IOI circuit: one node per class (its heads when `circuit` is given, an
    empty class dashed grey), edges from sender class to receiver labelled with the input written."""
    lines = [
        "digraph ioi {",
        '  rankdir=BT; node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9, color="#555555"];',
        '  logits [label="logits: IO − S at END", shape=ellipse, fillcolor="#eeeeee"];',
    ]
    for name, colour in CLASS_COLORS.items():
        heads, empty = (circuit.classes.get(name, ()), name in circuit.empty_classes) if circuit else ((), 0)
        listed = "\\n" + " ".join(str(h) for h in heads) if heads else "\\n(no head)" if empty else ""
        look = EMPTY_LOOK if empty else f'fillcolor="{colour}33", color="{colour}"'
        lines.append(f'  "{name}" [label="{name}{listed}", {look}];')
    for src, dst, label in CIRCUIT_EDGES:
        lines.append(f'  "{src}" -> "{dst}" [label="{label}"];')
    # Classes outside the paper's (e.g. "other heads carrying the effect"): grey, dashed to the logits.
    for name, heads in circuit.classes.items() if circuit is not None else ():
        if heads and name not in CLASS_COLORS:
            listed = " ".join(str(h) for h in heads)
            lines.append(f'  "{name}" [label="{name}\\n{listed}", fillcolor="#eeeeee", color="#888888"];')
            lines.append(f'  "{name}" -> "logits" [style=dashed, label="effect on the logits"];')
    lines.append("}")
    return "\n".join(lines)


def circuit_frame(circuit: Circuit) -> pd.DataFrame:
    """The heads of a circuit as a tidy table (class, head as L.H, layer, head index)."""
    heads = [(c, h) for c, hs in circuit.classes.items() for h in hs]
    rows = [{"class": c, "L.H": str(h), "layer": h.layer, "head": h.head} for c, h in heads]
    return pd.DataFrame(rows, columns=["class", "L.H", "layer", "head"])


def chart_bytes(chart: alt.TopLevelMixin, fmt: str) -> bytes:
    """The chart rendered as "png" or "svg" (vl-convert; no browser needed). Containers without a
    fixed width are rendered 600 px wide."""
    import vl_convert as vlc

    spec = chart.to_dict()
    if spec.get("width") == "container":
        spec["width"] = 600
    for layer in spec.get("layer", []):
        if layer.get("width") == "container":
            layer["width"] = 600
    if fmt == "png":
        return vlc.vegalite_to_png(spec, scale=2)
    if fmt == "svg":
        return vlc.vegalite_to_svg(spec).encode()
    raise ValueError(f"chart format must be png or svg, got {fmt!r}")
