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

import pandas as pd
import torch
from torch import Tensor

from ioi.methods.analyses import AnalysisResult, heads_frame, register_analysis
from ioi.methods.classify import CIRCUIT_RULE, circuit_for
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
from ioi.methods.replacement import DEFAULT_ABLATION, AblationType, ablation_values, knockout_patches
from ioi.methods.stats import Estimate, mean_estimate, ratio_estimate
from ioi.models.load import LoadedModel
from ioi.task.circuit import CLASS_POSITIONS, Circuit, Head, check_layers, parse_heads
from ioi.task.data import IOIBatch


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

    def run_per_prompt(self, variants: Sequence[list[Patch]]) -> Tensor:
        """[variants, batch] per-prompt logit differences of each list of patches."""
        return run_patched(
            self.model, self.clean, variants, resid_pre=self.acts.resid_pre, max_rows=self.max_rows
        ).cpu()

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


def circuit_knockout(
    model: LoadedModel,
    clean: IOIBatch,
    abc: IOIBatch,
    circuit: Circuit | dict | None,
    ablation: str,
    seed: int,
) -> tuple[Circuit, Knockout]:
    """The circuit the rule picks (`circuit_for`; `circuit` if given), checked against the model,
    and the knockout engine the circuit tests run it with."""
    used = circuit_for(model, clean, abc, circuit)
    check_circuit(model, used)
    return used, Knockout(model, clean, abc, ablation, seed=seed)


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


KNOCKOUT_COLUMNS = (
    "class", "f_knockout", "f_knockout_lo", "f_knockout_hi", "change", "change_lo", "change_hi", "relative",
)  # fmt: skip


def class_knockouts(
    ko: Knockout, circuit: Circuit, position: str | None = None, *, seed: int = 0
) -> pd.DataFrame:
    """One row per class: F with that class's heads ablated (at `position`, default everywhere)
    and its change from F(M), each with a 95% bootstrap interval over prompts (the change paired:
    each prompt against its own unablated logit difference); `relative` is change / F(M)."""
    classes = [c for c, hs in circuit.classes.items() if hs]
    if not classes:
        return pd.DataFrame(columns=list(KNOCKOUT_COLUMNS))
    per_prompt = ko.run_per_prompt([ko.without(circuit.classes[c], position) for c in classes]).double()
    clean = ko.acts.ld_clean.double().cpu()
    rows = []
    for c, f in zip(classes, per_prompt, strict=True):
        level, change = mean_estimate(f, seed=seed), mean_estimate(f - clean, seed=seed)
        values = (c, level.value, level.lo, level.hi, change.value, change.lo, change.hi,
                  change.value / ko.acts.f_clean)  # fmt: skip
        rows.append(dict(zip(KNOCKOUT_COLUMNS, values, strict=True)))
    return pd.DataFrame(rows, columns=list(KNOCKOUT_COLUMNS))


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
    per_head: bool = True,
) -> AnalysisResult:
    """Heads rows: F change when that head alone is ablated (at `position`, default everywhere;
    NaN with `per_head` False, which skips those runs). Table `classes`: each class of the circuit
    ablated, with intervals (`class_knockouts`). Options heads ("L.H …") and mlps (layers): that set
    ablated together (summary f_knockout)."""
    chosen = parse_heads(heads or (), model.n_layers, model.n_heads)  # refused before any run
    mlps = check_layers(mlps, model.n_layers)
    ko = Knockout(model, clean, abc, ablation, seed=seed)
    f_m = ko.acts.f_clean
    if per_head:
        single = ko.run([ko.without([h], position) for h in ko.heads]) - f_m
        grid = single.reshape(model.n_layers, model.n_heads).cpu()
    else:
        grid = torch.full((model.n_layers, model.n_heads), float("nan"))
    intact = mean_estimate(ko.acts.ld_clean.double().cpu(), seed=seed)
    summary = {"f_model": f_m, "f_model_lo": intact.lo, "f_model_hi": intact.hi,
               "ablation": ko.ablation.value, "position": position or "all"}  # fmt: skip
    if chosen or mlps:
        summary["knocked_out"] = [str(h) for h in chosen] + [f"MLP {layer}" for layer in mlps]
        per_prompt = ko.run_per_prompt([ko.without(chosen, position, mlps)])[0].double()
        together = mean_estimate(per_prompt, seed=seed)
        summary |= {"f_knockout": together.value, "f_knockout_lo": together.lo, "f_knockout_hi": together.hi}
    used = circuit_for(model, clean, abc, circuit)
    summary["circuit"] = used.to_json()
    tables = {"classes": class_knockouts(ko, used, position, seed=seed)}
    return AnalysisResult("knockout", heads_frame(grid), summary, tables)


MINIMALITY_BAR = 0.01
"""METHODS §5: each circuit head changes F(C\\K) by at least 1% of F(M) for some K."""
K_SEARCHED = "K ∈ {∅, each class, the whole circuit}"


