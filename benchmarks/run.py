"""Speed of the product's analyses and fine-tuning against the textbook loops of baselines.py.

Every comparison runs both implementations in this process, on the same model and prompts, and
reports the median wall time of `--repeats` runs, the ratio, and the largest absolute difference
of the results (exact modes must agree within 1e-4). The last line printed is one JSON object.

    PYTHONPATH=. python benchmarks/run.py --quick        # < 5 minutes on 2 CPU cores
    PYTHONPATH=. python benchmarks/run.py                # 100 prompts on random:gpt2
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
from ioi.attribution import attribution_patching, head_z  # noqa: E402
from ioi.circuit import GPT2_SMALL_CIRCUIT, Head  # noqa: E402
from ioi.cmap import cmap  # noqa: E402
from ioi.data import abc_counterfactual, make_dataset, tokenize  # noqa: E402
from ioi.models import load_hf, load_model  # noqa: E402
from ioi.patching import patch_head_outputs  # noqa: E402
from ioi.path_patching import LOGITS, Receivers, path_patch  # noqa: E402
from ioi.train import TrainConfig, finetune  # noqa: E402


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


def compare(name: str, slow, fast, repeats: int, results: dict, diff=None) -> None:
    t_slow, ref = median_time(slow, repeats)
    t_fast, got = median_time(fast, repeats)
    err = diff(ref, got) if diff else float("nan")
    results[name] = {
        "baseline_s": t_slow,
        "product_s": t_fast,
        "speedup": t_slow / t_fast,
        "max_abs_diff": err,
    }
    print(
        f"{name:>28}: baseline {t_slow:8.2f} s  product {t_fast:8.2f} s  "
        f"x{t_slow / t_fast:7.1f}  max|diff| {err:.1e}",
        flush=True,
    )


def bench_patching(model_name: str, n: int, repeats: int, results: dict) -> None:
    m = load_model(model_name, device="cpu")
    clean, abc = batches(m, n)
    with torch.no_grad():
        f_clean = textbook._logit_diff(m.bridge(clean.tokens), clean)
    minus_clean = lambda ref, got: (ref - f_clean - got).abs().max().item()  # noqa: E731

    compare(
        f"{model_name} path->resid exact",
        lambda: textbook.path_patching_to_logits(m.bridge, clean, abc),
        lambda: path_patch(m, fresh(clean), abc, LOGITS, normalize=False),
        repeats,
        results,
        minus_clean,
    )
    compare(
        f"{model_name} path->resid frozen",
        lambda: textbook.path_patching_to_logits(m.bridge, clean, abc, freeze_mlps=True),
        lambda: path_patch(m, fresh(clean), abc, LOGITS, normalize=False, freeze_mlp=True),
        repeats,
        results,
        minus_clean,
    )
    movers = (
        list(GPT2_SMALL_CIRCUIT.classes["name mover"])
        if m.n_layers == 12
        else [Head(m.n_layers - 1, h) for h in range(2)]
    )
    first = min(layer for layer, _ in movers)

    def heads_diff(ref, got):
        return (ref[:first] - f_clean - got[:first]).abs().max().item()

    compare(
        f"{model_name} path->heads q",
        lambda: textbook.path_patching_to_heads(m.bridge, clean, abc, movers),
        lambda: path_patch(m, fresh(clean), abc, Receivers(heads=tuple(movers)), normalize=False),
        repeats,
        results,
        heads_diff,
    )

    exact = {}

    def exact_patch():
        exact["v"] = patch_head_outputs(m, fresh(clean), abc, normalize=False)
        return exact["v"]

    compare(
        f"{model_name} act-patch",
        lambda: textbook.activation_patching(m.bridge, clean, abc),
        exact_patch,
        repeats,
        results,
        minus_clean,
    )
    abc_z = head_z(m.bridge, abc)
    compare(
        f"{model_name} eap vs textbook",
        lambda: textbook.activation_patching(m.bridge, clean, abc),
        lambda: attribution_patching(m.bridge, clean, abc_z),
        repeats,
        results,
    )
    t_eap, approx = median_time(lambda: attribution_patching(m.bridge, clean, abc_z), repeats)
    results[f"{model_name} eap vs batched exact"] = {
        "speedup": results[f"{model_name} act-patch"]["product_s"] / t_eap
    }
    x, y = approx.activation.flatten(), exact["v"].flatten()
    rank = lambda v: v.argsort().argsort().float()  # noqa: E731
    results[f"{model_name} eap rank corr"] = torch.corrcoef(torch.stack([rank(x), rank(y)]))[0, 1].item()

    other = load_model(model_name, device="cpu", seed=1) if model_name.startswith("random") else m
    compare(
        f"{model_name} cmap",
        lambda: textbook.cmap_outputs(m.bridge, other.bridge, clean),
        lambda: cmap(m.bridge, other.bridge, fresh(clean)),
        repeats,
        results,
        lambda ref, got: (ref - (got.delta.mean(-1) + got.f_receiver.mean())).abs().max().item(),
    )


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer prompts and repeats (< 5 min)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_gpt2, n_tiny, repeats = (8, 50, 1) if args.quick else (100, 200, 3)
    peak = matmul_peak()
    print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s ({args.threads} threads)", flush=True)
    results: dict = {"matmul_gflops": peak / 1e9}
    bench_patching("ioi-tiny", n_tiny, repeats, results)
    bench_patching("random:gpt2", n_gpt2, repeats, results)
    bench_finetune("ioi-tiny", 640 if args.quick else 6360, results, peak)
    g = lambda key: results[f"random:gpt2 {key}"]  # noqa: E731
    summary = {
        "path_patch_resid_exact_speedup": g("path->resid exact")["speedup"],
        "path_patch_resid_frozen_mlp_speedup": g("path->resid frozen")["speedup"],
        "path_patch_heads_speedup": g("path->heads q")["speedup"],
        "eap_speedup": g("eap vs textbook")["speedup"],
        "eap_speedup_vs_batched_exact": g("eap vs batched exact")["speedup"],
        "eap_rank_corr": g("eap rank corr"),
        "cmap_speedup": g("cmap")["speedup"],
        "finetune_speed_ratio": results["ioi-tiny finetune"]["speed_ratio"],
        "finetune_flop_share": results["ioi-tiny finetune"]["flop_share_of_matmul_peak"],
        "max_abs_diff": max(
            v["max_abs_diff"]
            for v in results.values()
            if isinstance(v, dict) and not math.isnan(v.get("max_abs_diff", math.nan))
        ),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "prompts_gpt2": n_gpt2,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
