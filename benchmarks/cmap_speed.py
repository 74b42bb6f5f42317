"""CMAP speed: the batched engine (B cached once, several heads per forward, each layer's copies
started at that layer) against the textbook one-forward-per-head loop of benchmarks/baselines.py.

Usage: PYTHONPATH=. python benchmarks/cmap_speed.py [model] [n_prompts] [max_rows] [threads]
"""

import sys
import time

import torch

from benchmarks.baselines import cmap_outputs
from ioi.cmap import cmap
from ioi.data import make_dataset, tokenize
from ioi.models import load_model


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "random:gpt2"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    max_rows = int(sys.argv[3]) if len(sys.argv) > 3 else 256
    torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    a, b = load_model(name, device="cpu", seed=0), load_model(name, device="cpu", seed=1)
    clean = tokenize(make_dataset(n, seed=0, split="eval"), a.tokenizer)
    cmap(a.bridge, b.bridge, clean.subset(range(2)))  # warm-up
    t = time.perf_counter()
    ref = cmap_outputs(a.bridge, b.bridge, clean)
    slow = time.perf_counter() - t
    t = time.perf_counter()
    fast = cmap(a.bridge, b.bridge, clean, max_rows=max_rows)
    quick = time.perf_counter() - t
    err = (fast.delta.mean(-1) + fast.f_receiver.mean() - ref).abs().max().item()
    print(
        f"{name}, CPU, {n} prompts, max_rows {max_rows}: one forward per head {slow:.2f} s, "
        f"batched {quick:.2f} s, speed-up {slow / quick:.2f}x, max |diff| {err:.2e}"
    )


if __name__ == "__main__":
    main()
