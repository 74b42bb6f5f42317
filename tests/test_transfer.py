"""The transfer matrix where a model does not do the task: the ratio F_j(circuit)/F_j(M) is not
defined there, and every layer that shows it (JSON, report, heatmap) says so with the criterion."""

from __future__ import annotations

import json

import torch
from analysis_data import ioi_batches

from ioi.cli.analyze import json_safe
from ioi.methods.edge_sets import edge_set_logit_diffs
from ioi.methods.edges import edge_graph, edge_runs
from ioi.methods.stats import MIN_DENOMINATOR, NO_TASK
from ioi.methods.transfer import transfer_faithfulness
from ioi.present.evolution_charts import matrix_heatmap
from ioi.present.evolution_report import transfer_table
from ioi.runs.compare import _matrix_frame


def test_cells_of_a_model_with_f_near_zero_say_not_defined_and_keep_f_circuit(tiny_random):
    clean, abc = ioi_batches(tiny_random, 8)
    runs = edge_runs(tiny_random, clean, abc)
    assert abs(runs.acts.f_clean) < MIN_DENOMINATOR  # the known case: random weights do not do the task
    g = edge_graph(tiny_random)
    circuits = [g.names[:5], g.names[5:40]]
    m = transfer_faithfulness([tiny_random, tiny_random], circuits, clean, abc, runs=[runs, runs])
    assert torch.isnan(m["value"]).all() and torch.isnan(m["lo"]).all()
    assert all(cell.startswith(NO_TASK) and "0.5 logits" in cell for row in m["undefined"] for cell in row)
    masks = torch.ones(2, len(g.edges), dtype=torch.bool)
    for i, edges in enumerate(circuits):
        masks[i, [g.index(e) for e in edges]] = False
    f = edge_set_logit_diffs(tiny_random, clean, runs, masks).double().mean(1)
    assert torch.allclose(m["f_circuit"][:, 0], f, atol=1e-6)  # the honest value: F_j(circuit i)
    assert (m["f_circuit_lo"] <= m["f_circuit"]).all() and (m["f_circuit"] <= m["f_circuit_hi"]).all()
    assert torch.allclose(m["f_model"], torch.full((2, 2), runs.acts.f_clean, dtype=torch.float64), atol=1e-6)

    order = ["epoch 0", "epoch 1"]
    frame = _matrix_frame(m, order, ("circuit_of", "model"))
    cell = json.loads(json.dumps(json_safe(frame.to_dict("records"))))[0]
    assert cell["value"] is None and cell["undefined"].startswith(NO_TASK) and cell["f_circuit"] is not None

    table = "\n".join(transfer_table(frame, order))
    assert table.count(NO_TASK) == 4 and "F(circuit) = " in table and "nan" not in table

    spec = matrix_heatmap(frame, "circuit_of", "model", order, domain=(0.0, 1.0)).to_dict()
    labels = [r["label"] for d in spec["datasets"].values() for r in d]
    assert labels.count("F(M) ≈ 0") == 4 and "nan" not in labels  # every cell says why, none "nan"
    marks = [layer["mark"] for layer in spec["layer"]]
    assert {"type": "rect", "color": "#d9d9d9"} in marks  # undefined cells are grey, not coloured
