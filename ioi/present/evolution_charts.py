"""Altair charts of a comparison across checkpoints (ioi.runs.compare): overlap and role-score
tracks with their intervals, the checkpoint × checkpoint matrices, the recovery curve.

Checkpoints keep the order of the comparison (the lineage's order), never sorted by name, and
every chart of one comparison shares its colour scale (fixed domains: Jaccard and faithfulness
0–1, role scores ±the largest |value| over all checkpoints), so moving the epoch slider never
rescales the colours.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from ioi.present.charts import LINEAGE_COLORS, color_span, head_heatmap

TRACKS = {
    "edge_jaccard": "edge Jaccard vs the first checkpoint",
    "node_jaccard": "node (head) Jaccard vs the first checkpoint",
    "faithfulness": "faithfulness of the checkpoint's own edge circuit",
    "stability": "bootstrap self-Jaccard (stability)",
}


# The columns of a comparison's tables that hold checkpoint labels.
CHECKPOINT_COLUMNS = ("checkpoint", "circuit_of", "model", "source", "receiver")


def relabel_checkpoints(tables: dict[str, pd.DataFrame], names: dict[str, str]) -> dict[str, pd.DataFrame]:
    """`tables` with every stored checkpoint label ("subject_duplication 3") replaced by its name in
    `names` ("subject duplication, epoch 3"), so chart titles, axes and tooltips read as the slider."""
    out = {}
    for key, frame in tables.items():
        frame = frame.copy()
        for col in CHECKPOINT_COLUMNS:
            if col in frame.columns:
                frame[col] = frame[col].map(lambda v: names.get(v, v))
        out[key] = frame
    return out


def wrong_way_note(overlap: pd.DataFrame) -> str:
    """A caption's sentence for the checkpoints whose model prefers S (F(M) ≤ −0.5 logits, interval
    below 0): their edge circuit carries that wrong preference, so its faithfulness says how much
    of the wrong answer it reproduces, not that the IOI mechanism still works; '' when none."""
    wrong = overlap[overlap["f_model_hi"] < 0]
    if wrong.empty:
        return ""
    names = ", ".join(f"{r.checkpoint} (F(M) {r.f_model:.1f})" for r in wrong.itertuples())
    return (f" At {names} the model prefers the subject: its edge circuit is the one carrying that wrong "
            "preference, and its faithfulness is the share of the wrong answer it reproduces — not a sign "
            "that the IOI circuit still works.")  # fmt: skip


def checkpoint_x(order: list[str]) -> alt.X:
    """The checkpoint axis of the evolution tracks: labels level, broken into lines at ", " ("subject
    duplication" / "epoch 3"), so long checkpoint names do not turn the axis into a column."""
    axis = alt.Axis(labelAngle=0, labelExpr="split(datum.label, ', ')", labelLimit=240, labelPadding=6)
    return alt.X("checkpoint:N", sort=order, title="checkpoint", axis=axis)


def overlap_tracks(overlap: pd.DataFrame, order: list[str], *, title: str = "") -> alt.LayerChart:
    """One line per measure of the `overlap` table over the checkpoints in `order`, with its 95%
    interval as error bars where it has one, the stability bar (0.8) as a dashed rule."""
    rows = []
    for r in overlap.to_dict("records"):
        for key, name in TRACKS.items():
            lo, hi = r.get(f"{key}_lo"), r.get(f"{key}_hi")
            if key == "stability":
                lo, hi = r.get("stability_p05"), r.get("stability")
            rows.append({"checkpoint": r["checkpoint"], "measure": name, "value": r[key], "lo": lo, "hi": hi})
    data = pd.DataFrame(rows)
    x = checkpoint_x(order)
    color = alt.Color(
        "measure:N", title="measure", sort=list(TRACKS.values()), legend=alt.Legend(labelLimit=400)
    )
    y = alt.Y("value:Q", scale=alt.Scale(domain=[0, 1.05]), title="value")
    line = (
        alt.Chart(data)
        .mark_line(point=True)
        .encode(x, y, color, tooltip=["checkpoint", "measure", "value", "lo", "hi"])
    )
    bars = (
        alt.Chart(data.dropna(subset=["lo", "hi"]))
        .mark_errorbar()
        .encode(x, alt.Y("lo:Q", title="value"), alt.Y2("hi:Q"), color)
    )
    bar = alt.Chart(pd.DataFrame({"y": [0.8]})).mark_rule(strokeDash=[4, 4], color="grey").encode(y="y:Q")
    return (line + bars + bar).properties(title=title, width="container", height=280)


ROLE_TITLES = {
    "dla": "DLA (logits)",
    "name_mover": "name-mover score (logits)",
    "s_inhibition": "S-inhibition score (logits)",
    "copy_score": "OV copy score",
}
"""A role score's name and unit on a chart (the comparison's tables key them by field name)."""


def role_title(role: str) -> str:
    """`role`'s chart title with its unit: "DLA (logits)", "OV copy score"; an unknown role as it is."""
    return ROLE_TITLES.get(role, role.replace("_", " "))


def role_tracks(roles: pd.DataFrame, order: list[str], heads: list[str], role: str) -> alt.LayerChart:
    """The `role` score of each head in `heads` ("L.H") over the checkpoints, with intervals; a
    sign flip is a red ring, a change from the previous checkpoint a filled black dot."""
    data = roles[roles["role"] == role].copy()
    data["head_label"] = data["layer"].astype(int).astype(str) + "." + data["head"].astype(int).astype(str)
    data = data[data["head_label"].isin(heads)]
    x = checkpoint_x(order)
    color = alt.Color("head_label:N", title="head", sort=heads)
    base = alt.Chart(data)
    line = base.mark_line(point=True).encode(
        x,
        alt.Y("value:Q", title=role_title(role)),
        color,
        tooltip=["checkpoint", "head_label", "value", "lo", "hi", "sign_flip", "changed"],
    )
    bars = (
        base.transform_filter("isValid(datum.lo)")
        .mark_errorbar()
        .encode(x, alt.Y("lo:Q", title=role_title(role)), alt.Y2("hi:Q"), color)
    )
    flips = (
        base.transform_filter("datum.sign_flip")
        .mark_point(size=180, color="red", filled=False)
        .encode(x, alt.Y("value:Q"))
    )
    moved = (
        base.transform_filter("datum.changed")
        .mark_point(size=40, color="black", filled=True)
        .encode(x, alt.Y("value:Q"))
    )
    return (line + bars + flips + moved).properties(width="container", height=280)


def roles_at(roles: pd.DataFrame, checkpoint: str, role: str) -> tuple[pd.DataFrame, float]:
    """(per-head frame of `role` at `checkpoint`, the colour span of that role over every checkpoint)."""
    every = roles[roles["role"] == role]
    return every[every["checkpoint"] == checkpoint].reset_index(drop=True), color_span(every)


def role_heatmap(roles: pd.DataFrame, checkpoint: str, role: str) -> alt.LayerChart:
    """Layers × heads heatmap of `role` at `checkpoint` on the scale shared by all checkpoints."""
    frame, span = roles_at(roles, checkpoint, role)
    name = role_title(role)
    return head_heatmap(frame, title=f"{name.split(' (')[0]} at {checkpoint}", value_title=name, span=span)


def cell_labels(frame: pd.DataFrame, field: str = "value") -> pd.DataFrame:
    """`frame` with `label`: the value to two decimals, or where it is not defined (an
    `undefined` text like "not defined: F(M) ≈ 0 (…)") the marker's short form ("F(M) ≈ 0")."""
    out = frame.copy()
    why = out["undefined"].fillna("") if "undefined" in out else pd.Series("", index=out.index)
    why = why.where(~(out[field].isna() & (why == "")), "not defined")  # an entry without reasons
    short = why.str.removeprefix("not defined: ").str.split(" (", n=1, regex=False).str[0]
    out["label"] = [s if w else f"{v:.2f}" for v, w, s in zip(out[field], why, short, strict=True)]
    out["defined"] = why == ""
    return out


def matrix_heatmap(
    frame: pd.DataFrame,
    row: str,
    col: str,
    order: list[str],
    *,
    field: str = "value",
    title: str = "",
    domain: tuple[float, float] | None = None,
    value_title: str = "value",
) -> alt.LayerChart:
    """A checkpoint × checkpoint heatmap of `field` (rows `row`, columns `col`, both in `order`)
    with the value written in each cell; `domain` fixes the colour scale (default symmetric). A
    cell whose `undefined` text is set is grey and says why (its short marker; the whole text and
    any other column, such as the logit difference it still has, in the tooltip)."""
    frame = cell_labels(frame, field)
    defined, undefined = frame[frame["defined"]], frame[~frame["defined"]]
    span = color_span(defined, field=field)
    bottom = alt.Legend(orient="bottom")  # beside a half-width matrix, its title was cut
    scale = (
        alt.Scale(scheme="viridis", domain=list(domain))
        if domain is not None
        else alt.Scale(scheme="redblue", domain=[-span, span], domainMid=0)
    )
    x = alt.X(f"{col}:N", sort=order, title=col.replace("_", " "), scale=alt.Scale(domain=order),
              axis=alt.Axis(labelLimit=320))  # fmt: skip
    y = alt.Y(f"{row}:N", sort=order, title=row.replace("_", " "), scale=alt.Scale(domain=order),
              axis=alt.Axis(labelLimit=320))  # fmt: skip
    extra = (
        "value",
        "lo",
        "hi",
        "share",
        "f_circuit",
        "f_circuit_lo",
        "f_circuit_hi",
        "f_model",
        "undefined",
    )
    tooltip = [row, col, *[c for c in extra if c in frame]]
    cells = (
        alt.Chart(defined)
        .mark_rect()
        .encode(x, y, alt.Color(f"{field}:Q", scale=scale, title=value_title, legend=bottom), tooltip=tooltip)
    )
    grey = alt.Chart(undefined).mark_rect(color="#d9d9d9").encode(x, y, tooltip=tooltip)
    text = alt.Chart(frame).mark_text(fontSize=11).encode(x, y, alt.Text("label:N"))
    n = max(1, len(order))
    return (cells + grey + text).properties(
        title=title,
        width=max(200, 64 * n),
        height=max(140, 36 * n),
        autosize=alt.AutoSizeParams(type="pad", contains="padding"),
    )


def _band(lo: float, hi: float, fill: str) -> alt.Chart:
    return (
        alt.Chart(pd.DataFrame({"lo": [lo], "hi": [hi]}))
        .mark_rect(color=fill, opacity=0.25)
        .encode(y="lo:Q", y2="hi:Q")
    )


def recovery_curve(
    points: pd.DataFrame,
    *,
    pretrained: tuple[float, float],
    floor: float,
    baseline: tuple[float, float],
    revive: int | None = None,
    title: str = "",
) -> alt.VConcatChart:
    """Logit difference (top) and the top edges' Jaccard with the pretrained circuit (bottom, 0–1)
    against training step, the reversal's steps continuing after the toxic run's (it starts from
    the toxic model; `revive` is a reversal step). Shaded: the pretrained F interval (top) and the
    random-edge-set baseline's interval (bottom); dashed: the Jaccard floor that "revived" needs;
    a vertical rule at the step the reversal revived, if it did."""
    toxic_end = points.loc[points["run"] == "toxic", "step"].max() if (points["run"] == "toxic").any() else 0
    points = points.assign(step=points["step"] + (points["run"] == "reversal") * toxic_end)
    revive = None if revive is None else revive + toxic_end
    colors = {"toxic": LINEAGE_COLORS.get("name moving", "#d62728"), "reversal": "#2ca02c"}
    color = alt.Color(
        "run:N",
        scale=alt.Scale(domain=list(colors), range=list(colors.values())),
        legend=alt.Legend(orient="top", title=None),  # above: a stretched chart pushes a side legend out
    )
    x = alt.X("step:Q", title="training step (the reversal continues where the toxic run ended)")
    lines = alt.Chart(points).mark_line(point=True)
    j_scale = alt.Scale(domain=[0, 1])
    f_layers = [
        _band(*pretrained, "#9ecae1"),
        lines.encode(x, alt.Y("logit_diff:Q", title="logit difference F"), color,
                     tooltip=["run", "step", alt.Tooltip("logit_diff:Q", format=".2f")]),
    ]  # fmt: skip
    j_layers = [
        _band(*baseline, "#d9d9d9"),
        alt.Chart(pd.DataFrame({"y": [floor]}))
        .mark_rule(strokeDash=[6, 3], color="black")
        .encode(y=alt.Y("y:Q", scale=j_scale)),
        lines.encode(x, alt.Y("jaccard:Q", scale=j_scale, title="edge Jaccard with pretrained"), color,
                     tooltip=["run", "step", alt.Tooltip("jaccard:Q", format=".2f")]),
    ]  # fmt: skip
    if revive is not None:
        rule = alt.Chart(pd.DataFrame({"step": [revive]})).mark_rule(color="#2ca02c", strokeDash=[2, 2])
        f_layers.append(rule.encode(x="step:Q"))
        j_layers.append(rule.encode(x="step:Q"))
    f_title = title or "Logit difference (shaded: the pretrained interval)"
    j_title = f"Edge overlap (grey: random edge sets; dashed: the floor {floor:.2f} reviving needs)"
    return alt.vconcat(
        alt.layer(*f_layers).properties(title=f_title, width=520, height=160),
        alt.layer(*j_layers).properties(title=j_title, width=520, height=160),
    )
