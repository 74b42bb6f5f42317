"""Recovery dynamics on known cases: steps to revive, matched paths, the random-set baseline."""

from __future__ import annotations

import pandas as pd
import pytest

from ioi.methods.edges import EdgeGraph
from ioi.methods.recovery import matched_path, random_edge_baseline, steps_to_revive


def test_steps_to_revive_needs_both_the_logit_difference_and_the_overlap():
    points = pd.DataFrame(
        {
            "step": [0, 50, 100, 150, 200],
            "logit_diff": [1.0, 8.0, 9.5, 9.6, 9.4],
            "jaccard": [0.2, 0.9, 0.5, 0.95, 0.9],
        }
    )
    assert steps_to_revive(points, (9.0, 10.0), 0.8) == 150  # step 100: F back, overlap not yet
    assert steps_to_revive(points, (9.0, 10.0), 0.99) is None


def test_matched_path_interpolates_both_runs_at_equal_logit_differences():
    toxic = pd.DataFrame({"step": [0, 1, 2], "logit_diff": [10.0, 5.0, 0.0], "jaccard": [1.0, 0.5, 0.0]})
    reversal = pd.DataFrame({"step": [0, 1], "logit_diff": [0.0, 10.0], "jaccard": [0.0, 0.5]})
    m = matched_path(toxic, reversal, n=3)
    assert list(m.logit_diff) == [0.0, 5.0, 10.0]
    assert list(m.jaccard_toxic) == [0.0, 0.5, 1.0] and list(m.jaccard_reversal) == [0.0, 0.25, 0.5]


def test_random_sets_of_the_whole_graph_overlap_fully_and_of_one_edge_rarely():
    g = EdgeGraph(2, 4)
    every = set(g.names)
    assert random_edge_baseline(g, every, n_draws=20).value == 1.0
    one = random_edge_baseline(g, {"0.1->1.2.k"}, n_draws=400, seed=1)
    # drawn from the 65 edges out of layer 0 (4 heads, MLP 0) into layer 1 (12 head inputs, MLP 1)
    assert one.value == pytest.approx(1 / 65, abs=0.015)
