"""Head classification and the circuit rule: the criteria of ClassifyThresholds applied to the score
grids it reports, on a model that does the task (ioi-tiny) and one that does not (random:tiny)."""

from __future__ import annotations

import pytest
import torch
from analysis_data import ioi_batches

from ioi.methods.ablation import Knockout
from ioi.methods.analyses import run_analysis
from ioi.methods.attention import attention_scores
from ioi.methods.classify import (
    NOT_CLASSIFIED,
    NOT_THE_TASK,
    ClassifyThresholds,
    circuit_for,
    classify_heads,
    heads_where,
    is_gpt2_small,
)
from ioi.task.circuit import CLASS_POSITIONS, GPT2_SMALL_CIRCUIT, OTHER, Circuit, Head


@pytest.fixture(scope="module")
def data(tiny_random):
    return ioi_batches(tiny_random, 12)


def test_heads_where_orders_by_strength_and_excludes():
    mask = torch.tensor([[True, False], [True, True]])
    order = torch.tensor([[0.1, 5.0], [-0.3, 0.2]])
    assert heads_where(mask, order) == (Head(1, 0), Head(1, 1), Head(0, 0))
    assert heads_where(mask, order, exclude=(Head(1, 0),)) == (Head(1, 1), Head(0, 0))


def test_a_model_that_does_not_do_the_task_gets_no_classes(tiny_random, data):
    circuit = classify_heads(tiny_random, *data)
    assert set(circuit.classes) == set(CLASS_POSITIONS) and not circuit.heads
    assert NOT_THE_TASK in circuit.meta["reason"]
    out = run_analysis("classify", tiny_random, *data)
    assert NOT_THE_TASK in out.summary["reason"] and not any(out.heads["class"])
    with pytest.raises(ValueError, match="unknown classify options"):
        run_analysis("classify", tiny_random, *data, name_movers=0.1)


@pytest.fixture(scope="module")
def tiny_circuit(ioi_tiny):
    clean, abc = ioi_batches(ioi_tiny, 60)
    return classify_heads(ioi_tiny, clean, abc), (clean, abc)


def test_classes_follow_the_ioi_criteria_relative_to_f_model(tiny_circuit):
    circuit, _ = tiny_circuit
    s, f_m, t = circuit.meta["scores"], circuit.meta["f_model"], ClassifyThresholds()
    assert circuit.meta["cutoffs_logits"]["name_mover"] == pytest.approx(t.name_mover * f_m)
    want_nm = (
        (s["path_logits"] <= -t.name_mover * f_m)
        & (s["attn_end_to_io"] > s["attn_end_to_s"])  # S1 and S2 together
        & (s["copy_score"] >= t.min_copy_score)
        & (s["copy_score"] > s["negative_copy_score"])
    )
    assert set(circuit.classes["name mover"]) == {Head(*h) for h in want_nm.nonzero().tolist()}
    for h in circuit.classes["s-inhibition"]:  # lowers F through the name movers' queries, attends S2
        assert s["path_nm_q"][h] <= -t.s_inhibition * f_m and s["attn_end_to_s2"][h] > s["attn_end_to_io"][h]
    for h in circuit.classes[OTHER]:
        assert max(abs(s["path_logits"][h]), abs(s["dla"][h])) >= t.other * f_m
    assert Head(1, 2) in circuit.classes[OTHER]  # 37% of the direct effect, in no IOI class
    assert len(set(circuit.heads)) == len(circuit.heads)  # one class per head


def test_backups_need_compensation_by_a_head_downstream_of_the_name_movers(tiny_circuit):
    """With the clean run's LayerNorm scale, a head in the name movers' layer or before (other than
    the name movers) cannot change its direct effect when they are knocked out at END: only a
    later head can compensate."""
    circuit, _ = tiny_circuit
    s = circuit.meta["scores"]
    first = min(h.layer for h in circuit.classes["name mover"])
    change = s["dla_after_nm_knockout"] - s["dla"]
    for h in circuit.classes["name mover"]:
        assert change[h] < 0  # knocked out themselves
        change[h] = 0.0
    assert change[: first + 1].abs().max() < 1e-5
    for h in circuit.classes["backup name mover"]:
        assert h.layer > first and change[h] >= ClassifyThresholds().backup * circuit.meta["f_model"]


