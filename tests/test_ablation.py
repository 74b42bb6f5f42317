"""Knockout and the circuit tests built on it, against plain hook runs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from analysis_data import ioi_batches

from ioi.methods.ablation import (
    AblationType,
    Knockout,
    ablation_values,
    class_knockouts,
    completeness,
    faithfulness,
    minimality,
)
from ioi.methods.analyses import run_analysis
from ioi.methods.patching import hook_name, prepare
from ioi.task.circuit import Circuit, Head
from ioi.task.metrics import logit_diff


@pytest.fixture(scope="module")
def data(tiny_random):
    return ioi_batches(tiny_random, 16)


def all_heads(model):
    return tuple(Head(layer, head) for layer in range(model.n_layers) for head in range(model.n_heads))


def test_knockout_of_every_head_with_zero_equals_a_hook_run(tiny_random, data):
    clean, abc = data
    ko = Knockout(tiny_random, clean, abc, AblationType.ZERO)
    got = ko.run([ko.without(all_heads(tiny_random))]).item()
    hooks = [
        (hook_name(layer, "z"), lambda z, hook: torch.zeros_like(z)) for layer in range(tiny_random.n_layers)
    ]
    want = logit_diff(tiny_random.bridge.run_with_hooks(clean.tokens, fwd_hooks=hooks), clean).item()
    assert got == pytest.approx(want, abs=1e-4)


def test_knockout_with_mlps_at_end_equals_a_hook_run(tiny_random, data):
    clean, abc = data
    ko = Knockout(tiny_random, clean, abc, AblationType.MEAN_BY_TEMPLATE)
    got = ko.run([ko.without([Head(0, 1), Head(1, 3)], "end", mlps=[0])]).item()
    rows = torch.arange(len(clean))

    def head_hook(z, hook, layer, head):
        z = z.clone()
        z[rows, clean.end, head] = ko.values[layer, rows, clean.end, head]
        return z

    def mlp_hook(x, hook):
        x = x.clone()
        x[rows, clean.end] = ko.mlp_values[0, rows, clean.end]
        return x

    hooks = [(hook_name(0, "z"), lambda z, hook: head_hook(z, hook, 0, 1)),
             (hook_name(1, "z"), lambda z, hook: head_hook(z, hook, 1, 3)),
             (hook_name(0, "mlp_out"), mlp_hook)]  # fmt: skip
    want = logit_diff(tiny_random.bridge.run_with_hooks(clean.tokens, fwd_hooks=hooks), clean).item()
    assert got == pytest.approx(want, abs=1e-4)


def test_ablation_values_follow_their_definitions(tiny_random, data):
    clean, abc = data
    z = prepare(tiny_random, clean, abc).z_abc
    by_template = ablation_values(z, abc, AblationType.MEAN_BY_TEMPLATE)
    resample = ablation_values(z, abc, AblationType.RESAMPLE, seed=1)
    mean = ablation_values(z, abc, AblationType.MEAN)
    for g in abc.group.unique():
        rows = (abc.group == g).nonzero().flatten()
        torch.testing.assert_close(
            by_template[:, rows], z[:, rows].mean(1, keepdim=True).expand_as(z[:, rows])
        )
        if len(rows) > 1:  # each row is another prompt's value from the same template
            for i in rows.tolist():
                sources = [j for j in rows.tolist() if torch.equal(resample[:, i], z[:, j])]
                assert sources and i not in sources
    pos = 1  # every prompt is longer than 2 tokens: the mean at an early index covers all prompts
    torch.testing.assert_close(mean[:, 0, pos], z[:, :, pos].mean(1))
    last = int(abc.end.max())  # only the longest prompts reach the last index
    longest = (abc.end == last).nonzero().flatten()
    torch.testing.assert_close(mean[:, 0, last], z[:, longest, last].mean(1))
    assert torch.all(ablation_values(z, abc, AblationType.ZERO) == 0)


def test_ablation_type_parses_names_and_refuses_others():
    assert AblationType.parse("mean_by_template") is AblationType.MEAN_BY_TEMPLATE
    assert AblationType.parse("zero") is AblationType.ZERO
    with pytest.raises(ValueError, match="known: mean"):
        AblationType.parse("average")


@pytest.mark.parametrize("ablation", list(AblationType))
def test_full_model_circuit_is_faithful_and_complete(tiny_random, data, ablation):
    clean, abc = data
    whole = Circuit(
        "whole model", {"every head": all_heads(tiny_random)}
    )  # no class position: kept everywhere
    result = faithfulness(tiny_random, clean, abc, whole, ablation)
    assert result.faithfulness == pytest.approx(1.0, abs=1e-4)
    assert result.abs_diff == pytest.approx(0.0, abs=1e-5)
    assert result.ablation == ablation.value
    table = completeness(Knockout(tiny_random, clean, abc, ablation), whole)
    assert table["abs_diff"].max() == pytest.approx(0.0, abs=1e-5)


def test_circuit_heads_are_kept_only_at_their_class_position(tiny_random, data):
    clean, abc = data
    circuit = Circuit("c", {"name mover": (Head(1, 0),), "induction": (Head(0, 2),)})
    ko = Knockout(tiny_random, clean, abc)
    ablated = torch.ones(tiny_random.n_layers, *clean.tokens.shape, tiny_random.n_heads, dtype=torch.bool)
    rows = torch.arange(len(clean))
    ablated[1, rows, clean.end, 0] = False
    ablated[0, rows, clean.s2_pos, 2] = False

    def ablate_hook(z, hook, layer):
        return torch.where(ablated[layer][..., None], ko.values[layer], z)

    hooks = [
        (hook_name(layer, "z"), lambda z, hook, layer=layer: ablate_hook(z, hook, layer))
        for layer in range(2)
    ]
    want = logit_diff(tiny_random.bridge.run_with_hooks(clean.tokens, fwd_hooks=hooks), clean).item()
    assert faithfulness(tiny_random, clean, abc, circuit).f_circuit == pytest.approx(want, abs=1e-5)


def test_minimality_and_class_knockouts_agree_with_direct_runs(tiny_random, data):
    clean, abc = data
    circuit = Circuit("c", {"name mover": (Head(1, 0), Head(1, 1)), "s-inhibition": (Head(0, 3),)})
    ko = Knockout(tiny_random, clean, abc)
    table = minimality(ko, circuit)
    f_c = ko.f_many([ko.circuit_kept(circuit)])[0]
    for h in circuit.heads:
        without_h = ko.f_many([ko.circuit_kept(circuit, [h])])[0]
        row = table[(table.layer == h.layer) & (table["head"] == h.head)].iloc[0]
        assert row.abs_change >= abs(without_h - f_c) - 1e-6  # K = ∅ is one of the candidates
    classes = class_knockouts(ko, circuit).set_index("class")
    want = ko.f_many([ko.model_kept(circuit.classes["name mover"])])[0]
    assert classes.loc["name mover", "f_knockout"] == pytest.approx(want, abs=1e-5)
    for c, row in classes.iterrows():  # each value inside its interval, the change paired with F(M)
        assert row.f_knockout_lo <= row.f_knockout <= row.f_knockout_hi, c
        assert row.change_lo <= row.change <= row.change_hi and row.change == pytest.approx(
            row.f_knockout - ko.acts.f_clean, abs=1e-5
        )
    # a case whose answer is known: a last-layer head ablated at S2 cannot reach END's logits, so
    # every prompt's change is 0 and so is its whole interval (the paired bootstrap sees no noise)
    last = Circuit("c", {"name mover": (Head(tiny_random.n_layers - 1, 0),)})
    row = class_knockouts(ko, last, "s2").iloc[0]
    assert row.change == row.change_lo == row.change_hi == pytest.approx(0.0, abs=1e-6)
    assert row.f_knockout_hi - row.f_knockout_lo > 0.01  # F itself varies over prompts


def test_faithfulness_analysis_reports_the_ablation_and_circuit(tiny_random, data):
    clean, abc = data
    circuit = Circuit("c", {"name mover": (Head(1, 0),)})
    result = run_analysis(
        "faithfulness", tiny_random, *data, circuit=circuit.to_json(), ablation="zero"
    ).to_json()
    for key in ("faithfulness", "f_model", "f_circuit", "abs_diff", "ablation"):
        assert key in result
    assert result["ablation"] == "zero"
    assert result["circuit"]["classes"]["name mover"] == ["1.0"]
    assert result["f_model"] == pytest.approx(prepare(tiny_random, clean, abc).f_clean)


def test_faithfulness_keeps_per_prompt_values_and_a_paired_interval(tiny_random, data):
    clean, abc = data
    whole = Circuit("whole model", {"every head": all_heads(tiny_random)})
    out = run_analysis("faithfulness", tiny_random, clean, abc, circuit=whole)
    prompts = out.tables["prompts"]
    assert len(prompts) == len(clean)
    assert prompts["f_circuit"].mean() == pytest.approx(out.summary["f_circuit"], abs=1e-5)
    assert {"MLP 0", "MLP 1", "MLPs 1+"} == set(out.tables["mlps"]["ablated"])
    # random:tiny does not do the task: the ratio is undefined, with the reason, never a number
    assert abs(out.summary["f_model"]) < 0.5
    assert out.summary["faithfulness"] != out.summary["faithfulness"]  # NaN
    assert "does not do the task" in out.summary["ratio_undefined"]


def test_ioi_tiny_circuit_with_the_heads_that_carry_the_effect_is_faithful(ioi_tiny):
    """The audit measured 0.57 without head 1.2 and 1.00 with it; the circuit rule includes it."""
    clean, abc = ioi_batches(ioi_tiny, 60)
    out = run_analysis("faithfulness", ioi_tiny, clean, abc)
    assert "1.2" in out.summary["circuit"]["classes"]["other heads carrying the effect"]
    assert out.summary["faithfulness_lo"] <= out.summary["faithfulness"] <= out.summary["faithfulness_hi"]
    assert 0.9 <= out.summary["faithfulness_lo"] and out.summary["faithfulness_hi"] <= 1.1
    tests = run_analysis("circuit-tests", ioi_tiny, clean, abc)
    assert tests.summary["minimality_k"] == "K ∈ {∅, each class, the whole circuit}"
    assert set(tests.tables["completeness"]["subset"]) >= {"(none)", "(all)", "name mover"}


def test_no_faithfulness_for_a_model_that_does_the_opposite_task(ioi_tiny):
    """|F(M)| is large when a model prefers S, but it has no IOI circuit: the ratio is undefined."""
    clean, abc = ioi_batches(ioi_tiny, 30)
    swapped = dataclasses.replace(clean, io_tok=clean.s_tok, s_tok=clean.io_tok)  # logit(S) − logit(IO)
    out = run_analysis("faithfulness", ioi_tiny, swapped, abc)
    assert out.summary["f_model"] < -0.5 and "does not do the task" in out.summary["ratio_undefined"]
    assert out.summary["faithfulness"] != out.summary["faithfulness"]
