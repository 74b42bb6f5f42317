"""Verdicts as code: each criterion on constructed numbers, and on models whose answer is known —
a model with itself (no change) and a planted change in one head's weights (found there only)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from analysis_data import ioi_batches

from ioi.methods.analyses import run_analysis
from ioi.methods.stats import Estimate, across_seeds, difference_estimate, mean_estimate, ratio_estimate
from ioi.methods.verdicts import (
    amplification,
    at_least,
    at_most,
    cmap_gap,
    cmap_group_share,
    combine_seeds,
    edge_revival,
    heads_carrying,
    ioi_label_share,
    largest_outside_head,
    localized_corruption,
    mlps,
    neuroplasticity,
)
from ioi.models.load import load_hf, wrap


def est(value: float, lo: float, hi: float) -> Estimate:
    return Estimate(value, lo, hi, "constructed")


UNDEFINED = Estimate.undefined("the model does not do the task")


def test_interval_comparisons_are_three_valued():
    assert at_least(est(0.7, 0.6, 0.8), 0.5) is True
    assert at_least(est(0.3, 0.2, 0.4), 0.5) is False
    assert at_least(est(0.5, 0.4, 0.6), 0.5) is None and at_least(UNDEFINED, 0.5) is None
    assert at_most(est(0.1, 0.05, 0.15), 0.2) is True and at_most(est(0.5, 0.3, 0.7), 0.2) is False
    assert combine_seeds([True, True, True]) is True and combine_seeds([False, False]) is False
    assert combine_seeds([True, None, True]) is None and combine_seeds([]) is None


def test_amplification_criterion():
    gain, small = est(5.0, 4.0, 6.0), est(0.05, 0.0, 0.1)
    assert amplification(gain, est(0.8, 0.7, 0.9), small, "2.0").holds is True
    assert (
        amplification(gain, est(0.3, 0.2, 0.4), small, "2.0").holds is False
    )  # the circuit carries too little
    assert amplification(gain, est(0.8, 0.7, 0.9), est(0.4, 0.3, 0.5), "2.0").holds is False  # a new head
    assert amplification(gain, est(0.55, 0.45, 0.65), small, "2.0").holds is None  # straddles 50%
    none = amplification(est(0.1, -0.1, 0.3), UNDEFINED, UNDEFINED, "none")
    assert none.holds is False and "no gain" in none.summary
    assert "≥ 50%" in none.criterion and "20%" in none.criterion


def test_localized_corruption_criterion_and_duplication_by_construction():
    shares = {"name mover": est(0.7, 0.6, 0.8), "s-inhibition": est(0.1, 0.0, 0.2)}
    v = localized_corruption("subject_duplication", est(-20.0, -21.0, -19.0), est(0.8, 0.7, 0.9), shares, 0.0)
    assert v.holds is True and "name mover" in v.summary and v.scope == "subject_duplication"
    assert localized_corruption("x", est(-20, -21, -19), est(0.2, 0.1, 0.3), shares, 0.0).holds is False
    spread = localized_corruption(
        "x", est(-9, -10, -8), est(0.8, 0.7, 0.9), shares, 0.0, ("2.0", est(0.34, 0.3, 0.38))
    )
    assert spread.holds is False and "2.0" in spread.summary  # a head outside the circuit carries a third
    # the head and its share read as a head and a share, not as two numbers in a row
    assert "the largest head outside the circuit: head 2.0 (share 0.34 [0.30, 0.38])" in spread.summary
    assert "the largest class: name mover (share 0.70 [0.60, 0.80])" in spread.summary
    assert (
        "largest head outside it: head 2.0 (share 0.40 [0.30, 0.50])"
        in amplification(est(5.0, 4.0, 6.0), est(0.8, 0.7, 0.9), est(0.4, 0.3, 0.5), "2.0").summary
    )
    assert (
        "the largest head outside the circuit: none."
        in localized_corruption("x", est(-20, -21, -19), est(0.8, 0.7, 0.9), shares, 0.0).summary
    )
    flat = localized_corruption("x", est(0.1, -0.1, 0.3), UNDEFINED, {}, 0.0)
    assert flat.holds is None and "nothing to localize" in flat.summary
    dup = localized_corruption("duplication", est(5, 4, 6), est(0.8, 0.7, 0.9), shares, 1.0)
    assert "by construction" in dup.summary
    assert ioi_label_share("duplication") == 1.0  # role-swapped clean prompts: labels are the IOI answer
    assert ioi_label_share("subject_duplication") == 0.0 and ioi_label_share("name_moving") == 0.0


def test_neuroplasticity_and_mlp_criteria():
    hurt = est(-1.2, -1.3, -1.1)  # the toxic model prefers S: F at -120% of the pretrained F
    good = neuroplasticity("name_moving", hurt, est(1.1, 1.0, 1.2), est(0.95, 0.9, 1.0), est(1.0, 1.0, 1.0))
    assert good.holds is True and good.scope == "reversal of name_moving"
    assert neuroplasticity("x", hurt, est(0.5, 0.4, 0.6), est(0.95, 0.9, 1.0), est(1, 1, 1)).holds is False
    assert neuroplasticity("x", hurt, est(1.1, 1.0, 1.2), UNDEFINED, est(1, 1, 1)).holds is None
    # a toxic run that raised F (duplication's relabelled clean set) left nothing to restore
    unhurt = neuroplasticity("duplication", est(1.3, 1.25, 1.35), est(1.1, 1.0, 1.2), est(0.95, 0.9, 1.0),
                             est(1, 1, 1))  # fmt: skip
    assert unhurt.holds is None and "no damage to restore" in unhurt.summary
    # damage not established (interval straddles 80%): a full recovery still cannot be called one
    assert neuroplasticity("x", est(0.8, 0.7, 0.9), est(1.1, 1.0, 1.2), est(0.95, 0.9, 1.0),
                           est(1, 1, 1)).holds is None  # fmt: skip
    little = {"pretrained": est(-0.03, -0.05, -0.01), "clean epoch 10": est(0.02, -0.01, 0.05)}
    first = {"pretrained": est(-0.3, -0.4, -0.2)}
    assert mlps(little, first).holds is True
    assert mlps({"pretrained": est(-0.5, -0.6, -0.4)}, first).holds is False


def test_edge_revival_is_judged_on_the_seeds_difference():
    back = edge_revival("name_moving", toxic=[0.1, 0.2, 0.15], reversal=[0.7, 0.8, 0.75])
    assert back.holds is True and back.numbers["reversal − toxic"].value == pytest.approx(0.6)
    assert back.numbers["reversal − toxic"].over == "seeds (n=3)" and "seeds (n=3)" in back.summary
    assert edge_revival("x", [0.7, 0.8, 0.75], [0.1, 0.2, 0.15]).holds is False
    assert edge_revival("x", [0.1, 0.5, 0.3], [0.5, 0.1, 0.35]).holds is None  # straddles 0
    assert edge_revival("x", [0.1], [0.9]).holds is None  # one seed: no interval
    high = edge_revival("x", [0.1, 0.2, 0.15], [1.0, 0.8, 1.0]).numbers["edge Jaccard, reversal"]
    assert high.hi == 1.0 and high.lo < 0.93 and high.over == "seeds (n=3), cut to [0, 1]"


def test_intervals_and_guarded_ratios():
    x = torch.linspace(1.0, 3.0, 50)
    m = mean_estimate(x)
    assert m.lo < m.value < m.hi and m.value == pytest.approx(2.0)
    assert ratio_estimate(x, 2 * x).value == pytest.approx(0.5)
    assert ratio_estimate(x, 2 * x).lo == pytest.approx(0.5) == ratio_estimate(x, 2 * x).hi  # paired
    small = ratio_estimate(x, torch.full((50,), 0.1))
    assert math.isnan(small.value) and "does not do the task" in small.reason
    spread = across_seeds([1.0, 2.0, 3.0])
    assert spread.value == 2.0 and spread.hi - 2.0 == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-3)
    assert not across_seeds([1.0]).defined and not across_seeds([1.0, math.nan]).defined
    diff = difference_estimate(x + 1.0, x)
    assert diff.value == pytest.approx(1.0) and diff.lo < 1.0 < diff.hi


@pytest.fixture(scope="module")
def tiny_data(ioi_tiny):
    return ioi_batches(ioi_tiny, 40)


def test_a_model_with_itself_shows_no_change(ioi_tiny, tiny_data):
    result = run_analysis("cmap", ioi_tiny, *tiny_data, other=ioi_tiny, n_boot=200)
    gain = cmap_gap(result)
    assert abs(gain.value) < 1e-4
    head, outside = largest_outside_head(result)
    v = amplification(gain, cmap_group_share(result, "circuit (all classes)"), outside, head)
    assert v.holds is False and "no gain" in v.summary
    flat = localized_corruption("itself", gain, cmap_group_share(result, "circuit (all classes)"), {}, 0.0)
    assert flat.holds is None and heads_carrying(result) == []


def test_a_planted_change_in_one_head_shows_up_there_and_only_there(ioi_tiny, tiny_data):
    """Head 1.7's value weights doubled (F drops by ~0.7): CMAP (base ← planted) puts the change on
    1.7; heads of its layer and before are untouched exactly, later heads carry a small share."""
    hf, tok, _ = load_hf("ioi-tiny")  # fresh raw weights: wrapping folds a model's weights in place
    d = ioi_tiny.bridge.cfg.d_model
    d_head = d // ioi_tiny.n_heads
    with torch.no_grad():
        hf.transformer.h[1].attn.c_attn.weight[:, 2 * d + 7 * d_head : 2 * d + 8 * d_head] *= 2.0
    planted = copy.copy(ioi_tiny)
    planted.bridge, planted.hf_model = wrap(hf, tok, "cpu"), hf
    result = run_analysis("cmap", planted, *tiny_data, other=ioi_tiny, n_boot=200)
    assert heads_carrying(result) == ["1.7"]
    heads = result.heads.set_index(["layer", "head"])
    assert heads.loc[(1, 7), "share_of_gap"] > 0.8
    upstream = heads[(heads.index.get_level_values("layer") <= 1) & (heads.index != (1, 7))]
    assert upstream["value"].abs().max() < 1e-4
    assert heads.loc[2]["share_of_gap"].abs().max() < 0.1
    share = cmap_group_share(result, "circuit (all classes)")  # 1.7 is a name mover of the base circuit
    v = localized_corruption("planted", cmap_gap(result), share, {}, 0.0)
    assert v.holds is True and share.lo > 0.8
