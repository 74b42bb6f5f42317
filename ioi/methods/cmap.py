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

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pandas as pd
import torch

from ioi.methods.analyses import AnalysisResult, heads_frame, register_analysis
from ioi.methods.classify import CIRCUIT_RULE, circuit_for
from ioi.methods.patching import (
    DEFAULT_MAX_ROWS,
    Activations,
    Patch,
    hook_name,
    position_mask,
    read_activations,
    run_patched,
)
from ioi.methods.readout import end_logit_diff
from ioi.methods.stats import bootstrap_means, interval, ratio_defined, ratio_intervals
from ioi.models.load import LoadedModel
from ioi.task.circuit import Circuit, Head, parse_heads
from ioi.task.data import IOIBatch

MODES = {"output": "z", "pattern": "pattern"}
"""CMAP mode -> the patch site (ioi.methods.patching.SITES) it overwrites."""


@dataclass(frozen=True)
class CMAPResult:
    """Per-prompt CMAP effects of patching receiver ← source.

    delta [layer, head, batch]: F_patched − F_receiver per prompt, one head patched; joint
    [group, batch] the same with each group of heads patched together; f_receiver, f_source [batch].
    """

    delta: torch.Tensor
    f_receiver: torch.Tensor
    f_source: torch.Tensor
    joint: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    @property
    def gap(self) -> float:
        """F(source) − F(receiver): what a patch would need to move to make receiver act as source."""
        return (self.f_source - self.f_receiver).mean().item()


def check_pair(a: LoadedModel, b: LoadedModel) -> None:
    """ValueError unless `a` and `b` can be patched into each other: one architecture (model type,
    layers, heads, head size) and one tokenizer (the prompts are tokenized once, for both)."""
    shape = lambda m: (m.hf_model.config.model_type, m.n_layers, m.n_heads, m.bridge.cfg.d_head)  # noqa: E731
    if shape(a) != shape(b):
        raise ValueError(
            "CMAP needs two models of one architecture (same model type, layers, heads, head size); "
            f"got {shape(a)} and {shape(b)}"
        )
    if a.tokenizer.get_vocab() != b.tokenizer.get_vocab():
        raise ValueError(f"CMAP needs two models with one tokenizer; {a.name} and {b.name} differ")


