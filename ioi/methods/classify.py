"""Finding the IOI circuit of any model: path patching along the IOI paper's chain, attention, copy
scores and knockout (METHODS §6).

The circuit every analysis, page and report evaluates is chosen here, by one rule: :func:`circuit_for`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from ioi.methods.analyses import AnalysisResult, heads_frame, register_analysis
from ioi.methods.stats import MIN_DENOMINATOR
from ioi.task.circuit import CLASS_POSITIONS, GPT2_SMALL_CIRCUIT, OTHER, Circuit, Head

DEFAULT_KNOCKOUT = "mean-by-template"
"""Ablation of the name-mover knockout that finds backup name movers (IOI paper: mean over ABC)."""

# --- Finding the circuit of any model -------------------------------------------------------------
# Path patching (ioi.methods.path_patching) traces the IOI paper's chain from the logits backwards;
# attention, OV copy scores and knockout split heads the path effects alone cannot tell apart. Every
# cut-off on an effect is a fraction of F(M), the model's own logit difference, so it means the same
# on any model that does the task, and is reported with the classes in logits too.

NOT_THE_TASK = "the model does not do the task"


@dataclass(frozen=True)
class ClassifyThresholds:
    """Every cut-off of :func:`classify_heads`; effect cut-offs are fractions of F(M).

    name_mover: a name mover's path effect to the logits is ≤ −name_mover·F(M), it attends END→IO
    more than END→S (S1 and S2 together) and its OV copy score is ≥ min_copy_score (and above its
    negative copy score); a negative name mover's path effect is ≥ +name_mover·F(M), it attends IO
    more than S and its negative copy score is ≥ min_copy_score. backup: a backup name mover's
    direct effect (DLA, divided by the clean run's final LayerNorm scale so that only a change of
    the head's own output counts) rises by ≥ backup·F(M) when the name movers are knocked out at
    END (compensation, IOI paper). s_inhibition: patching it lowers F by ≥ s_inhibition·F(M) through
    the name movers' queries at END, and it attends END→S2 more than END→IO. induction,
    previous_token: patching lowers F by at least that through the S-inhibition heads' values at S2
    / the induction heads' keys at S1+1; a previous-token head attends S1+1→S1 at least
    previous_token_min_attention. other: any further head whose |path effect to the logits| or
    |DLA| is ≥ other·F(M) joins the group OTHER. min_logit_diff (logits): below it the model does
    not do the task and no head is classified.
    """

    name_mover: float = 0.05
    min_copy_score: float = 0.25
    backup: float = 0.05
    s_inhibition: float = 0.02
    induction: float = 0.02
    previous_token: float = 0.02
    previous_token_min_attention: float = 0.2
    other: float = 0.10
    min_logit_diff: float = MIN_DENOMINATOR


def heads_where(mask: Tensor, order: Tensor, exclude: tuple[Head, ...] = ()) -> tuple[Head, ...]:
    """Heads where `mask` ([layer, head] bool) holds, strongest |order| first, minus `exclude`."""
    picked = [Head(int(layer), int(head)) for layer, head in mask.nonzero().tolist()]
    picked = [h for h in picked if h not in exclude]
    return tuple(sorted(picked, key=lambda h: -abs(order[h.layer, h.head].item())))


@torch.no_grad()
def head_direct_effects(
    model, batch, patches=(), scale: Tensor | None = None, *, per_prompt: bool = False
) -> tuple[Tensor, Tensor]:
    """([layer, head] mean DLA of every head at END (METHODS §7) in a run with `patches` applied,
    [batch, 1] the final LayerNorm scale used). Give `scale` (the clean run's) to divide by it
    instead of the patched run's own, so a head's DLA changes only when its own output does.
    per_prompt: [layer, head, batch] instead of the mean."""
    from ioi.methods.hooks import read
    from ioi.methods.patching import patch_hooks
    from ioi.task.metrics import logit_diff_direction

    names = ["ln_final.hook_scale", *(f"blocks.{layer}.attn.hook_result" for layer in range(model.n_layers))]
    hooks = patch_hooks([list(patches)], model.n_layers) if patches else []
    end = batch.end.to(model.device)
    with torch.no_grad():
        got = read(model.bridge, batch.tokens.to(model.device), names, hooks=hooks, at=end)
    d = logit_diff_direction(model.bridge.W_U, model.bridge.b_U, batch)[0][:, None]  # [batch, 1, d_model]
    scale = got["ln_final.hook_scale"] if scale is None else scale
    results = [got[f"blocks.{n}.attn.hook_result"] for n in range(model.n_layers)]
    grid = torch.stack([(r / scale[:, :, None] * d).sum(-1).T for r in results])  # [layer, head, batch]
    grid = grid if per_prompt else grid.mean(-1)
    return grid.cpu(), scale


def _empty_classes() -> dict[str, tuple[Head, ...]]:
    return {c: () for c in CLASS_POSITIONS}


def classify_heads(
    model,
    clean,
    abc,
    thresholds: ClassifyThresholds = ClassifyThresholds(),
    *,
    freeze_mlp: bool = False,
) -> Circuit:
    """The IOI head classes of `model` (IOI paper §3 criteria, METHODS §6) plus OTHER.

    1. path effect to the logits, attention END→IO vs END→S (S1+S2) and OV copy scores: name
       movers and negative name movers; knocking the name movers out at END (mean over ABC per
       template) and re-measuring DLA: backup name movers (compensation);
    2. via the name movers' queries at END: S-inhibition heads (patching lowers F; attend S2);
    3. via the S-inhibition heads' values at S2: induction heads if they attend S2→S1+1 more than
       S2→S1, duplicate-token heads otherwise;
    4. via the induction heads' keys at S1+1: previous-token heads;
    5. OTHER: every remaining head with |path effect to the logits| or |DLA| ≥ other·F(M).
    A head keeps its first class. When F(M) < min_logit_diff every class is empty and
    `meta["reason"]` says the model does not do the task. `meta` holds every score grid (effects
    in logits), the thresholds, their values in logits and F(M).
    """
    from ioi.methods.attention import attention_scores, model_copy_scores
    from ioi.methods.patching import prepare
    from ioi.methods.path_patching import LOGITS, Receivers, path_patch
    from ioi.methods.replacement import AblationType, ablation_values, knockout_patches

    t = thresholds
    acts = prepare(model, clean, abc)
    f_m = acts.f_clean
    meta = {"thresholds": asdict(t), "f_model": f_m, "f_clean": f_m, "f_abc": acts.f_abc}
    if f_m < t.min_logit_diff:
        meta |= {"reason": f"{NOT_THE_TASK}: F(M) = {f_m:.3f} < {t.min_logit_diff} logits", "scores": {}}
        return Circuit(f"IOI circuit of {model.name}", _empty_classes(), f"discovered on {model.name}", meta)
    unitless = ("min_copy_score", "min_logit_diff", "previous_token_min_attention")
    cut = {k: v * f_m for k, v in asdict(t).items() if k not in unitless}
    attn = attention_scores(model.bridge, clean)
    copies = model_copy_scores(model.bridge, model.tokenizer)
    dla, scale = head_direct_effects(model, clean)
    scores: dict[str, Tensor] = {f"attn_{k}": v for k, v in attn.items()} | copies | {"dla": dla}
    pp = lambda receivers: path_patch(  # noqa: E731
        model, clean, abc, receivers, freeze_mlp=freeze_mlp, acts=acts, normalize=False
    )
    to_logits = pp(LOGITS)
    scores["path_logits"] = to_logits
    attends_io = attn["end_to_io"] > attn["end_to_s"]
    copy, neg_copy = copies["copy_score"], copies["negative_copy_score"]
    copies_name = (copy >= t.min_copy_score) & (copy > neg_copy)
    nm = heads_where((to_logits <= -cut["name_mover"]) & attends_io & copies_name, to_logits)
    copies_minus = neg_copy >= t.min_copy_score
    neg = heads_where((to_logits >= cut["name_mover"]) & attends_io & copies_minus, to_logits, nm)
    if nm:
        values = ablation_values(acts.z_abc, abc, AblationType.parse(DEFAULT_KNOCKOUT))
        after, _ = head_direct_effects(model, clean, knockout_patches(values, nm, clean, "end"), scale)
        scores["dla_after_nm_knockout"] = after
        backup = heads_where(after - dla >= cut["backup"], after - dla, nm + neg)
    else:
        backup = ()
    taken = nm + neg + backup

    def upstream(receivers: tuple[Head, ...], site: str, position: str, cut_off: float, key: str) -> Tensor:
        if not receivers:
            return torch.zeros(model.n_layers, model.n_heads, dtype=torch.bool)
        effect = pp(Receivers(receivers, site, position))
        scores[key] = effect
        return effect <= -cut_off  # patching them lowers the logit difference

    via_nm = upstream(nm, "q_input", "end", cut["s_inhibition"], "path_nm_q")
    s_inh = heads_where(via_nm & (attn["end_to_s2"] > attn["end_to_io"]), scores.get("path_nm_q"), taken)
    taken += s_inh
    via_s_inh = upstream(s_inh, "v_input", "s2", cut["induction"], "path_sinh_v")
    prefers_s1p1 = attn["s2_to_s1p1"] > attn["s2_to_s1"]
    induction = heads_where(via_s_inh & prefers_s1p1, scores.get("path_sinh_v"), taken)
    duplicate = heads_where(via_s_inh & ~prefers_s1p1, scores.get("path_sinh_v"), taken)
    taken += induction + duplicate
    via_ind = upstream(induction, "k_input", "s1+1", cut["previous_token"], "path_ind_k")
    prev_mask = via_ind & (attn["s1p1_to_s1"] >= t.previous_token_min_attention)
    previous = heads_where(prev_mask, scores.get("path_ind_k"), taken)
    taken += previous
    carries = (to_logits.abs() >= cut["other"]) | (dla.abs() >= cut["other"])
    other = heads_where(carries, to_logits, taken)
    classes = {
        "name mover": nm,
        "backup name mover": backup,
        "negative name mover": neg,
        "s-inhibition": s_inh,
        "induction": induction,
        "duplicate token": duplicate,
        "previous token": previous,
        OTHER: other,
    }
    meta |= {"scores": scores, "cutoffs_logits": cut}
    return Circuit(f"IOI circuit of {model.name}", classes, f"discovered on {model.name}", meta)


GPT2_NAMES = ("gpt2", "openai-community/gpt2")


def is_gpt2_small(model) -> bool:
    """Whether `model` is GPT-2 small (by name, or a checkpoint fine-tuned from it) in GPT-2's shape."""
    from ioi.models.load import read_manifest

    manifest = read_manifest(model.name) if Path(model.name).is_dir() else None
    base = manifest.get("base_model", "") if manifest else model.name
    cfg = model.bridge.cfg
    return base in GPT2_NAMES and (cfg.n_layers, cfg.n_heads, cfg.d_model) == (12, 12, 768)


def circuit_for(
    model, clean=None, abc=None, circuit: Circuit | dict | None = None, *, classified: Circuit | None = None
) -> Circuit:
    """The one rule for the circuit every analysis, CMAP, page and report evaluates (METHODS §5):
    `circuit` if given (a Circuit or its JSON); the published 26-head circuit on GPT-2 small;
    otherwise the IOI classes :func:`classify_heads` finds on `model` plus the group OTHER (heads
    with |path effect to the logits| or |DLA| ≥ 10% of F(M)). On a model that does not do the task
    (F(M) < 0.5 logits) the classes are empty and `meta["reason"]` says so.

    `classified` is a circuit this rule already gave for the model (the one a checkpoint's
    faithfulness analysis stored), used instead of classifying again on `clean` and `abc`; without
    either, no circuit is known yet: the classes are empty and `meta["reason"]` says so."""
    if isinstance(circuit, Circuit):
        return circuit
    if isinstance(circuit, dict):
        return Circuit.from_json(circuit)
    if is_gpt2_small(model):
        return GPT2_SMALL_CIRCUIT
    if classified is not None:
        return classified
    if clean is None or abc is None:
        return Circuit("none", {}, f"not classified on {model.name}", {"reason": NOT_CLASSIFIED})
    key = (id(model), id(clean), id(abc))
    if key not in _FOUND:
        while len(_FOUND) >= 4:
            _FOUND.pop(next(iter(_FOUND)))
        _FOUND[key] = (model, clean, abc, classify_heads(model, clean, abc))
    return _FOUND[key][3]


# The analyses of one checkpoint share its model and batches, and classification (path patching
# along the chain) is their slowest common step: keep the last few, holding the objects so their
# ids stay theirs.
_FOUND: dict[tuple[int, int, int], tuple[object, object, object, Circuit]] = {}


NOT_CLASSIFIED = "no circuit classified on this model yet (run its faithfulness analysis)"

CIRCUIT_RULE = (
    "IOI classes by the IOI paper's criteria (path patching along the chain, attention END→IO vs "
    "END→S1+S2, OV copy score ≥ 0.25, backups by compensation after a name-mover knockout; cut-offs "
    "5% of F(M) for name movers and backups, 2% for upstream classes) plus every other head whose "
    "|path effect to the logits| or |DLA| is ≥ 10% of F(M); the published circuit on GPT-2 small; "
    "none when F(M) < 0.5 logits"
)
""":func:`circuit_for` in one sentence, for the report and the pages."""


@register_analysis("classify")
def classify_analysis(model, clean, abc, *, other=None, freeze_mlp: bool = False, **thresholds: float):
    """Heads rows: value = path effect to the logits (logits), `class` (empty when none), every score grid.
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
    summary = {
        "classes": circuit.to_json()["classes"],
        "source": circuit.source,
        "rule": CIRCUIT_RULE,
        **{k: circuit.meta[k] for k in ("thresholds", "f_model", "f_clean", "f_abc")},
        "cutoffs_logits": circuit.meta.get("cutoffs_logits", {}),
        "reason": circuit.meta.get("reason", ""),
    }
    if not scores:  # the model does not do the task: nothing was measured per head
        nan = torch.full((model.n_layers, model.n_heads), float("nan"))
        return AnalysisResult("classify", heads_frame(nan).assign(**{"class": ""}), summary)
    frame = heads_frame(scores.pop("path_logits"), **scores)
    frame["class"] = [
        circuit.class_of(Head(layer, head)) or ""
        for layer, head in zip(frame["layer"], frame["head"], strict=True)
    ]
    return AnalysisResult("classify", frame, summary)
