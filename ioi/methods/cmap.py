"""Cross-model activation patching (CMAP, METHODS §8; Prakash et al. 2024).

Two models of one architecture, A and B, read the same prompts. For each head h, run A with h's
output (hook_z) — or its attention pattern — taken from B's run, and measure how the logit difference
moves, in logits and as a share of the gap F(B) − F(A). A head whose patch closes much of the gap
carries the change between the two models. Bootstrap over prompts gives confidence intervals.

Speed: B's activations and A's residual stream are read once; every head's patch is a variant of
:func:`ioi.methods.patching.run_patched`, which starts at the head's layer and, for patches at END (the
default for output patching), recomputes END's row only.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ioi.methods.analyses import AnalysisResult, heads_frame, register_analysis
from ioi.methods.patching import (
    DEFAULT_MAX_ROWS,
    Patch,
    hook_name,
    position_mask,
    read_activations,
    run_patched,
)
from ioi.methods.readout import end_logit_diff
from ioi.models.load import LoadedModel
from ioi.task.circuit import GPT2_SMALL_CIRCUIT, Circuit, Head, parse_heads
from ioi.task.data import IOIBatch

MODES = {"output": "z", "pattern": "pattern"}
"""CMAP mode -> the patch site (ioi.methods.patching.SITES) it overwrites."""


@dataclass(frozen=True)
class CMAPResult:
    """Per-prompt CMAP effects of patching receiver ← source.

    delta [layer, head, batch]: F_patched − F_receiver per prompt; f_receiver, f_source [batch].
    """

    delta: torch.Tensor
    f_receiver: torch.Tensor
    f_source: torch.Tensor

    @property
    def gap(self) -> float:
        """F(source) − F(receiver): what a patch would need to move to make receiver act as source."""
        return (self.f_source - self.f_receiver).mean().item()


def cmap(
    receiver: LoadedModel,
    source: LoadedModel,
    batch: IOIBatch,
    *,
    mode: str = "output",
    positions: str | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> CMAPResult:
    """CMAP of every head: run `receiver` with one head's hook_z (mode "output") or hook_pattern
    (mode "pattern") from `source`'s run on the same prompts.

    positions: "end" (END only; for patterns END's query row) or "all"; default "end" for output
    patching and "all" (the whole pattern) for pattern patching.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    positions = positions or ("end" if mode == "output" else "all")
    if positions not in ("end", "all"):
        raise ValueError(f"positions must be 'end' or 'all', got {positions!r}")
    shape = lambda m: (m.n_layers, m.n_heads, m.bridge.cfg.d_head)  # noqa: E731
    if shape(receiver) != shape(source):
        raise ValueError("CMAP needs two models of one architecture (same layers, heads, head size)")
    n_layers, site = receiver.n_layers, MODES[mode]
    final = f"blocks.{n_layers - 1}.hook_resid_post"
    names = [hook_name(layer, site) for layer in range(n_layers)]
    src = read_activations(source, batch, [*names, final])
    pre = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    own = read_activations(receiver, batch, [*pre, final])
    resid_pre = torch.stack([own[n] for n in [*pre, final]])
    where = position_mask(batch, "end") if positions == "end" else None
    head_axis = 1 if site == "pattern" else 2  # pattern [batch, head, q, k]; z [batch, pos, head, d]
    variants = [
        [Patch(layer, h, src[names[layer]].select(head_axis, h), where, site)]
        for layer in range(n_layers)
        for h in range(receiver.n_heads)
    ]
    patched = run_patched(receiver, batch, variants, resid_pre=resid_pre, max_rows=max_rows)
    f_receiver = end_logit_diff(receiver.bridge, own[final], batch)
    f_source = end_logit_diff(source.bridge, src[final], batch)
    delta = (patched - f_receiver).view(n_layers, receiver.n_heads, len(batch))
    return CMAPResult(delta, f_receiver, f_source)


def bootstrap_means(values: torch.Tensor, *, n_boot: int = 1000, seed: int = 0) -> torch.Tensor:
    """[n_boot, ...] means over the last (prompt) axis of `values` [..., batch], prompts resampled
    with replacement (the same resample for every leading entry)."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(values.shape[-1], (n_boot, values.shape[-1]), generator=gen)
    return values.cpu().double()[..., idx].mean(-1).movedim(-1, 0)


def interval(samples: torch.Tensor, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile interval over axis 0 of bootstrap samples."""
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=samples.dtype)
    low, high = torch.quantile(samples, q, dim=0)
    return low, high


@dataclass(frozen=True)
class CMAPSummary:
    """Means over prompts with bootstrap intervals; `share` = value / gap, bootstrapped as a ratio."""

    value: torch.Tensor
    share: torch.Tensor
    ci_low: torch.Tensor
    ci_high: torch.Tensor
    share_ci_low: torch.Tensor
    share_ci_high: torch.Tensor


