"""Edge-level circuits: time every exact edge score of one checkpoint, and rank EAP / EAP-IG against it.

    PYTHONPATH=. python benchmarks/edges.py [--model ioi-tiny] [--prompts 100] [--threads 2] [--steps 1 5 20]

Prints one line per measurement (seconds of the product's own call, the model loaded and the clean/ABC
runs done before the clock starts, except the row that includes them) and the machine's load.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ioi-tiny")
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, nargs="*", default=[1, 5, 20])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from ioi.methods.edge_attribution import edge_attribution, rank_correlation
    from ioi.methods.edge_circuit import greedy_edge_circuit
    from ioi.methods.edges import edge_graph, edge_runs, exact_edge_scores
    from ioi.methods.patching import prepare
    from ioi.models.load import load_model
    from ioi.task.data import abc_counterfactual, make_dataset, tokenize

    model = load_model(args.model, device="cpu")
    samples = make_dataset(args.prompts, 0, "eval")
    clean = tokenize(samples, model.tokenizer)
    abc = tokenize(abc_counterfactual(samples, 0), model.tokenizer, like=clean)
    print(
        f"model {args.model}, {args.prompts} prompts, {args.threads} threads, "
        f"{len(edge_graph(model).edges)} edges, load average {os.getloadavg()[0]:.1f}"
    )
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        runs = edge_runs(model, clean, abc, prepare(model, clean, abc))
        exact = exact_edge_scores(model, clean, abc, runs=runs)
        times.append(time.perf_counter() - t)
        clean = tokenize(samples, model.tokenizer)  # fresh objects: prepare() is not memoised
        abc = tokenize(abc_counterfactual(samples, 0), model.tokenizer, like=clean)
    print(
        f"every exact edge score (clean/ABC runs included): median {sorted(times)[len(times) // 2]:.2f} s "
        f"of {[round(x, 2) for x in times]}"
    )
    t = time.perf_counter()
    circuit = greedy_edge_circuit(model, clean, abc, exact, runs=runs)
    print(
        f"greedy edge circuit (curve + bisection): {time.perf_counter() - t:.2f} s, "
        f"{len(circuit.edges)} edges, faithfulness {circuit.faithfulness.value:.3f} "
        f"[{circuit.faithfulness.lo:.3f}, {circuit.faithfulness.hi:.3f}]"
    )
    for steps in args.steps:
        t = time.perf_counter()
        est = edge_attribution(model, clean, abc, steps=steps)
        label = "EAP" if steps == 1 else f"EAP-IG ({steps} steps)"
        print(
            f"{label}: {time.perf_counter() - t:.2f} s, "
            f"rank correlation with exact {rank_correlation(est, exact):.3f}"
        )


if __name__ == "__main__":
    main()
