"""Edge attribution (EAP, EAP-IG) against finite differences, and the greedy edge circuit."""

from __future__ import annotations

import json

import pytest
from analysis_data import ioi_batches
from test_edges import slow_edge_score

from ioi.methods.edge_attribution import edge_attribution, rank_correlation
from ioi.methods.edge_circuit import greedy_edge_circuit
from ioi.methods.edges import edge_graph, edge_runs, exact_edge_scores


@pytest.fixture(scope="module")
def data(tiny_random):
    clean, abc = ioi_batches(tiny_random, 6)
    return clean, abc, edge_runs(tiny_random, clean, abc)


def test_eap_is_the_derivative_of_edge_patching(tiny_random, data):
    clean, abc, runs = data
    g = edge_graph(tiny_random)
    eap = edge_attribution(tiny_random, clean, abc, steps=1, chunk=4)  # two chunks of prompts
    eps = 1e-2
    for name in ("embed->logits", "0.1->1.2.k", "mlp0->mlp1", "embed->0.3.q", "0.2->1.0.v"):
        i, j = g.edges[g.index(name)]
        fd = slow_edge_score(tiny_random, clean, runs, i, g.receivers[j], scale=eps) / eps
        assert eap[g.index(name)].item() == pytest.approx(fd, rel=0.05, abs=2e-4), name


def test_eap_ig_ranks_like_exact_on_a_random_model(tiny_random, data):
    clean, abc, runs = data
    exact = exact_edge_scores(tiny_random, clean, abc, runs=runs)
    ig = edge_attribution(tiny_random, clean, abc, steps=4)
    assert rank_correlation(ig, exact) > 0.9
    assert rank_correlation(exact, exact) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 1"):
        edge_attribution(tiny_random, clean, abc, steps=0)


def test_greedy_circuit_is_the_smallest_prefix_reaching_the_target(ioi_tiny):
    clean, abc = ioi_batches(ioi_tiny, 20)
    runs = edge_runs(ioi_tiny, clean, abc)
    scores = exact_edge_scores(ioi_tiny, clean, abc, runs=runs)
    c = greedy_edge_circuit(ioi_tiny, clean, abc, scores, target=0.8, runs=runs)
    n = len(edge_graph(ioi_tiny).edges)
    k = len(c.edges)
    assert c.reached and 0 < k < n
    assert c.curve[0] == pytest.approx(runs.acts.f_abc / runs.acts.f_clean, abs=1e-4)
    assert c.curve[n] == pytest.approx(1.0, abs=1e-4)
    assert c.curve[k] >= 0.8 and c.curve[k - 1] < 0.8  # bisection ended on the step that crosses
    assert c.faithfulness.value == pytest.approx(c.curve[k], abs=1e-6)
    assert c.faithfulness.lo <= c.faithfulness.value <= c.faithfulness.hi
    assert "logits" in c.nodes


def test_analyze_edges_cli(capsys):
    from ioi.cli import main

    assert (
        main(
            [
                "analyze",
                "edges",
                "--model",
                "random:tiny",
                "--size",
                "4",
                "--json",
                "--option",
                "method=eap-ig",
                "--option",
                "steps=2",
                "--option",
                "compare=true",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert (
        out["method"] == "edges"
        and out["scoring"] == "eap-ig"
        and out["n_edges_total"] == len(out["edges"]) == 110
    )
    assert -1 <= out["rank_correlation_with_exact"] <= 1
    # a random model does not do the task: no edge circuit (a ratio over F(M) ~ 0 would pick noise)
    assert out["n_edges"] == 0 and not out["reached"] and "does not do the task" in out["ratio_undefined"]
    assert out["faithfulness"] is None and not any(e["in_circuit"] for e in out["edges"])
    assert main(["analyze", "edges", "--model", "ioi-tiny", "--size", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    total = out["n_edges_total"]
    assert out["curve"][0]["n_edges"] == 0 and out["curve"][-1]["n_edges"] == total and out["reached"]
    assert sum(e["in_circuit"] for e in out["edges"]) == out["n_edges"] > 0
    assert main(["analyze", "edges", "--model", "random:tiny", "--option", "method=acdc"]) == 2
    assert "method is one of exact, eap, eap-ig" in capsys.readouterr().err
