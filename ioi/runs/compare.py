"""Comparing the checkpoints of a cached experiment (or of its lineage), cached as an entry.

`compare_experiment(id)` lines up the checkpoints: epoch 0 (the starting model) and every saved
epoch of the experiment; with `family`, its lineage too — a toxic run is followed by its reversal's
epochs, a reversal is preceded by its toxic parent's. Every checkpoint is profiled on the
experiment's own analysis prompts (:func:`ioi.methods.evolution.profile_checkpoint`) and compared
(:func:`ioi.methods.evolution.timeline`, :mod:`ioi.methods.transfer`). The result is stored as the
entry "compare" (or "compare-family") at the experiment's last epoch, in the layout of an analysis
(a heads table: each head's role scores at the last checkpoint), so a second call reads it.

Weights come from `weights_root` (default the cache itself): the checkpoints an experiment's job
wrote. The shipped demo cache keeps none; its comparisons were computed on re-created weights
(fine-tuning is deterministic on CPU) and stored as entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ioi.runs.cache import cache_root, load_analysis, read_experiment, write_analysis
from ioi.runs.experiment import ExperimentConfig, ExperimentError, checkpoints_dir

COMPARE, COMPARE_FAMILY = "compare", "compare-family"


@dataclass(frozen=True)
class Checkpoint:
    """One model of a timeline: its label, experiment, epoch and where its weights are."""

    label: str
    experiment: str
    scenario: str
    epoch: int
    source: str


def _config(root, exp_id: str) -> ExperimentConfig:
    record = read_experiment(root, exp_id)
    if record is None:
        raise ExperimentError(f"no experiment {exp_id} in {root}; `ioi jobs list` shows the cached ones")
    return ExperimentConfig.from_json(record["config"])


def _own(root, weights_root, exp_id: str, cfg: ExperimentConfig, start: str, first: int) -> list[Checkpoint]:
    from ioi.models.train import checkpoint_dir

    out = []
    for epoch in [0, *cfg.save_epochs][first:]:
        source = start if epoch == 0 else str(checkpoint_dir(checkpoints_dir(weights_root, exp_id), epoch))
        out.append(Checkpoint(f"{cfg.scenario} {epoch}", exp_id, cfg.scenario, epoch, source))
    return out


def lineage(root, exp_id: str, *, family: bool = False, weights_root=None) -> list[Checkpoint]:
    """The checkpoints a comparison of `exp_id` lines up (see the module docstring)."""
    from ioi.models.train import checkpoint_dir

    weights_root = weights_root or root
    cfg = _config(root, exp_id)
    if cfg.parent is None:
        own = _own(root, weights_root, exp_id, cfg, cfg.model, 0)
        if not family or cfg.scenario == "clean":
            return own
        children = reversals_of(root, exp_id)
        if len(children) > 1:
            raise ExperimentError(ambiguous_lineage(exp_id, children))
        for child in children:
            own += _own(root, weights_root, child, _config(root, child), own[-1].source, 1)
        return own
    parent = _config(root, cfg.parent)
    parent_final = str(checkpoint_dir(checkpoints_dir(weights_root, cfg.parent), parent.epochs))
    own = _own(root, weights_root, exp_id, cfg, parent_final, 0 if not family else 1)
    return (_own(root, weights_root, cfg.parent, parent, parent.model, 0) if family else []) + own


def ambiguous_lineage(exp_id: str, children: list[str]) -> str:
    """Why a toxic run with several reversals has no single lineage, and what to run instead."""
    return (
        f"{exp_id} has {len(children)} reversals ({', '.join(children)}), so its lineage is not one "
        f"line: compare one reversal's lineage, e.g. `ioi compare --experiment {children[0]} --family`"
    )


def reversals_of(root, exp_id: str) -> list[str]:
    """The reversals of `exp_id` in the cache, by id."""
    folder = cache_root(root) / "experiments"
    found = []
    for d in sorted(folder.iterdir()) if folder.is_dir() else []:
        record = read_experiment(root, d.name) if (d / "experiment.json").exists() else None
        if record and record.get("config", {}).get("parent") == exp_id:
            found.append(d.name)
    return found


def lineage_reversal(summary: dict) -> tuple[str, int] | None:
    """(experiment, epoch) of the last reversal checkpoint in a comparison's summary, if any."""
    lineage = zip(summary["experiments"], summary["scenarios"], summary["epochs"], strict=True)
    found = [(e, ep) for e, sc, ep in lineage if sc == "reversal"]
    return found[-1] if found else None


def missing_weights(checkpoints: list[Checkpoint]) -> list[Checkpoint]:
    """The checkpoints whose weights are not on disk (a model name counts as present)."""
    return [c for c in checkpoints if "/" in c.source and not (Path(c.source) / "config.json").exists()]


def comparison_name(cfg: ExperimentConfig, family: bool) -> str:
    """The entry a comparison of `cfg` is stored as: COMPARE_FAMILY only where the lineage adds
    checkpoints; a clean run's lineage is itself (`lineage`), so its family comparison is COMPARE."""
    return COMPARE_FAMILY if family and cfg.scenario != "clean" else COMPARE


