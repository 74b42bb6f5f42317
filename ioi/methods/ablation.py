"""Knockout (ablation) of heads, and the circuit tests built on it: faithfulness, completeness,
minimality (IOI paper; METHODS §5).

Knocking out a head replaces its output (hook_z) by a value that carries no task information: by
default its mean over the ABC prompts of the same template. To evaluate a circuit C, every head
outside C is ablated at every position and each circuit head is kept only at its class's position
(CLASS_POSITIONS); MLPs are never ablated. F(C) is the logit difference of that run, F(M) the
model's own; faithfulness is F(C)/F(M). The choice of ablation changes the numbers (Miller et al.
2024), so every result records it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import Enum

import pandas as pd
import torch
from torch import Tensor

from ioi.methods.analyses import AnalysisResult, heads_frame, register_analysis
from ioi.methods.classify import analysis_circuit
from ioi.methods.patching import (
    DEFAULT_MAX_ROWS,
    Activations,
    Patch,
    all_heads,
    hook_name,
    position_mask,
    prepare,
    read_activations,
    run_patched,
)
from ioi.models.load import LoadedModel
from ioi.task.circuit import CLASS_POSITIONS, Circuit, Head, parse_heads
from ioi.task.data import IOIBatch


class AblationType(Enum):
    """What replaces an ablated activation."""

    MEAN = "mean"
    """Its mean over all ABC prompts at the same token index (padding excluded). Templates differ in
    length and layout, so one index mixes roles across templates."""
    MEAN_BY_TEMPLATE = "mean-by-template"
    """Its mean over the ABC prompts of the same template, position by position (IOI paper)."""
    ZERO = "zero"
    """Zero."""
    RESAMPLE = "resample"
    """Its value on another ABC prompt of the same template, drawn at random (seeded)."""

    @classmethod
    def parse(cls, value: AblationType | str) -> AblationType:
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower().replace("_", "-"))
        except ValueError:
            known = ", ".join(a.value for a in cls)
            raise ValueError(f"unknown ablation {value!r}; known: {known}") from None


DEFAULT_ABLATION = AblationType.MEAN_BY_TEMPLATE


def ablation_values(x_abc: Tensor, abc: IOIBatch, ablation: AblationType, seed: int = 0) -> Tensor:
    """Replacement values with the shape of `x_abc` ([layer, batch, pos, ...], from the ABC run):
    row i holds what prompt i's activation becomes when ablated."""
    if ablation is AblationType.ZERO:
        return torch.zeros_like(x_abc)
    groups = abc.group.to(x_abc.device)
    if ablation is AblationType.MEAN:
        valid = (
            torch.arange(x_abc.shape[2], device=x_abc.device)[None, :] <= abc.end.to(x_abc.device)[:, None]
        )
        valid = valid.reshape(1, *valid.shape, *([1] * (x_abc.dim() - 3))).to(x_abc.dtype)
        mean = (x_abc * valid).sum(1) / valid.sum(1).clamp(min=1)
        return mean[:, None].expand_as(x_abc).clone()
    out = torch.empty_like(x_abc)
    gen = torch.Generator().manual_seed(seed)
    for g in groups.unique():
        rows = (groups == g).nonzero().flatten()
        if ablation is AblationType.MEAN_BY_TEMPLATE:
            out[:, rows] = x_abc[:, rows].mean(1, keepdim=True)
        else:  # RESAMPLE: a derangement within the template where it has two prompts or more
            shift = torch.randint(1, len(rows), (1,), generator=gen).item() if len(rows) > 1 else 0
            perm = torch.randperm(len(rows), generator=gen)
            source = perm.roll(shift)
            out[:, rows[perm]] = x_abc[:, rows[source]]
    return out


@torch.no_grad()
def abc_mlp_outputs(model: LoadedModel, abc: IOIBatch) -> Tensor:
    """[layer, batch, pos, d_model] MLP outputs of the ABC run (for MLP ablation)."""
    names = [hook_name(layer, "mlp_out") for layer in range(model.n_layers)]
    cache = read_activations(model, abc, names)
    return torch.stack([cache[n] for n in names])


def ablate(
    values: Tensor, kept: Mapping[Head, str | None], clean: IOIBatch, all_heads: Iterable[Head]
) -> list[Patch]:
    """Patches ablating every head of `all_heads` except where `kept` keeps it.

    values: [layer, batch, pos, head, d_head] ablation values; kept[h] = a position name (h kept
    only there) or None (kept everywhere).
    """
    patches = []
    for h in all_heads:
        if h in kept and kept[h] is None:
            continue
        where = None if h not in kept else ~position_mask(clean, kept[h])
        patches.append(Patch(h.layer, h.head, values[h.layer, :, :, h.head], where))
    return patches


def knockout_patches(
    values: Tensor, heads: Iterable[Head], clean: IOIBatch, position: str | None = None
) -> list[Patch]:
    """Patches ablating `heads` at `position` (None: every position)."""
    where = position_mask(clean, position)
    return [Patch(h.layer, h.head, values[h.layer, :, :, h.head], where) for h in heads]


