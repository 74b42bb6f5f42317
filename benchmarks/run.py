"""Speed of the product's analyses and fine-tuning against the textbook loops of baselines.py.

Every comparison runs both implementations in this process, on the same model and prompts, and
reports the median wall time of `--repeats` runs, the ratio, and the largest absolute difference
of the results (exact modes must agree within 1e-4). The last line printed is one JSON object.

    PYTHONPATH=. python benchmarks/run.py --quick        # < 5 minutes on 2 CPU cores
    PYTHONPATH=. python benchmarks/run.py                # 100 prompts on random:gpt2, every head
    PYTHONPATH=. python benchmarks/run.py --dashboard    # also the dashboard's time to first chart

--quick times the textbook loops on 8 of GPT-2's 144 heads and scales their time to all heads
(every head costs them one full forward pass; the product runs every head), and patches at END.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import baselines as textbook  # noqa: E402
from ioi.methods.attribution import attribution_patching, head_z  # noqa: E402
from ioi.methods.cmap import cmap  # noqa: E402
from ioi.methods.patching import all_heads, patch_head_outputs  # noqa: E402
from ioi.methods.path_patching import LOGITS, Receivers, path_patch  # noqa: E402
from ioi.models.load import load_hf, load_model  # noqa: E402
from ioi.models.train import TrainConfig, finetune  # noqa: E402
from ioi.task.circuit import GPT2_SMALL_CIRCUIT, Head  # noqa: E402
from ioi.task.data import abc_counterfactual, make_dataset, tokenize  # noqa: E402


def median_time(fn, repeats: int):
    """(median seconds, last result) of `repeats` calls of fn()."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def batches(model, n: int):
    samples = make_dataset(n, seed=0, split="eval")
    clean = tokenize(samples, model.tokenizer)
    return clean, tokenize(abc_counterfactual(samples), model.tokenizer, like=clean)


def fresh(batch):
    # The product memoises prepare() per batch object; a copy makes every repeat pay for it.
    return batch.subset(range(len(batch)))


def matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    secs, _ = median_time(lambda: torch.matmul(a, b), repeats)
    return 2 * size**3 / secs


def compare(name: str, slow, fast, repeats: int, results: dict, diff=None, scale: float = 1.0) -> None:
    """Time slow() and fast(); slow's time is multiplied by `scale` (all heads / heads it ran)."""
    t_slow, ref = median_time(slow, repeats)
    t_slow *= scale
    t_fast, got = median_time(fast, repeats)
    err = diff(ref, got) if diff else float("nan")
    results[name] = {
        "baseline_s": t_slow,
        "product_s": t_fast,
        "speedup": t_slow / t_fast,
        "max_abs_diff": err,
        "baseline_time_scaled_by": scale,
    }
    scaled = f" (timed on 1/{scale:.0f} of the heads)" if scale != 1 else ""
    print(
        f"{name:>28}: baseline {t_slow:8.2f} s{scaled}  product {t_fast:8.2f} s  "
        f"x{t_slow / t_fast:7.1f}  max|diff| {err:.1e}",
        flush=True,
    )


