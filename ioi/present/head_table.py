"""One head across checkpoints as a table (the dashboard's head page): per checkpoint, its circuit
class, its cached DLA, knockout and CMAP values, and its profile (DLA and END → IO / S attention
with their 95% bootstrap intervals, OV copy score) where a profile is cached or measured live.

Pure: the page gathers each checkpoint's cached results (`CheckpointResults`); this lays them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from ioi.task.circuit import Circuit, Head

PROFILE_COLUMNS = (
    "dla_lo", "dla_hi", "end_to_io", "end_to_io_lo", "end_to_io_hi", "end_to_s", "end_to_s_lo",
    "end_to_s_hi", "copy_score",
)  # fmt: skip
"""The columns a head profile (`ioi.methods.prompt.head_profile`) adds to a checkpoint's row."""
PROFILE_SOURCES = {
    "cached": "cached head profile",
    "live": "measured here (weights at hand)",
    "": "none: no weights or profile cached",
}
"""Where a row's intervals, attention and copy score come from (the table's ``intervals`` column)."""


@dataclass(frozen=True)
class CheckpointResults:
    """One checkpoint's cached results, as the head table reads them.

    experiment / lineage / panel / checkpoint: labels; epoch: the experiment's own epoch; offset:
    the epochs before it (a reversal continues where its toxic run ended); circuit: the circuit
    classified there (None: none recorded); dla, knockout, cmap: per-head tables of those analyses
    (None where not run); profile: the head profile and where it comes from ("cached", "live";
    None and "" when neither).
    """

    experiment: str
    lineage: str
    panel: str
    checkpoint: str
    epoch: int
    offset: int
    circuit: Circuit | None
    dla: pd.DataFrame
    knockout: pd.DataFrame | None = None
    cmap: pd.DataFrame | None = None
    profile: pd.DataFrame | None = None
    profile_source: str = ""


def head_row(frame: pd.DataFrame | None, layer: int, head: int) -> dict:
    """The row of head (layer, head) of a per-head table as a dict ({} when absent)."""
    if frame is None or frame.empty:
        return {}
    rows = frame[(frame["layer"] == layer) & (frame["head"] == head)]
    return rows.iloc[0].to_dict() if len(rows) else {}


def head_table(head: Head, checkpoints: Sequence[CheckpointResults]) -> pd.DataFrame:
    """One row per checkpoint: labels, ``x`` (the epoch on a lineage's axis), the head's class,
    its cached DLA, knockout change and CMAP effect with its interval, the profile's columns
    (`PROFILE_COLUMNS`; empty without a profile) and ``intervals``, where those come from
    (`PROFILE_SOURCES`)."""
    rows = []
    for c in checkpoints:
        cmap = head_row(c.cmap, *head)
        profile = head_row(c.profile, *head)
        source = c.profile_source if profile else ""
        rows.append({
            "experiment": c.experiment, "lineage": c.lineage, "panel": c.panel, "checkpoint": c.checkpoint,
            "epoch": c.epoch, "x": c.epoch + c.offset,
            "class": (c.circuit.class_of(head) or "—") if c.circuit else "no circuit recorded",
            "dla": head_row(c.dla, *head).get("value"),
            "knockout_change": head_row(c.knockout, *head).get("value"),
            "cmap": cmap.get("value"), "cmap_lo": cmap.get("ci_low"), "cmap_hi": cmap.get("ci_high"),
            **{k: profile.get(k) for k in PROFILE_COLUMNS},
            "intervals": PROFILE_SOURCES[source],
        })  # fmt: skip
    return pd.DataFrame(rows)


def without_intervals(table: pd.DataFrame) -> list[str]:
    """The checkpoints of a `head_table` that have no profile: no interval, attention or copy
    score there (their weights are not at hand and no profile is cached)."""
    return list(table.loc[table["intervals"] == PROFILE_SOURCES[""], "checkpoint"])