def load_comparison(root, exp_id: str, *, family: bool = False):
    """The cached comparison (an AnalysisResult), or None."""
    cfg = _config(root, exp_id)
    return load_analysis(root, exp_id, cfg.epochs, comparison_name(cfg, family))


def compare_experiment(
    root,
    exp_id: str,
    *,
    family: bool = False,
    weights_root=None,
    device: str = "cpu",
    write: bool = True,
    log=None,
    n_boot: int = 1000,
):
    """Compute (and with `write`, store) the comparison of `exp_id`'s checkpoints; an
    AnalysisResult with tables overlap, changes, roles, transfer, cmap."""
    import pandas as pd

    from ioi.methods.analyses import AnalysisResult
    from ioi.methods.evolution import profile_checkpoint, timeline
    from ioi.methods.transfer import cmap_matrix, transfer_faithfulness
    from ioi.models.load import load_model
    from ioi.task.circuit import Head
    from ioi.task.data import abc_counterfactual, tokenize
    from ioi.task.names import HELD_OUT_NAMES, evaluation_samples

    cfg = _config(root, exp_id)
    checkpoints = lineage(root, exp_id, family=family, weights_root=weights_root)
    if absent := missing_weights(checkpoints):
        names = ", ".join(f"epoch {c.epoch} of {c.experiment}" for c in absent)
        raise ExperimentError(
            f"the weights of {names} are not in the cache (a demo cache keeps none): run "
            "the experiment with `ioi jobs submit` to re-create them"
        )
    samples, _ = evaluation_samples(cfg.seed, max(cfg.eval_size, cfg.analysis_size))  # as the analyses
    models, profiles, batches = [], [], None
    for c in checkpoints:
        if log:
            log(f"profiling {c.label}")
        model = load_model(c.source, device=device, seed=cfg.seed)
        if batches is None:
            clean = tokenize(samples[: cfg.analysis_size], model.tokenizer)
            abc_samples = abc_counterfactual(samples[: cfg.analysis_size], cfg.seed, HELD_OUT_NAMES)
            batches = (clean, tokenize(abc_samples, model.tokenizer, like=clean))
        ref_nm = profiles[0].name_movers if profiles else None
        profiles.append(profile_checkpoint(model, *batches, c.label, name_movers=ref_nm))
        models.append(model)
    if log:
        log("the timeline, transfer and CMAP matrices")
    tables = timeline(profiles, n_boot=n_boot, seed=cfg.seed)
    labels = [c.label for c in checkpoints]
    runs = [p.runs for p in profiles]  # each checkpoint's clean/ABC runs, reused by both matrices
    circuits = [p.circuit_edges for p in profiles]
    transfer = transfer_faithfulness(models, circuits, *batches, runs=runs, seed=cfg.seed)
    heads = [Head.parse(h) for h in profiles[0].heads]
    cm = cmap_matrix(models, heads, batches[0], acts=[r.acts for r in runs], n_boot=n_boot, seed=cfg.seed)
    tables["transfer"] = _matrix_frame(transfer, labels, ("circuit_of", "model"))
    tables["cmap"] = _matrix_frame(cm, labels, ("source", "receiver"))
    last = tables["roles"][tables["roles"]["checkpoint"] == labels[-1]]
    wide = last.pivot_table(index=["layer", "head"], columns="role", values="value").reset_index()
    wide["value"] = wide["dla"]
    summary = {
        "experiment": exp_id,
        "family": family,
        "checkpoints": labels,
        "experiments": [c.experiment for c in checkpoints],
        "epochs": [c.epoch for c in checkpoints],
        "scenarios": [c.scenario for c in checkpoints],
        "n_prompts": cfg.analysis_size,
        "reference": labels[0],
        "cmap_heads": [str(h) for h in heads],
        "resamples": n_boot,
    }
    result = AnalysisResult(COMPARE_FAMILY if family else COMPARE, pd.DataFrame(wide), summary, tables)
    if write:
        write_analysis(root, exp_id, cfg.epochs, result.method, result)
    return result


def _matrix_frame(m: dict, labels: list[str], axes: tuple[str, str]):
    """One row per (i, j) cell: the tensors' entries as floats, the texts ([i][j] lists) as text."""
    import pandas as pd

    rows = []
    for i, a in enumerate(labels):
        for j, b in enumerate(labels):
            cell = {k: (v[i][j] if isinstance(v, list) else float(v[i, j])) for k, v in m.items()}
            rows.append({axes[0]: a, axes[1]: b, **cell})
    return pd.DataFrame(rows)


def run_comparison(root, exp_id: str, name: str, device: str, note) -> list[str]:
    """Compute the whole-experiment entry `name` (compare, compare-family, recovery) inside a job;
    [] or the failure's message (noted), so the experiment's other entries are kept."""
    try:
        if name == "recovery":
            from ioi.runs.recovery import recovery_dynamics

            recovery_dynamics(root, exp_id, device=device, log=note)
        else:
            note(f"comparing the checkpoints of {exp_id}{' and its lineage' if name != COMPARE else ''}")
            compare_experiment(root, exp_id, family=name != COMPARE, device=device, log=note)
    except Exception as err:
        message = f"{name} failed: {type(err).__name__}: {err}"
        note(message)
        return [message]
    return []
