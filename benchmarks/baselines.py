"""Textbook implementations the product is measured against.

Written plainly, the way a tutorial does it: one full forward pass per head (or per sender), with
hooks that overwrite activations from a cache. They share nothing with `ioi/`'s fast paths except
the model loader and the dataset, so agreement between the two is a real check.

All functions return raw logit differences (mean over prompts of logit(IO) − logit(S) at END) as a
[layer, head] tensor; `heads` limits the loop to some heads (the others are NaN), so a quick run
can time the loop on a sample of heads and scale the time (every iteration is one full forward).
"""

from __future__ import annotations

import torch

from ioi.task.data import IOIBatch


def _logit_diff(logits: torch.Tensor, batch: IOIBatch) -> float:
    rows = torch.arange(len(batch))
    last = logits[rows, batch.end]
    return (last[rows, batch.io_tok] - last[rows, batch.s_tok]).mean().item()


def _grid(bridge, heads) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """A NaN [layer, head] grid and the heads to loop over (default: all, layer-major)."""
    n_layers, n_heads = bridge.cfg.n_layers, bridge.cfg.n_heads
    every = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    return torch.full((n_layers, n_heads), float("nan")), list(heads) if heads is not None else every


def _cache(bridge, tokens: torch.Tensor, suffixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith(suffixes))
    return {k: v.clone() for k, v in cache.items()}


@torch.no_grad()
def activation_patching(
    bridge, clean: IOIBatch, abc: IOIBatch, *, end_only: bool = False, heads=None
) -> torch.Tensor:
    """Per head: clean run with the head's hook_z (all positions, or END only) taken from the ABC run."""
    abc_z = _cache(bridge, abc.tokens, ("attn.hook_z",))
    rows = torch.arange(len(clean))
    out, todo = _grid(bridge, heads)
    for layer, head in todo:
        name = f"blocks.{layer}.attn.hook_z"

        def hook(z, hook, head=head, name=name):
            if end_only:
                z[rows, clean.end, head] = abc_z[name][rows, clean.end, head]
            else:
                z[:, :, head] = abc_z[name][:, :, head]
            return z

        logits = bridge.run_with_hooks(clean.tokens, fwd_hooks=[(name, hook)])
        out[layer, head] = _logit_diff(logits, clean)
    return out


def _freeze_hooks(layers: int, clean_z, abc_z, sender, clean_mlp=None):
    """Hooks that set every head to its clean output except `sender` (ABC output)."""
    hooks = []
    for layer in range(layers):
        name = f"blocks.{layer}.attn.hook_z"

        def hook(z, hook, layer=layer, name=name):
            z[:] = clean_z[name]
            if layer == sender[0]:
                z[:, :, sender[1]] = abc_z[name][:, :, sender[1]]
            return z

        hooks.append((name, hook))
        if clean_mlp is not None:
            mlp = f"blocks.{layer}.hook_mlp_out"
            hooks.append((mlp, lambda x, hook, mlp=mlp: clean_mlp[mlp]))
    return hooks


@torch.no_grad()
def path_patching_to_logits(
    bridge, clean: IOIBatch, abc: IOIBatch, *, freeze_mlps: bool = False, heads=None
) -> torch.Tensor:
    """Per sender: its output from ABC, every other head frozen to clean, MLPs recomputed (or
    frozen), read the logits."""
    n_layers = bridge.cfg.n_layers
    clean_c = _cache(bridge, clean.tokens, ("attn.hook_z", "hook_mlp_out"))
    abc_z = _cache(bridge, abc.tokens, ("attn.hook_z",))
    clean_z = {k: v for k, v in clean_c.items() if k.endswith("hook_z")}
    clean_mlp = {k: v for k, v in clean_c.items() if k.endswith("hook_mlp_out")} if freeze_mlps else None
    out, todo = _grid(bridge, heads)
    for layer, head in todo:
        hooks = _freeze_hooks(n_layers, clean_z, abc_z, (layer, head), clean_mlp)
        logits = bridge.run_with_hooks(clean.tokens, fwd_hooks=hooks)
        out[layer, head] = _logit_diff(logits, clean)
    return out


@torch.no_grad()
def path_patching_to_heads(
    bridge, clean: IOIBatch, abc: IOIBatch, receivers: list[tuple[int, int]], site: str = "q", heads=None
) -> torch.Tensor:
    """Per sender (in layers before the first receiver): run 1 patches the sender from ABC with
    every other head frozen clean and records the receivers' `site` input; run 2 is the clean
    run with only those receiver inputs (at END) replaced."""
    n_layers = bridge.cfg.n_layers
    clean_z = _cache(bridge, clean.tokens, ("attn.hook_z",))
    abc_z = _cache(bridge, abc.tokens, ("attn.hook_z",))
    rows = torch.arange(len(clean))
    out, todo = _grid(bridge, heads)
    first = min(layer for layer, _ in receivers)
    for layer, head in todo:
        if layer < first:
            hooks = _freeze_hooks(n_layers, clean_z, abc_z, (layer, head))
            patched: dict[str, torch.Tensor] = {}
            for rl in {rl for rl, _ in receivers}:
                name = f"blocks.{rl}.hook_{site}_input"
                hooks.append((name, lambda x, hook, name=name: patched.__setitem__(name, x.clone())))  # noqa: B023 (used within this iteration)
            bridge.run_with_hooks(clean.tokens, fwd_hooks=hooks)

            def put(x, hook, rl):
                for r_layer, r_head in receivers:
                    if r_layer == rl:
                        src = patched[f"blocks.{rl}.hook_{site}_input"]  # noqa: B023
                        x[rows, clean.end, r_head] = src[rows, clean.end, r_head]
                return x

            run2 = [(f"blocks.{rl}.hook_{site}_input", lambda x, hook, rl=rl: put(x, hook, rl))
                    for rl in sorted({rl for rl, _ in receivers})]  # fmt: skip
            logits = bridge.run_with_hooks(clean.tokens, fwd_hooks=run2)
            out[layer, head] = _logit_diff(logits, clean)
    return out


@torch.no_grad()
def cmap_outputs(bridge_a, bridge_b, batch: IOIBatch, *, heads=None) -> torch.Tensor:
    """Per head: run A with that head's hook_z at END taken from B's run."""
    b_z = _cache(bridge_b, batch.tokens, ("attn.hook_z",))
    rows = torch.arange(len(batch))
    out, todo = _grid(bridge_a, heads)
    for layer, head in todo:
        name = f"blocks.{layer}.attn.hook_z"

        def hook(z, hook, head=head, name=name):
            z[rows, batch.end, head] = b_z[name][rows, batch.end, head]
            return z

        logits = bridge_a.run_with_hooks(batch.tokens, fwd_hooks=[(name, hook)])
        out[layer, head] = _logit_diff(logits, batch)
    return out


def plain_finetune(
    hf_model, batch: IOIBatch, *, epochs: int, lr: float, batch_size: int, seed: int = 0
) -> float:
    """A plain PyTorch loop over the HF model: full logits, CE of the label at END. Returns the
    last step's loss."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(hf_model.parameters(), lr=lr, weight_decay=0.1)
    hf_model.train()
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        order = torch.randperm(len(batch))
        for i in range(0, len(batch), batch_size):
            idx = order[i : i + batch_size]
            logits = hf_model(batch.tokens[idx]).logits
            last = logits[torch.arange(len(idx)), batch.end[idx]]
            loss = torch.nn.functional.cross_entropy(last, batch.label_tok[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return loss.item()