def test_circuit_for_is_the_one_rule(tiny_random, data, tiny_circuit, ioi_tiny):
    assert not is_gpt2_small(tiny_random)
    given = Circuit("mine", {"name mover": (Head(1, 2),)})
    assert circuit_for(tiny_random, *data, given) is given
    assert circuit_for(tiny_random, *data, given.to_json()) == given
    assert circuit_for(tiny_random, *data).source == "discovered on random:tiny"
    circuit, batches = tiny_circuit
    found = circuit_for(ioi_tiny, *batches)
    assert found.classes == circuit.classes and circuit_for(ioi_tiny, *batches) is found  # reused
    assert GPT2_SMALL_CIRCUIT.classes["name mover"] == (Head(9, 9), Head(9, 6), Head(10, 0))


def test_a_stored_circuit_stands_in_for_classifying_but_gpt2_small_keeps_the_published(tmp_path, tiny_random):
    """What the Circuit page's receiver defaults use: the rule, with the checkpoint's stored circuit."""
    from types import SimpleNamespace

    stored = Circuit("stored", {"name mover": (Head(1, 0),)}, "discovered on random:tiny")
    assert circuit_for(tiny_random, classified=stored) is stored
    unknown = circuit_for(tiny_random)  # neither prompts nor a stored circuit: none known yet
    assert not unknown.heads and unknown.meta["reason"] == NOT_CLASSIFIED
    shape = SimpleNamespace(cfg=SimpleNamespace(n_layers=12, n_heads=12, d_model=768))
    (tmp_path / "manifest.json").write_text('{"base_model": "gpt2"}')  # a checkpoint fine-tuned from GPT-2
    for name in ("gpt2", str(tmp_path)):
        gpt2 = SimpleNamespace(name=name, bridge=shape)
        assert circuit_for(gpt2, classified=stored) is GPT2_SMALL_CIRCUIT


def test_ioi_tiny_name_movers_carry_the_task(ioi_tiny):
    """Mean-ablating the name movers classify_heads finds removes at least half of F, on 200
    prompts (the measured share depends on the prompt set: 55% here, 66% on the first 60)."""
    clean, abc = ioi_batches(ioi_tiny, 200)
    circuit = classify_heads(ioi_tiny, clean, abc)
    movers = circuit.classes["name mover"]
    assert movers, "no name mover found on ioi-tiny"
    ko = Knockout(ioi_tiny, clean, abc)
    f_without = ko.run([ko.without(movers)]).item()
    assert f_without <= 0.5 * ko.acts.f_clean


def test_ioi_tiny_has_name_movers_and_an_upstream_s_inhibition_head(ioi_tiny, tiny_circuit):
    """Name movers prefer IO and push IO − S; an upstream head acts through their queries."""
    from ioi.methods.attribution import direct_logit_attribution
    from ioi.methods.path_patching import Receivers, path_patch

    circuit, (clean, abc) = tiny_circuit
    movers = circuit.classes["name mover"]
    att = attention_scores(ioi_tiny.bridge, clean)
    dla = direct_logit_attribution(ioi_tiny.bridge, clean).heads.mean(0)  # [layer, head]
    for h in movers:
        assert att["end_to_io"][h] > att["end_to_s"][h], f"{h} does not prefer IO over S1 and S2"
        assert dla[h] > 0
    via_movers = path_patch(ioi_tiny, clean, abc, Receivers(heads=tuple(movers)))
    to_logits = path_patch(ioi_tiny, clean, abc)
    # some upstream head has at least 20% of its total effect through the name movers' queries
    upstream = [(layer, h) for layer in range(min(m.layer for m in movers)) for h in range(ioi_tiny.n_heads)]
    shares = [via_movers[x].abs() / (via_movers[x].abs() + to_logits[x].abs() + 1e-9) for x in upstream]
    assert max(shares) >= 0.2