def sample_heads(model, k: int | None) -> list[tuple[int, int]] | None:
    """k heads spread over the layers (None: every head), for the textbook loops of a quick run."""
    if k is None or k >= model.n_layers * model.n_heads:
        return None
    return [(i * model.n_layers // k, (5 * i) % model.n_heads) for i in range(k)]


def bench_patching(
    model_name: str, n: int, repeats: int, results: dict, k: int | None, positions: str
) -> None:
    """Path patching, activation patching, EAP and CMAP against their textbook loops.

    k: heads the textbook loops run (None = all; their time is scaled to all heads, since every
    head costs one full forward). positions: "all" or "end", where activation patching and EAP
    patch (CMAP output patching is at END, as METHODS §8 defines it).
    """
    m = load_model(model_name, device="cpu")
    clean, abc = batches(m, n)
    with torch.no_grad():
        f_clean = textbook._logit_diff(m.bridge(clean.tokens), clean)
    heads = sample_heads(m, k)
    total = m.n_layers * m.n_heads
    scale = total / len(heads) if heads else 1.0

    def minus_clean(ref, got):
        timed = ~ref.isnan()
        return (ref[timed] - f_clean - got[timed]).abs().max().item()

    compare(
        f"{model_name} path->resid exact",
        lambda: textbook.path_patching_to_logits(m.bridge, clean, abc, heads=heads),
        lambda: path_patch(m, fresh(clean), abc, LOGITS, normalize=False),
        repeats, results, minus_clean, scale,
    )  # fmt: skip
    compare(
        f"{model_name} path->resid frozen",
        lambda: textbook.path_patching_to_logits(m.bridge, clean, abc, freeze_mlps=True, heads=heads),
        lambda: path_patch(m, fresh(clean), abc, LOGITS, normalize=False, freeze_mlp=True),
        repeats, results, minus_clean, scale,
    )  # fmt: skip
    movers = (
        list(GPT2_SMALL_CIRCUIT.classes["name mover"])
        if m.n_layers == 12
        else [Head(m.n_layers - 1, h) for h in range(2)]
    )
    first = min(layer for layer, _ in movers)
    senders = [h for h in (heads or all_heads(m)) if h[0] < first]
    compare(
        f"{model_name} path->heads q",
        lambda: textbook.path_patching_to_heads(m.bridge, clean, abc, movers, heads=senders),
        lambda: path_patch(m, fresh(clean), abc, Receivers(heads=tuple(movers)), normalize=False),
        repeats, results, minus_clean, first * m.n_heads / len(senders),
    )  # fmt: skip
    end_only = positions == "end"
    slow_exact = {}

    def textbook_patching():
        slow_exact["v"] = textbook.activation_patching(m.bridge, clean, abc, end_only=end_only, heads=heads)
        return slow_exact["v"]

    position = "end" if end_only else None
    compare(
        f"{model_name} act-patch",
        textbook_patching,
        lambda: patch_head_outputs(m, fresh(clean), abc, position=position, normalize=False),
        repeats, results, minus_clean, scale,
    )  # fmt: skip
    abc_z = head_z(m.bridge, abc)
    t_eap, approx = median_time(lambda: attribution_patching(m.bridge, clean, abc_z, positions), repeats)
    t_textbook = results[f"{model_name} act-patch"]["baseline_s"]
    results[f"{model_name} eap"] = {
        "baseline_s": t_textbook,
        "product_s": t_eap,
        "speedup": t_textbook / t_eap,
    }
    results[f"{model_name} eap vs batched exact"] = {
        "speedup": results[f"{model_name} act-patch"]["product_s"] / t_eap
    }
    exact = patch_head_outputs(m, clean, abc, position=position, normalize=False)
    x, y = approx.activation.flatten(), exact.flatten()
    rank = lambda v: v.argsort().argsort().float()  # noqa: E731
    results[f"{model_name} eap rank corr"] = torch.corrcoef(torch.stack([rank(x), rank(y)]))[0, 1].item()
    print(
        f"{model_name + ' eap':>28}: baseline {t_textbook:8.2f} s  product {t_eap:8.2f} s  "
        f"x{t_textbook / t_eap:7.1f}  rank corr with exact {results[f'{model_name} eap rank corr']:.3f}",
        flush=True,
    )

    other = load_model(model_name, device="cpu", seed=1) if model_name.startswith("random") else m
    compare(
        f"{model_name} cmap",
        lambda: textbook.cmap_outputs(m.bridge, other.bridge, clean, heads=heads),
        lambda: cmap(m, other, fresh(clean)),
        repeats, results,
        lambda ref, got: minus_clean(ref, got.delta.mean(-1) + got.f_receiver.mean() - f_clean),
        scale,
    )  # fmt: skip


def bench_finetune(model_name: str, n: int, results: dict, peak: float) -> None:
    hf, tok, _ = load_hf(model_name)
    batch = tokenize(make_dataset(n, seed=0), tok)
    t = time.perf_counter()
    textbook.plain_finetune(hf, batch, epochs=1, lr=1e-4, batch_size=32)
    t_plain = time.perf_counter() - t
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(model=model_name, epochs=1, lr=1e-4, batch_size=32, train_size=n, eval_size=8)
        finetune(cfg, tmp, progress=lambda *_: stamps.append(time.perf_counter()))
    steps = math.ceil(n / 32)
    t_product = (stamps[-1] - stamps[0]) * steps / max(1, steps - 1)  # loading and checkpoint excluded
    tokens = int((batch.end + 1).sum())
    n_params = sum(p.numel() for p in hf.parameters())
    results[f"{model_name} finetune"] = {
        "plain_s": t_plain,
        "product_s": t_product,
        "speed_ratio": t_plain / t_product,
        "tokens_per_s": tokens / t_product,
        "flop_share_of_matmul_peak": 6 * n_params * tokens / t_product / peak,
    }
    print(
        f"{model_name + ' finetune':>28}: plain {t_plain:.2f} s  product {t_product:.2f} s  "
        f"x{t_plain / t_product:.2f}  {tokens / t_product:,.0f} tok/s",
        flush=True,
    )


def bench_checkpoint(model_name: str, n: int, results: dict) -> None:
    """End to end: every registered analysis of one checkpoint, as a job runs them (CMAP against
    a second model), with its data preparation."""
    from ioi.methods.analyses import run_analysis
    from ioi.runs.experiment import registered_analyses

    t0 = time.perf_counter()
    m = load_model(model_name, device="cpu")
    other = load_model(model_name, device="cpu", seed=1) if model_name.startswith("random") else m
    clean, abc = batches(m, n)
    times = {"load": time.perf_counter() - t0}
    for name, spec in registered_analyses().items():
        t = time.perf_counter()
        run_analysis(name, m, clean, abc, other=other if spec.needs_other else None)
        times[name] = time.perf_counter() - t
    total = sum(times.values())
    results[f"{model_name} checkpoint"] = {"total_s": total, **{f"{k}_s": v for k, v in times.items()}}
    print(f"{model_name + ' every analysis':>28}: {total:.1f} s ({n} prompts; "
          + ", ".join(f"{k} {v:.1f}" for k, v in times.items()) + ")", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer prompts, sampled textbook heads (< 5 min)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dashboard", action="store_true", help="also time the dashboard's first chart")
    parser.add_argument("--prompts", type=int, help="GPT-2 prompts (default 20 quick, 100 full)")
    parser.add_argument("--textbook-heads", type=int, help="heads the textbook GPT-2 loops run")
    parser.add_argument("--positions", choices=("all", "end"), help="activation patching / EAP positions")
    parser.add_argument("--repeats", type=int, help="timed repeats per comparison, median reported")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:  # textbook loops on 8 of GPT-2's 144 heads, activation patching at END
        n_gpt2, n_tiny, repeats, k, positions = 20, 50, 1, 8, "end"
    else:
        n_gpt2, n_tiny, repeats, k, positions = 100, 200, 3, None, "all"
    n_gpt2, k, positions = args.prompts or n_gpt2, args.textbook_heads or k, args.positions or positions
    repeats = args.repeats or repeats
    started = time.perf_counter()
    peak = matmul_peak()
    print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s ({args.threads} threads)", flush=True)
    results: dict = {"matmul_gflops": peak / 1e9}
    bench_patching("ioi-tiny", n_tiny, repeats, results, None, positions)
    bench_patching("random:gpt2", n_gpt2, repeats, results, k, positions)
    bench_finetune("ioi-tiny", 640 if args.quick else 6360, results, peak)
    bench_finetune("random:gpt2", 64 if args.quick else 320, results, peak)  # GPT-2 runbook's epoch time
    bench_checkpoint("ioi-tiny", n_tiny, results)
    if not args.quick:
        bench_checkpoint("random:gpt2", n_gpt2, results)
    if args.dashboard:
        from benchmarks.dashboard import first_chart_seconds

        results["dashboard_first_chart_s"] = first_chart_seconds()
        print(f"{'dashboard first chart':>28}: {results['dashboard_first_chart_s']:.1f} s", flush=True)
    g = lambda key: results[f"random:gpt2 {key}"]  # noqa: E731
    summary = {
        "path_patch_resid_exact_speedup": g("path->resid exact")["speedup"],
        "path_patch_resid_frozen_mlp_speedup": g("path->resid frozen")["speedup"],
        "path_patch_heads_speedup": g("path->heads q")["speedup"],
        "eap_speedup": g("eap")["speedup"],
        "eap_speedup_vs_batched_exact": g("eap vs batched exact")["speedup"],
        "eap_rank_corr": g("eap rank corr"),
        "cmap_speedup": g("cmap")["speedup"],
        "finetune_speed_ratio": results["ioi-tiny finetune"]["speed_ratio"],
        "finetune_tokens_per_s": results["ioi-tiny finetune"]["tokens_per_s"],
        "finetune_flop_share": results["ioi-tiny finetune"]["flop_share_of_matmul_peak"],
        "gpt2_finetune_speed_ratio": g("finetune")["speed_ratio"],
        "gpt2_finetune_tokens_per_s": g("finetune")["tokens_per_s"],
        "gpt2_finetune_flop_share": g("finetune")["flop_share_of_matmul_peak"],
        "max_abs_diff": max(
            v["max_abs_diff"]
            for v in results.values()
            if isinstance(v, dict) and not math.isnan(v.get("max_abs_diff", math.nan))
        ),
        "checkpoint_all_analyses_s": results["ioi-tiny checkpoint"]["total_s"],
        "dashboard_first_chart_s": results.get("dashboard_first_chart_s"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "prompts_gpt2": n_gpt2,
        "textbook_heads_gpt2": k or 144,
        "patch_positions": positions,
        "repeats": repeats,
        "wall_s": time.perf_counter() - started,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