def summarize(
    per_prompt: torch.Tensor, gap: torch.Tensor, *, n_boot: int = 1000, seed: int = 0
) -> CMAPSummary:
    """Summary of per-prompt effects [..., batch] against the per-prompt gap [batch]."""
    boot = bootstrap_means(per_prompt, n_boot=n_boot, seed=seed)
    boot_gap = bootstrap_means(gap, n_boot=n_boot, seed=seed)  # same seed -> same resamples
    boot_gap = boot_gap.view(-1, *[1] * (boot.dim() - 1))
    value = per_prompt.cpu().double().mean(-1)
    low, high = interval(boot)
    share_low, share_high = interval(boot / boot_gap)
    return CMAPSummary(value, value / gap.double().mean().item(), low, high, share_low, share_high)


def class_effects(result: CMAPResult, circuit: Circuit) -> tuple[list[str], torch.Tensor]:
    """Class names and [class, batch] sums of the class's single-head effects (not a joint patch)."""
    parse_heads(circuit.heads, *result.delta.shape[:2])  # ValueError naming heads the model lacks
    names, rows = [], []
    for name, heads in circuit.classes.items():
        names.append(name)
        rows.append(sum((result.delta[h.layer, h.head] for h in heads), torch.zeros_like(result.f_receiver)))
    return names, torch.stack(rows) if rows else torch.zeros(0, result.delta.shape[-1])


DIRECTIONS = ("a<-b", "b<-a", "both")


def _circuit_for(model: LoadedModel, circuit: Circuit | dict | None) -> Circuit | None:
    """The circuit whose classes get sums: the given one, else the GPT-2 small one on 12×12 models."""
    if isinstance(circuit, dict):
        return Circuit.from_json(circuit)
    if circuit is None and (model.n_layers, model.n_heads) == (12, 12):
        return GPT2_SMALL_CIRCUIT
    return circuit


def _tables(
    result: CMAPResult, circuit: Circuit | None, n_boot: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    gap = result.f_source - result.f_receiver
    s = summarize(result.delta, gap, n_boot=n_boot, seed=seed)
    heads = heads_frame(
        s.value,
        share_of_gap=s.share,
        ci_low=s.ci_low,
        ci_high=s.ci_high,
        share_ci_low=s.share_ci_low,
        share_ci_high=s.share_ci_high,
    )
    if circuit is None:
        return heads, None
    heads["class"] = [
        circuit.class_of(Head(layer, h)) for layer, h in zip(heads["layer"], heads["head"], strict=True)
    ]
    names, per_class = class_effects(result, circuit)
    c = summarize(per_class, gap, n_boot=n_boot, seed=seed)
    classes = pd.DataFrame({
        "class": names, "n_heads": [len(circuit.classes[n]) for n in names],
        **{k: getattr(c, k).tolist() for k in ("value", "share", "ci_low", "ci_high")},
    })  # fmt: skip
    return heads, classes.rename(columns={"share": "share_of_gap"})


@register_analysis("cmap")
def cmap_analysis(
    model: LoadedModel,
    clean: IOIBatch,
    abc: IOIBatch,
    *,
    other: LoadedModel | None = None,
    mode: str = "output",
    direction: str = "a<-b",
    positions: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    circuit: Circuit | dict | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> AnalysisResult:
    """A = `model`, B = `other`; direction "a<-b" patches B into A, "b<-a" the reverse, "both"
    gives a<-b as `heads` and b<-a as the table `reverse`."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if other is None:
        raise ValueError("CMAP compares two models: give the second one (--other)")
    circuit = _circuit_for(model, circuit)
    pairs = {"a<-b": (model, other), "b<-a": (other, model)}
    wanted = ["a<-b", "b<-a"] if direction == "both" else [direction]
    tables: dict[str, pd.DataFrame] = {}
    summary: dict[str, object] = {
        "mode": mode,
        "direction": direction,
        "n_boot": n_boot,
        "positions": positions or ("end" if mode == "output" else "all"),
        "circuit": circuit.name if circuit else None,
    }
    heads = None
    for d in wanted:
        receiver, source = pairs[d]
        result = cmap(receiver, source, clean, mode=mode, positions=positions, max_rows=max_rows)
        frame, classes = _tables(result, circuit, n_boot, seed)
        f_a, f_b = (
            (result.f_receiver, result.f_source) if d == "a<-b" else (result.f_source, result.f_receiver)
        )
        summary |= {"f_a": f_a.mean().item(), "f_b": f_b.mean().item()}
        key = "" if heads is None else "reverse_"
        if heads is None:
            heads = frame
        else:
            tables["reverse"] = frame
        summary[f"{key}gap"] = result.gap
        if classes is not None:
            tables[f"{key}classes"] = classes
    return AnalysisResult("cmap", heads, summary, tables)
