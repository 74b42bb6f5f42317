"""CMAP speed: the batched engine (B cached once, several heads per forward) against one patched
forward pass per head. Usage: python benchmarks/cmap_speed.py [model] [n_prompts] [max_rows]"""

import sys
import time

import torch

from ioi.cmap import cmap
from ioi.data import make_dataset, tokenize
from ioi.metrics import logit_diff_per_prompt
from ioi.models import load_model


def one_forward_per_head(a, b, clean) -> torch.Tensor:
    _, cache = b.run_with_cache(clean.tokens, names_filter=lambda n: n.endswith("attn.hook_z"))
    base = logit_diff_per_prompt(a(clean.tokens), clean)
    rows = torch.arange(len(clean))
    out = torch.zeros(a.cfg.n_layers, a.cfg.n_heads, len(clean))
    for layer in range(a.cfg.n_layers):
        name = f"blocks.{layer}.attn.hook_z"
        for head in range(a.cfg.n_heads):

            def patch(x, hook, name=name, head=head):
                x = x.clone()
                x[rows, clean.end, head] = cache[name][rows, clean.end, head]
                return x

            logits = a.run_with_hooks(clean.tokens, fwd_hooks=[(name, patch)])
            out[layer, head] = logit_diff_per_prompt(logits, clean) - base
    return out


def main() -> None:
    torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    name = sys.argv[1] if len(sys.argv) > 1 else "random:gpt2"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    max_rows = int(sys.argv[3]) if len(sys.argv) > 3 else 256
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = load_model(name, device=device, seed=0), load_model(name, device=device, seed=1)
    clean = tokenize(make_dataset(n, seed=0, split="eval"), a.tokenizer)
    with torch.no_grad():
        t = time.perf_counter()
        ref = one_forward_per_head(a.bridge, b.bridge, clean)
        slow = time.perf_counter() - t
        t = time.perf_counter()
        fast = cmap(a.bridge, b.bridge, clean, max_rows=max_rows)
        quick = time.perf_counter() - t
    err = (fast.delta.cpu() - ref).abs().max().item()
    print(
        f"{name} on {device}, {n} prompts, max_rows {max_rows}: one forward per head {slow:.2f} s, "
        f"batched {quick:.2f} s, speed-up {slow / quick:.2f}x, max |diff| {err:.2e}"
    )


if __name__ == "__main__":
    main()
