"""The reproduced papers' reference numbers for GPT-2 small (METHODS §9), as plottable points.

Each point is (metric, scenario, epoch, value, label); the dashboard and the report overlay them on
the curves of the same metric and scenario so a reproduction can be read against the paper.
Faithfulness is a share (0.87 = 87%); the logit difference is in logits.
"""

from __future__ import annotations

import pandas as pd

GPT2_REFERENCE: tuple[dict[str, object], ...] = (
    {"metric": "faithfulness", "scenario": "clean", "epoch": 0, "value": 0.87,
     "label": "GPT-2 pretrained: ~87%"},
    {"metric": "faithfulness", "scenario": "clean", "epoch": 25, "value": 0.9989,
     "label": "GPT-2 after 25 clean epochs: 99.89%"},
    {"metric": "faithfulness", "scenario": "reversal", "epoch": 5, "value": 0.955,
     "label": "GPT-2 after reversal: 95–96%"},
    {"metric": "logit_diff", "scenario": "clean", "epoch": 0, "value": 3.55,
     "label": "GPT-2 pretrained: F(M) ≈ 3.55"},
    {"metric": "logit_diff", "scenario": "subject_duplication", "epoch": 5, "value": -11.06,
     "label": "GPT-2 after 5 subject-duplication epochs: −11.06"},
)  # fmt: skip


def reference_points(metric: str, scenarios: list[str] | None = None) -> pd.DataFrame:
    """The reference points of `metric` (optionally only those of `scenarios`), columns metric,
    scenario, epoch, value, label."""
    frame = pd.DataFrame(list(GPT2_REFERENCE), columns=["metric", "scenario", "epoch", "value", "label"])
    frame = frame[frame["metric"] == metric]
    if scenarios is not None:
        frame = frame[frame["scenario"].isin(scenarios)]
    return frame.reset_index(drop=True)