@dataclass(frozen=True)
class Faithfulness:
    """F(C), F(M), F(C)/F(M) and |F(M) − F(C)| of a circuit under one ablation."""

    f_circuit: float
    f_model: float
    faithfulness: float
    abs_diff: float
    ablation: str

    def to_json(self) -> dict:
        return asdict(self)


class Knockout:
    """Ablation runs of one model on one dataset, sharing the cached runs and ablation values.

    `f_many([kept, …])` gives F with every head ablated except as each `kept` says (see
    :func:`ablate`); `circuit_kept(circuit, K)` builds `kept` for C \\ K, `model_kept(K)` for M \\ K;
    `run([patches, …])` runs any lists of patches, e.g. from `without(heads, position, mlps)`.
    """

    def __init__(
        self,
        model: LoadedModel,
        clean: IOIBatch,
        abc: IOIBatch,
        ablation: AblationType | str = DEFAULT_ABLATION,
        *,
        seed: int = 0,
        acts: Activations | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
    ) -> None:
        self.model, self.clean, self.abc, self.seed = model, clean, abc, seed
        self.ablation = AblationType.parse(ablation)
        self.acts = acts or prepare(model, clean, abc)
        self.values = ablation_values(self.acts.z_abc, abc, self.ablation, seed)
        self._mlp_values: Tensor | None = None
        self.heads = all_heads(model)
        self.max_rows = max_rows

    def run(self, variants: Sequence[list[Patch]]) -> Tensor:
        """[variants] mean logit difference of each list of patches."""
        return run_patched(
            self.model, self.clean, variants, resid_pre=self.acts.resid_pre, max_rows=self.max_rows
        ).mean(1)

    def f_many(self, kept_sets: Sequence[Mapping[Head, str | None]]) -> list[float]:
        return self.run([ablate(self.values, k, self.clean, self.heads) for k in kept_sets]).tolist()

    def without(
        self, heads: Iterable[Head], position: str | None = None, mlps: Iterable[int] = ()
    ) -> list[Patch]:
        """Patches ablating `heads` (and the MLPs of layers `mlps`) at `position` (None: everywhere)."""
        patches = knockout_patches(self.values, heads, self.clean, position)
        where = position_mask(self.clean, position)
        return patches + [Patch(layer, None, self.mlp_values[layer], where, "mlp_out") for layer in mlps]

    @property
    def mlp_values(self) -> Tensor:
        """[layer, batch, pos, d_model] ablation values of the MLP outputs (computed on first use)."""
        if self._mlp_values is None:
            mlp_abc = abc_mlp_outputs(self.model, self.abc)
            self._mlp_values = ablation_values(mlp_abc, self.abc, self.ablation, self.seed)
        return self._mlp_values

    @staticmethod
    def circuit_kept(circuit: Circuit, without: Iterable[Head] = ()) -> dict[Head, str | None]:
        """Circuit heads (minus `without`) kept at their class's position; a class that
        CLASS_POSITIONS does not name is kept at every position."""
        drop = set(without)
        return {
            h: CLASS_POSITIONS.get(c, None) for c, hs in circuit.classes.items() for h in hs if h not in drop
        }

    def model_kept(self, without: Iterable[Head] = ()) -> dict[Head, str | None]:
        drop = set(without)
        return {h: None for h in self.heads if h not in drop}


def check_circuit(model: LoadedModel, circuit: Circuit) -> None:
    parse_heads(circuit.heads, model.n_layers, model.n_heads)  # ValueError naming heads it lacks


def faithfulness(
    model: LoadedModel,
    clean: IOIBatch,
    abc: IOIBatch,
    circuit: Circuit,
    ablation: AblationType | str = DEFAULT_ABLATION,
    *,
    seed: int = 0,
) -> Faithfulness:
    """F(C)/F(M): every head outside `circuit` ablated everywhere, circuit heads kept only at their
    class's position (CLASS_POSITIONS), MLPs intact."""
    check_circuit(model, circuit)
    ko = Knockout(model, clean, abc, ablation, seed=seed)
    f_c = ko.f_many([ko.circuit_kept(circuit)])[0]
    f_m = ko.acts.f_clean
    return Faithfulness(f_c, f_m, f_c / f_m, abs(f_m - f_c), ko.ablation.value)


def class_knockouts(ko: Knockout, circuit: Circuit, position: str | None = None) -> pd.DataFrame:
    """One row per class: F with that class's heads ablated (at `position`, default everywhere)."""
    classes = [c for c, hs in circuit.classes.items() if hs]
    f = ko.run([ko.without(circuit.classes[c], position) for c in classes]).tolist()
    f_m = ko.acts.f_clean
    return pd.DataFrame(
        {
            "class": classes,
            "f_knockout": f,
            "change": [x - f_m for x in f],
            "relative": [(x - f_m) / f_m for x in f],
        }
    )


def class_subsets(circuit: Circuit) -> dict[str, tuple[Head, ...]]:
    """The subsets K of METHODS §5 this project uses: ∅, each class, the whole circuit."""
    subsets = {"(none)": ()} | {c: hs for c, hs in circuit.classes.items() if hs}
    return subsets | {"(all)": circuit.heads}


