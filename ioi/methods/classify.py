"""Finding the IOI circuit of any model: path patching along the IOI paper's chain, plus attention.

The circuit an analysis evaluates is chosen here too (:func:`analysis_circuit`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from ioi.methods.analyses import AnalysisResult, heads_frame, register_analysis
from ioi.methods.hooks import read_activations
from ioi.task.circuit import GPT2_SMALL_CIRCUIT, Circuit, Head

# --- Finding the circuit of any model -------------------------------------------------------------
# Path patching (ioi.methods.path_patching) traces the IOI paper's chain from the logits backwards; attention
# patterns split heads that the path effects alone cannot tell apart. Thresholds are on normalised
# path-patching effects, (F_patched − F_clean)/(F_clean − F_abc), so they mean the same on any model.

ATTENTION_PATTERNS: dict[str, tuple[str, str]] = {
    "end_to_io": ("end", "io"),
    "end_to_s2": ("end", "s2"),  # S2 alone; END→S (end_to_s) is S1+S2 in ioi.methods.attention
    "s2_to_s1": ("s2", "s1"),
    "s2_to_s1p1": ("s2", "s1+1"),
    "s1p1_to_s1": ("s1+1", "s1"),
}
"""column -> (query position, key position) of the attention probabilities classification reads."""


@dataclass(frozen=True)
class ClassifyThresholds:
    """Every cut-off of :func:`classify_heads` (normalised effects are fractions of F_clean − F_abc).

    name_mover: a name mover's path effect to the logits is ≤ −name_mover (and it attends END→IO
    more than END→S); a negative name mover's is ≥ +name_mover. s_inhibition, induction,
    previous_token: |path effect| via the downstream class's queries / values / keys at least this.
    backup_min_attention: a backup name mover (not already a name mover) attends END→IO at least
    this, more than END→S, and has a positive direct effect (DLA if given, else −path effect).
    previous_token_min_attention: a previous-token head attends S1+1→S1 at least this.
    """

    name_mover: float = 0.05
    s_inhibition: float = 0.05
    induction: float = 0.05
    previous_token: float = 0.05
    backup_min_attention: float = 0.2
    previous_token_min_attention: float = 0.2


def attention_at(model, batch) -> dict[str, Tensor]:
    """Mean attention probability for each ATTENTION_PATTERNS column: [layer, head] each."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.n_layers)]
    cache = read_activations(model, batch, names)
    rows = torch.arange(len(batch))
    out = {}
    for column, (query, key) in ATTENTION_PATTERNS.items():
        q, k = batch.positions(query), batch.positions(key)
        out[column] = torch.stack([cache[n][rows, :, q, k].mean(0) for n in names]).cpu()
    return out


def heads_where(mask: Tensor, order: Tensor, exclude: tuple[Head, ...] = ()) -> tuple[Head, ...]:
    """Heads where `mask` ([layer, head] bool) holds, strongest |order| first, minus `exclude`."""
    picked = [Head(int(layer), int(head)) for layer, head in mask.nonzero().tolist()]
    picked = [h for h in picked if h not in exclude]
    return tuple(sorted(picked, key=lambda h: -abs(order[h.layer, h.head].item())))


