"""EAP and EAP-IG against exact edge patching on GPT-2 small's shape (`random:gpt2`: random weights).

    PYTHONPATH=. python benchmarks/edges_gpt2.py [--prompts 8] [--logit-sample 40] [--sample 60]
        [--steps 1 5 20]

GPT-2's own weights are not available offline, so this is `random:gpt2` — GPT-2 small's shape (12
layers, 12 heads, d_model 768) and tokenizer with RANDOM weights: it does not do the task, and the
correlations say how well the gradient estimates rank edges on a model of this size, not on GPT-2.
Exact edge patching of all of its edges is too slow on 2 CPU cores, so the exact score is computed
for a stated subset: a seeded random sample of the edges into the logits and one of the other
edges, each by one hooked forward (the receiver's input gets the sender's ABC − clean change, as
tests/test_edges.py's reference loop). Prints the load, the times and the rank correlations.
"""

from __future__ import annotations

import argparse
import os
import time


def exact_by_hooks(model, clean, runs, graph, edges: list[int]) -> list[float]:
    """F(edge patched) − F(M) of each edge index, one hooked forward each."""
    import torch

    from ioi.task.metrics import logit_diff_per_prompt

    bridge, out = model.bridge, []
    bridge.set_use_hook_mlp_in(True)
    try:
        for e in edges:
            sender, receiver = graph.edges[e]
            delta, name = runs.delta[sender], graph.receivers[receiver]
            if name == "logits":
                hook, fn = f"blocks.{model.n_layers - 1}.hook_resid_post", lambda x, hook, d=delta: x + d
            elif name.startswith("mlp"):
                hook, fn = f"blocks.{name[3:]}.hook_mlp_in", lambda x, hook, d=delta: x + d
            else:
                layer, head, site = name.split(".")

                def fn(x, hook, h=int(head), d=delta):
                    x = x.clone()
                    x[:, :, h] += d
                    return x

                hook = f"blocks.{layer}.hook_{site}_input"
            with torch.no_grad():
                logits = bridge.run_with_hooks(clean.tokens, fwd_hooks=[(hook, fn)])
            out.append(logit_diff_per_prompt(logits, clean).mean().item() - runs.acts.f_clean)
    finally:
        bridge.set_use_hook_mlp_in(False)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--logit-sample", type=int, default=40, help="random edges into the logits")
    p.add_argument("--sample", type=int, default=60, help="random edges not into the logits")
    p.add_argument("--steps", type=int, nargs="*", default=[1, 5, 20])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from ioi.methods.edge_attribution import edge_attribution, rank_correlation
    from ioi.methods.edges import edge_graph, edge_runs
    from ioi.models.load import load_model
    from ioi.task.data import abc_counterfactual, make_dataset, tokenize

    model = load_model("random:gpt2", device="cpu")
    samples = make_dataset(args.prompts, args.seed, "eval")
    clean = tokenize(samples, model.tokenizer)
    abc = tokenize(abc_counterfactual(samples, args.seed), model.tokenizer, like=clean)
    graph = edge_graph(model)
    into = [e for e, (_, j) in enumerate(graph.edges) if graph.receivers[j] == "logits"]
    others = [e for e in range(len(graph.edges)) if e not in set(into)]
    gen = torch.Generator().manual_seed(args.seed)

    def sample(edges: list[int], k: int) -> list[int]:
        return [edges[i] for i in sorted(torch.randperm(len(edges), generator=gen)[:k].tolist())]

    logits = sample(into, args.logit_sample)
    subset = logits + sample(others, args.sample)
    print(
        f"random:gpt2 (GPT-2 small's shape, RANDOM weights), {args.prompts} prompts, "
        f"{args.threads} thread(s), "
        f"{len(graph.edges)} edges; exact on {len(logits)} of the {len(into)} edges into the logits + "
        f"{len(subset) - len(logits)} random others (seed {args.seed}); load average {os.getloadavg()[0]:.1f}"
    )
    t = time.perf_counter()
    runs = edge_runs(model, clean, abc)
    exact = torch.tensor(exact_by_hooks(model, clean, runs, graph, subset))
    took = time.perf_counter() - t
    print(f"exact, one hooked forward per edge: {took:.1f} s (F(M) = {runs.acts.f_clean:.4f})")
    idx = torch.tensor(subset)
    n_logits = len(logits)
    for steps in args.steps:
        t = time.perf_counter()
        est = edge_attribution(model, clean, abc, steps=steps)[idx]
        label = "EAP" if steps == 1 else f"EAP-IG ({steps} steps)"
        print(
            f"{label}: {time.perf_counter() - t:.1f} s for every edge; rank correlation with exact: "
            f"all {len(subset)} {rank_correlation(est, exact):.3f}, into the logits "
            f"{rank_correlation(est[:n_logits], exact[:n_logits]):.3f}, others "
            f"{rank_correlation(est[n_logits:], exact[n_logits:]):.3f}"
        )
    print(f"load average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