def completeness(ko: Knockout, circuit: Circuit) -> pd.DataFrame:
    """Per subset K: F(C\\K), F(M\\K) and |F(C\\K) − F(M\\K)| (small for a complete circuit)."""
    subsets = class_subsets(circuit)
    f = ko.f_many(
        [ko.circuit_kept(circuit, k) for k in subsets.values()] + [ko.model_kept(k) for k in subsets.values()]
    )
    n = len(subsets)
    return pd.DataFrame(
        {
            "subset": list(subsets),
            "f_circuit_minus_k": f[:n],
            "f_model_minus_k": f[n:],
            "abs_diff": [abs(a - b) for a, b in zip(f[:n], f[n:], strict=True)],
        }
    )


def minimality(ko: Knockout, circuit: Circuit) -> pd.DataFrame:
    """Per circuit head v: max over subsets K of |F(C\\(K∪{v})) − F(C\\K)|, absolute and relative to
    F(M) (METHODS §5 asks for ≥ 1%), with the K that attains it."""
    subsets = class_subsets(circuit)
    base = dict(zip(subsets, ko.f_many([ko.circuit_kept(circuit, k) for k in subsets.values()]), strict=True))
    pairs = [(v, name) for v in circuit.heads for name, k in subsets.items() if v not in k]
    f = ko.f_many([ko.circuit_kept(circuit, (*subsets[name], v)) for v, name in pairs])
    rows: dict[Head, tuple[float, str]] = {}
    for (v, name), x in zip(pairs, f, strict=True):
        score = abs(x - base[name])
        if v not in rows or score > rows[v][0]:
            rows[v] = (score, name)
    f_m = ko.acts.f_clean
    return pd.DataFrame(
        [
            {
                "layer": v.layer,
                "head": v.head,
                "class": circuit.class_of(v),
                "value": s / abs(f_m),
                "abs_change": s,
                "subset": k,
            }
            for v, (s, k) in rows.items()
        ]
    )


@register_analysis("knockout")
def knockout_analysis(
    model: LoadedModel,
    clean: IOIBatch,
    abc: IOIBatch,
    *,
    other=None,
    ablation: str = DEFAULT_ABLATION.value,
    position: str | None = None,
    heads: Sequence[str] | str | None = None,
    mlps: Sequence[int] = (),
    circuit: Circuit | dict | None = None,
    seed: int = 0,
) -> AnalysisResult:
    """Heads rows: F change when that head alone is ablated (at `position`, default everywhere).
    Table `classes`: each class of the circuit ablated. Options heads ("L.H …") and mlps (layers):
    that set ablated together (summary f_knockout)."""
    ko = Knockout(model, clean, abc, ablation, seed=seed)
    f_m = ko.acts.f_clean
    single = ko.run([ko.without([h], position) for h in ko.heads]) - f_m
    grid = single.reshape(model.n_layers, model.n_heads).cpu()
    summary = {"f_model": f_m, "ablation": ko.ablation.value, "position": position or "all"}
    if heads or mlps:
        chosen = parse_heads(heads or (), model.n_layers, model.n_heads)
        summary["knocked_out"] = [str(h) for h in chosen] + [f"MLP {layer}" for layer in mlps]
        summary["f_knockout"] = ko.run([ko.without(chosen, position, mlps)]).item()
    used = analysis_circuit(model, clean, abc, circuit)
    summary["circuit"] = used.to_json()
    tables = {"classes": class_knockouts(ko, used, position)}
    return AnalysisResult("knockout", heads_frame(grid), summary, tables)


@register_analysis("faithfulness")
def faithfulness_analysis(
    model: LoadedModel,
    clean: IOIBatch,
    abc: IOIBatch,
    *,
    other=None,
    ablation: str = DEFAULT_ABLATION.value,
    circuit: Circuit | dict | None = None,
    tests: bool = False,
    seed: int = 0,
) -> AnalysisResult:
    """Summary: faithfulness, f_model, f_circuit, abs_diff, ablation, circuit. Heads rows: the
    circuit's heads with their class. Option tests=True adds tables completeness and minimality."""
    used = analysis_circuit(model, clean, abc, circuit)
    check_circuit(model, used)
    ko = Knockout(model, clean, abc, ablation, seed=seed)
    f_c = ko.f_many([ko.circuit_kept(used)])[0]
    f_m = ko.acts.f_clean
    result = Faithfulness(f_c, f_m, f_c / f_m, abs(f_m - f_c), ko.ablation.value)
    heads = pd.DataFrame(
        [
            {"layer": h.layer, "head": h.head, "value": 1.0, "class": c}
            for c, hs in used.classes.items()
            for h in hs
        ],
        columns=["layer", "head", "value", "class"],
    )
    tables = {"completeness": completeness(ko, used), "minimality": minimality(ko, used)} if tests else {}
    return AnalysisResult("faithfulness", heads, result.to_json() | {"circuit": used.to_json()}, tables)