def _source_values(
    receiver: LoadedModel,
    source: LoadedModel,
    batch: IOIBatch,
    mode: str,
    positions: str | None,
    reads: tuple[Activations, Activations] | None = None,
):
    """(site, where, per-layer source activations, receiver's residuals, own final, source final);
    `reads`: the receiver's and the source's clean runs of `batch` (output mode), instead of reading."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    positions = positions or ("end" if mode == "output" else "all")
    if positions not in ("end", "all"):
        raise ValueError(f"positions must be 'end' or 'all', got {positions!r}")
    check_pair(receiver, source)
    n_layers, site = receiver.n_layers, MODES[mode]
    where = position_mask(batch, "end") if positions == "end" else None
    if reads is not None and site == "z":
        own, src = reads
        return site, where, list(src.z_clean), own.resid_pre, own.resid_pre[-1], src.resid_pre[-1]
    final = f"blocks.{n_layers - 1}.hook_resid_post"
    names = [hook_name(layer, site) for layer in range(n_layers)]
    src = read_activations(source, batch, [*names, final])
    pre = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    own = read_activations(receiver, batch, [*pre, final])
    resid_pre = torch.stack([own[n] for n in [*pre, final]])
    return site, where, [src[n] for n in names], resid_pre, own[final], src[final]


def cmap(
    receiver: LoadedModel,
    source: LoadedModel,
    batch: IOIBatch,
    *,
    mode: str = "output",
    positions: str | None = None,
    groups: Sequence[Sequence[Head]] | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    reads: tuple[Activations, Activations] | None = None,
) -> CMAPResult:
    """CMAP of every head: run `receiver` with one head's hook_z (mode "output") or hook_pattern
    (mode "pattern") from `source`'s run on the same prompts. With `groups`, each group is patched
    jointly (all its heads in one run) into `CMAPResult.joint` instead, and `delta` is left empty.

    positions: "end" (END only; for patterns END's query row) or "all"; default "end" for output
    patching and "all" (the whole pattern) for pattern patching. reads: the receiver's and the
    source's :func:`ioi.methods.patching.prepare` runs of `batch` (output mode; not read again).
    """
    got = _source_values(receiver, source, batch, mode, positions, reads)
    site, where, src, resid_pre, own_final, src_final = got
    head_axis = 1 if site == "pattern" else 2  # pattern [batch, head, q, k]; z [batch, pos, head, d]
    patch = lambda h: Patch(h.layer, h.head, src[h.layer].select(head_axis, h.head), where, site)  # noqa: E731
    n_layers, n_heads = receiver.n_layers, receiver.n_heads
    every = [Head(layer, h) for layer in range(n_layers) for h in range(n_heads)]
    variants = [[patch(h)] for h in every] if groups is None else [[patch(h) for h in g] for g in groups]
    patched = run_patched(receiver, batch, variants, resid_pre=resid_pre, max_rows=max_rows)
    f_receiver = end_logit_diff(receiver.bridge, own_final, batch)
    f_source = end_logit_diff(source.bridge, src_final, batch)
    delta = patched - f_receiver
    if groups is not None:
        return CMAPResult(torch.zeros(n_layers, n_heads, 0), f_receiver, f_source, delta)
    return CMAPResult(delta.view(n_layers, n_heads, len(batch)), f_receiver, f_source)


@dataclass(frozen=True)
class CMAPSummary:
    """Means over prompts with bootstrap intervals; `share` = value / gap, bootstrapped as a ratio
    with the same resamples (NaN where the gap is too small for a share: see `share_undefined`)."""

    value: torch.Tensor
    share: torch.Tensor
    ci_low: torch.Tensor
    ci_high: torch.Tensor
    share_ci_low: torch.Tensor
    share_ci_high: torch.Tensor
    share_undefined: str = ""


def summarize(
    per_prompt: torch.Tensor, gap: torch.Tensor, *, n_boot: int = 1000, seed: int = 0
) -> CMAPSummary:
    """Summary of per-prompt effects [..., batch] against the per-prompt gap [batch]."""
    boot = bootstrap_means(per_prompt, n_boot=n_boot, seed=seed)
    value = per_prompt.cpu().double().mean(-1)
    low, high = interval(boot)
    reason = ratio_defined(gap, seed=seed, meaning="the two models barely differ in F")
    if reason:
        nan = torch.full_like(value, float("nan"))
        return CMAPSummary(value, nan, low, high, nan, nan, reason)
    share, share_low, share_high = ratio_intervals(per_prompt, gap, n_boot=n_boot, seed=seed)
    return CMAPSummary(value, share, low, high, share_low, share_high)


OUTSIDE_SHOWN = 0.05
"""Heads outside the circuit whose single-head CMAP effect is ≥ this share of |gap| get their own
row in the class table, so cancellation inside "outside the circuit" stays visible."""


def class_groups(result: CMAPResult, circuit: Circuit) -> dict[str, tuple[str, tuple[Head, ...]]]:
    """Group name -> (kind, heads) of the class table: each non-empty class, the whole circuit, the
    heads outside it (together, and the large ones alone) and every head."""
    n_layers, n_heads = result.delta.shape[:2]
    parse_heads(circuit.heads, n_layers, n_heads)  # ValueError naming heads the model lacks
    every = tuple(Head(layer, h) for layer in range(n_layers) for h in range(n_heads))
    groups = {name: ("class", hs) for name, hs in circuit.classes.items() if hs}
    outside = tuple(h for h in every if h not in circuit.heads)
    groups["circuit (all classes)"] = ("circuit", circuit.heads)
    groups["outside the circuit"] = ("outside", outside)
    gap = abs(result.gap) or 1.0
    single = result.delta.mean(-1)
    big = [h for h in outside if abs(single[h.layer, h.head].item()) >= OUTSIDE_SHOWN * gap]
    for h in sorted(big, key=lambda h: -abs(single[h].item())):
        groups[f"outside: {h}"] = ("outside head", (h,))
    return groups | {"all heads": ("all", every)}


DIRECTIONS = ("a<-b", "b<-a", "both")


def cmap_circuit(
    model: LoadedModel, base: LoadedModel, clean: IOIBatch, abc: IOIBatch, circuit: Circuit | dict | None
) -> tuple[Circuit, str]:
    """(circuit whose classes are patched jointly, where it came from): the given one, else
    :func:`circuit_for` on the base model, else — when the base does not do the task — on `model`."""
    if circuit is not None:
        return circuit_for(base, clean, abc, circuit), "given"
    found = circuit_for(base, clean, abc)
    if found.heads or not found.meta.get("reason"):
        return found, "base model"
    return circuit_for(model, clean, abc), "fine-tuned model (the base model does not do the task)"


STAT_COLUMNS = ("value", "share", "ci_low", "ci_high", "share_ci_low", "share_ci_high")


def _tables(result: CMAPResult, circuit: Circuit, groups, n_boot: int, seed: int):
    gap = result.f_source - result.f_receiver
    s = summarize(result.delta, gap, n_boot=n_boot, seed=seed)
    heads = heads_frame(s.value, share_of_gap=s.share, ci_low=s.ci_low, ci_high=s.ci_high,
                        share_ci_low=s.share_ci_low, share_ci_high=s.share_ci_high)  # fmt: skip
    pairs = zip(heads["layer"], heads["head"], strict=True)
    heads["class"] = [circuit.class_of(Head(la, h)) for la, h in pairs]
    c = summarize(result.joint, gap, n_boot=n_boot, seed=seed)
    single = result.delta.double().mean(-1)
    classes = pd.DataFrame({
        "class": list(groups), "kind": [k for k, _ in groups.values()],
        "heads": [" ".join(map(str, hs)) for _, hs in groups.values()],
        "n_heads": [len(hs) for _, hs in groups.values()],
        **{k: getattr(c, k).tolist() for k in STAT_COLUMNS},
        "sum_of_single": [sum(single[h.layer, h.head].item() for h in hs) for _, hs in groups.values()],
    })  # fmt: skip
    return heads, classes.rename(columns={"share": "share_of_gap"}), s.share_undefined


def _prompt_rows(direction: str, result: CMAPResult, groups) -> tuple[pd.DataFrame, pd.DataFrame]:
    n_layers, n_heads, n = result.delta.shape
    units = [f"{la}.{h}" for la in range(n_layers) for h in range(n_heads)] + list(groups)
    values = torch.cat([result.delta.reshape(-1, n), result.joint.reshape(-1, n)]).double()
    effects = pd.DataFrame({
        "direction": direction, "unit": [u for u in units for _ in range(n)],
        "prompt": list(range(n)) * len(units), "delta": values.flatten().tolist(),
    })  # fmt: skip
    f = pd.DataFrame({"direction": direction, "prompt": range(n), "f_receiver": result.f_receiver.tolist(),
                      "f_source": result.f_source.tolist()})  # fmt: skip
    return effects, f


@register_analysis("cmap")
def cmap_analysis(
    model: LoadedModel,
    clean: IOIBatch,
    abc: IOIBatch,
    *,
    other: LoadedModel | None = None,
    mode: str = "output",
    direction: str = "both",
    positions: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    circuit: Circuit | dict | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> AnalysisResult:
    """A = `model` (e.g. fine-tuned), B = `other`, the base (an experiment's starting model).
    "b<-a" runs the base with A's heads (Prakash et al., METHODS §8: which heads, given the
    fine-tuned values, make the base act fine-tuned); "a<-b" the reverse; "both" (default) gives
    b<-a as `heads`/`classes` and a<-b as `reverse`/`reverse_classes`. Class rows patch a class's
    heads jointly; tables `prompts` (per-prompt effects of every head and group) and `prompt_f`
    keep what a paired bootstrap needs. Each model keeps its own value bias (a convention)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if other is None:
        raise ValueError("CMAP compares two models: give the second one (--other)")
    check_pair(model, other)  # before classifying `other` on prompts tokenized for `model`
    used, origin = cmap_circuit(model, other, clean, abc, circuit)
    pairs = {"a<-b": (model, other), "b<-a": (other, model)}
    wanted = ["b<-a", "a<-b"] if direction == "both" else [direction]
    summary: dict[str, object] = {
        "mode": mode, "direction": wanted[0], "n_boot": n_boot,
        "positions": positions or ("end" if mode == "output" else "all"),
        "circuit": used.to_json(), "circuit_from": origin, "circuit_rule": CIRCUIT_RULE,
        "bias_convention": "each model keeps its own value bias when head outputs move",
    }  # fmt: skip
    tables: dict[str, pd.DataFrame] = {}
    effects, fs = [], []
    for i, d in enumerate(wanted):
        receiver, source = pairs[d]
        single = cmap(receiver, source, clean, mode=mode, positions=positions, max_rows=max_rows)
        groups = class_groups(single, used)
        joint = cmap(receiver, source, clean, mode=mode, positions=positions, max_rows=max_rows,
                     groups=[hs for _, hs in groups.values()])  # fmt: skip
        result = replace(single, joint=joint.joint)
        frame, classes, undefined = _tables(result, used, groups, n_boot, seed)
        key = "" if i == 0 else "reverse_"
        tables[f"{key}classes"] = classes
        if i == 0:
            heads = frame
        else:
            tables["reverse"] = frame
            summary["reverse_direction"] = d
        f_a, f_b = (result.f_receiver, result.f_source)[:: 1 if d == "a<-b" else -1]
        summary |= {"f_a": f_a.mean().item(), "f_b": f_b.mean().item(), f"{key}gap": result.gap,
                    f"{key}share_undefined": undefined}  # fmt: skip
        e, f = _prompt_rows(d, result, groups)
        effects.append(e)
        fs.append(f)
    tables |= {"prompts": pd.concat(effects, ignore_index=True), "prompt_f": pd.concat(fs, ignore_index=True)}
    return AnalysisResult("cmap", heads, summary, tables)