def classify_heads(
    model,
    clean,
    abc,
    thresholds: ClassifyThresholds = ClassifyThresholds(),
    *,
    dla: Tensor | None = None,
    freeze_mlp: bool = False,
) -> Circuit:
    """The IOI head classes of `model`, found by path patching along the IOI paper's chain.

    1. path effect to the logits: name movers (≤ −t) and negative name movers (≥ +t), both
       attending END→IO > END→S (a negative name mover copies IO with the opposite sign); backup
       name movers: the other heads attending END→IO (≥ backup_min_attention, > END→S) with a
       positive direct effect (`dla` [layer, head] if given, else −path effect);
    2. via the name movers' queries at END: S-inhibition heads (|effect| ≥ t);
    3. via the S-inhibition heads' values at S2: induction heads if they attend S2→S1+1 more than
       S2→S1, duplicate-token heads otherwise;
    4. via the induction heads' keys at S1+1: previous-token heads (attending S1+1→S1 ≥ a minimum).
    A head keeps its first (most downstream) class. `Circuit.meta` holds every score grid.
    """
    from ioi.methods.patching import prepare
    from ioi.methods.path_patching import LOGITS, Receivers, path_patch

    t = thresholds
    acts = prepare(model, clean, abc)
    attn = attention_at(model, clean)
    scores: dict[str, Tensor] = {f"attn_{k}": v for k, v in attn.items()}
    pp = lambda receivers: path_patch(model, clean, abc, receivers, freeze_mlp=freeze_mlp, acts=acts)  # noqa: E731
    to_logits = pp(LOGITS)
    scores["path_logits"] = to_logits
    attends_io = attn["end_to_io"] > attn["end_to_s2"]
    nm = heads_where((to_logits <= -t.name_mover) & attends_io, to_logits)
    neg = heads_where((to_logits >= t.name_mover) & attends_io, to_logits)
    direct = dla if dla is not None else -to_logits
    backup_mask = attends_io & (attn["end_to_io"] >= t.backup_min_attention) & (direct > 0)
    backup = heads_where(backup_mask, direct, nm + neg)
    taken = nm + neg + backup

    def upstream(receivers: tuple[Head, ...], site: str, position: str, cut: float, key: str) -> Tensor:
        if not receivers:
            return torch.zeros(model.n_layers, model.n_heads, dtype=torch.bool)
        effect = pp(Receivers(receivers, site, position))
        scores[key] = effect
        return effect.abs() >= cut

    s_inh = heads_where(
        upstream(nm, "q_input", "end", t.s_inhibition, "path_nm_q"), scores.get("path_nm_q"), taken
    )
    taken += s_inh
    via_s_inh = upstream(s_inh, "v_input", "s2", t.induction, "path_sinh_v")
    prefers_s1p1 = attn["s2_to_s1p1"] > attn["s2_to_s1"]
    induction = heads_where(via_s_inh & prefers_s1p1, scores.get("path_sinh_v"), taken)
    duplicate = heads_where(via_s_inh & ~prefers_s1p1, scores.get("path_sinh_v"), taken)
    taken += induction + duplicate
    via_ind = upstream(induction, "k_input", "s1+1", t.previous_token, "path_ind_k")
    prev_mask = via_ind & (attn["s1p1_to_s1"] >= t.previous_token_min_attention)
    previous = heads_where(prev_mask, scores.get("path_ind_k"), taken)
    classes = {
        "name mover": nm,
        "backup name mover": backup,
        "negative name mover": neg,
        "s-inhibition": s_inh,
        "induction": induction,
        "duplicate token": duplicate,
        "previous token": previous,
    }
    meta = {"scores": scores, "thresholds": asdict(t), "f_clean": acts.f_clean, "f_abc": acts.f_abc}
    return Circuit(f"IOI circuit of {model.name}", classes, f"discovered on {model.name}", meta)


GPT2_NAMES = ("gpt2", "openai-community/gpt2")


def is_gpt2_small(model) -> bool:
    """Whether `model` is GPT-2 small (by name, or a checkpoint fine-tuned from it) in GPT-2's shape."""
    from ioi.models.load import read_manifest

    manifest = read_manifest(model.name) if Path(model.name).is_dir() else None
    base = manifest.get("base_model", "") if manifest else model.name
    cfg = model.bridge.cfg
    return base in GPT2_NAMES and (cfg.n_layers, cfg.n_heads, cfg.d_model) == (12, 12, 768)


def analysis_circuit(model, clean, abc, circuit: Circuit | dict | None = None) -> Circuit:
    """The circuit an analysis evaluates: `circuit` if given (a Circuit or its JSON), the published
    GPT-2 small circuit for GPT-2 small, else the one :func:`classify_heads` finds."""
    if isinstance(circuit, Circuit):
        return circuit
    if isinstance(circuit, dict):
        return Circuit.from_json(circuit)
    if is_gpt2_small(model):
        return GPT2_SMALL_CIRCUIT
    return classify_heads(model, clean, abc)


@register_analysis("classify")
def classify_analysis(model, clean, abc, *, other=None, freeze_mlp: bool = False, **thresholds: float):
    """Heads rows: value = path effect to the logits, `class` (empty when none), every score grid.
    Summary `classes` = Circuit.to_json()["classes"]. Options: freeze_mlp, any ClassifyThresholds field."""
    known = set(ClassifyThresholds.__dataclass_fields__)
    unknown = sorted(set(thresholds) - known)
    if unknown:
        raise ValueError(
            f"unknown classify options {', '.join(unknown)}; thresholds: {', '.join(sorted(known))}"
        )
    try:
        t = ClassifyThresholds(**{k: float(v) for k, v in thresholds.items()})
    except (TypeError, ValueError):
        raise ValueError(f"classify thresholds must be numbers, got {thresholds}") from None
    circuit = classify_heads(model, clean, abc, t, freeze_mlp=freeze_mlp)
    scores = dict(circuit.meta["scores"])
    frame = heads_frame(scores.pop("path_logits"), **scores)
    frame["class"] = [
        circuit.class_of(Head(layer, head)) or ""
        for layer, head in zip(frame["layer"], frame["head"], strict=True)
    ]
    summary = {
        "classes": circuit.to_json()["classes"],
        "source": circuit.source,
        "thresholds": circuit.meta["thresholds"],
        "f_clean": circuit.meta["f_clean"],
        "f_abc": circuit.meta["f_abc"],
    }
    return AnalysisResult("classify", frame, summary)