def mlp_knockouts(ko: Knockout) -> dict[str, list[Patch]]:
    """Variants for the MLP test (METHODS §9: MLPs contribute little, the layer-0 MLP acts as an
    extended embedding): each MLP ablated alone at every position, and every MLP after layer 0."""
    n = ko.model.n_layers
    variants = {f"MLP {layer}": ko.without((), None, [layer]) for layer in range(n)}
    return variants | ({"MLPs 1+": ko.without((), None, range(1, n))} if n > 1 else {})


@register_analysis("faithfulness")
def faithfulness_analysis(
    model: LoadedModel,
    clean: IOIBatch,
    abc: IOIBatch,
    *,
    other=None,
    ablation: str = DEFAULT_ABLATION.value,
    circuit: Circuit | dict | None = None,
    seed: int = 0,
) -> AnalysisResult:
    """Summary: faithfulness (NaN with `ratio_undefined` when |F(M)| is below MIN_DENOMINATOR or
    the circuit rule found no circuit because the model does not do the task),
    its paired-bootstrap interval over prompts, f_model, f_circuit, abs_diff, ablation, circuit,
    the rule that chose it. Heads rows: the circuit's heads with their class. Table `mlps`: F's
    change with each MLP (and every MLP after layer 0) ablated, with intervals; table `prompts`:
    per-prompt F(M), F(C) and F with each MLP variant ablated. Completeness and minimality are
    the analysis circuit-tests."""
    used, ko = circuit_knockout(model, clean, abc, circuit, ablation, seed)
    f_m = ko.acts.ld_clean.double()
    reason = used.meta.get("reason", "")
    f_c = ko.run_per_prompt([ablate(ko.values, ko.circuit_kept(used), clean, ko.heads)])[0].double()
    ratio = ratio_estimate(f_c, f_m, seed=seed)
    if reason:  # no circuit on a model that does not do the task: F(C) is everything ablated
        ratio = Estimate.undefined(reason, ratio.over)
    summary = Faithfulness(
        f_c.mean().item(), f_m.mean().item(), ratio.value, abs(f_m.mean().item() - f_c.mean().item()),
        ko.ablation.value,
    ).to_json() | {  # fmt: skip
        "faithfulness_lo": ratio.lo,
        "faithfulness_hi": ratio.hi,
        "interval_over": ratio.over,
        "ratio_undefined": ratio.reason,
        "circuit": used.to_json(),
        "circuit_rule": CIRCUIT_RULE if circuit is None else "given",
        "circuit_reason": reason,
    }
    heads = pd.DataFrame(
        [{"layer": h.layer, "head": h.head, "value": 1.0, "class": c}
         for c, hs in used.classes.items() for h in hs],
        columns=["layer", "head", "value", "class"],
    )  # fmt: skip
    prompts = {"prompt": list(range(len(clean))), "f_model": f_m.tolist(), "f_circuit": f_c.tolist()}
    mlps = mlp_knockouts(ko)
    f_mlp = ko.run_per_prompt(list(mlps.values())).double()
    rows = []
    for name, f in zip(mlps, f_mlp, strict=True):
        prompts[f"f_without_{name.lower().replace(' ', '_').replace('+', 'plus')}"] = f.tolist()
        change, share = mean_estimate(f - f_m, seed=seed), ratio_estimate(f - f_m, f_m, seed=seed)
        rows.append({"ablated": name} | change.columns("change") | share.columns("relative"))
    tables = {"mlps": pd.DataFrame(rows), "prompts": pd.DataFrame(prompts)}
    return AnalysisResult("faithfulness", heads, summary, tables)


@register_analysis("circuit-tests")
def circuit_tests_analysis(
    model: LoadedModel,
    clean: IOIBatch,
    abc: IOIBatch,
    *,
    other=None,
    ablation: str = DEFAULT_ABLATION.value,
    circuit: Circuit | dict | None = None,
    seed: int = 0,
) -> AnalysisResult:
    """Heads rows: minimality of each circuit head (value = max over K of |F(C\\(K∪{v})) − F(C\\K)|
    / |F(M)|, with the K). Table completeness: F(C\\K), F(M\\K) per K. Summary: the K searched, the
    minimality bar, how many heads pass it, the largest completeness gap."""
    used, ko = circuit_knockout(model, clean, abc, circuit, ablation, seed)
    summary = {"circuit": used.to_json(), "ablation": ko.ablation.value, "minimality_k": K_SEARCHED,
               "minimality_bar": MINIMALITY_BAR, "f_model": ko.acts.f_clean,
               "circuit_reason": used.meta.get("reason", "")}  # fmt: skip
    if not used.heads:
        empty = pd.DataFrame(columns=["layer", "head", "class", "value", "abs_change", "subset"])
        return AnalysisResult("circuit-tests", empty, summary)
    mini, comp = minimality(ko, used), completeness(ko, used)
    summary |= {"minimal_heads": int((mini["value"] >= MINIMALITY_BAR).sum()), "n_heads": len(mini),
                "max_completeness_gap": float(comp["abs_diff"].max())}  # fmt: skip
    return AnalysisResult("circuit-tests", mini, summary, {"completeness": comp})
