"""Recovery dynamics of a cached reversal (ioi.methods.recovery), stored as the entry "recovery".

The toxic parent and the reversal are fine-tuned again (deterministic on CPU, so these are the
experiment's own runs) into a scratch folder, with a snapshot measured every `every` steps.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

from ioi.runs.cache import read_experiment, write_analysis
from ioi.runs.experiment import ExperimentConfig, ExperimentError

RECOVERY = "recovery"


def _config(root, exp_id: str) -> ExperimentConfig:
    record = read_experiment(root, exp_id)
    if record is None:
        raise ExperimentError(f"no experiment {exp_id} in {root}")
    return ExperimentConfig.from_json(record["config"])


def recovery_dynamics(
    root,
    reversal_id: str,
    *,
    every: int = 100,
    device: str = "cpu",
    write: bool = True,
    log=None,
    n_draws: int = 1000,
):
    """An AnalysisResult: tables points (run, step, logit_diff, lo, hi, jaccard) and matched; summary
    steps_to_revive, the baseline and the pretrained interval and floor."""
    import pandas as pd

    from ioi.methods.analyses import AnalysisResult
    from ioi.methods.edges import edge_graph
    from ioi.methods.evolution import profile_checkpoint, timeline
    from ioi.methods.recovery import matched_path, random_edge_baseline, snapshot, steps_to_revive
    from ioi.methods.stats import mean_estimate
    from ioi.models.load import LoadedModel, load_model, wrap
    from ioi.models.train import checkpoint_dir, finetune
    from ioi.task.data import abc_counterfactual, tokenize
    from ioi.task.names import HELD_OUT_NAMES, evaluation_samples

    cfg = _config(root, reversal_id)
    if cfg.parent is None:
        raise ExperimentError(f"{reversal_id} is not a reversal: recovery dynamics follow a reversal")
    if every < 1:
        raise ExperimentError(f"snapshots every {every} steps: give at least 1")
    toxic = _config(root, cfg.parent)
    pretrained = load_model(toxic.model, device=device, seed=cfg.seed)
    samples, _ = evaluation_samples(cfg.seed, max(cfg.eval_size, cfg.analysis_size))
    clean = tokenize(samples[: cfg.analysis_size], pretrained.tokenizer)
    abc = tokenize(
        abc_counterfactual(samples[: cfg.analysis_size], cfg.seed, HELD_OUT_NAMES),
        pretrained.tokenizer,
        like=clean,
    )
    graph = edge_graph(pretrained)
    base = profile_checkpoint(pretrained, clean, abc, "pretrained")
    reference = set(base.circuit_edges)
    floor = float(timeline([base], n_boot=200, seed=cfg.seed)["overlap"].iloc[0]["stability_p05"])
    f0 = mean_estimate(base.f_model.double(), seed=cfg.seed)
    rows = []

    def measure(run: str):
        def on_step(step: int, model) -> None:
            if step % every:
                return
            snap = LoadedModel(
                name=f"{run} step {step}",
                bridge=wrap(copy.deepcopy(model), pretrained.tokenizer, device),
                hf_model=None,
                tokenizer=pretrained.tokenizer,
                source="snapshot",
                device=device,
            )
            rows.append({"run": run, "step": step, **snapshot(snap, clean, abc, graph, reference)})
            if log:
                log(f"{run} step {step}: F = {rows[-1]['logit_diff']:.2f}, Jaccard {rows[-1]['jaccard']:.2f}")

        return on_step

    with tempfile.TemporaryDirectory() as tmp:
        finetune(toxic.train_config(None), Path(tmp) / "toxic", device=device, on_step=measure("toxic"))
        final = str(checkpoint_dir(Path(tmp) / "toxic", toxic.epochs))
        finetune(cfg.train_config(final), Path(tmp) / "reversal", device=device, on_step=measure("reversal"))
    points = pd.DataFrame(rows)
    rev, tox = points[points.run == "reversal"], points[points.run == "toxic"]
    revive = steps_to_revive(rev, (f0.lo, f0.hi), floor)
    baseline = random_edge_baseline(graph, reference, n_draws=n_draws, seed=cfg.seed)
    summary = {
        "experiment": reversal_id,
        "parent": cfg.parent,
        "every": every,
        "steps_to_revive": revive,
        "pretrained_logit_diff": f0.to_json(),
        "jaccard_floor": floor,
        "n_edges": len(reference),
        "baseline_jaccard": baseline.to_json(),
        "n_prompts": cfg.analysis_size,
    }
    heads = base.roles["dla"].mean(-1)
    frame = pd.DataFrame(
        [
            {"layer": la, "head": h, "value": float(heads[la, h])}
            for la in range(heads.shape[0])
            for h in range(heads.shape[1])
        ]
    )
    result = AnalysisResult(RECOVERY, frame, summary, {"points": points, "matched": matched_path(tox, rev)})
    if write:
        write_analysis(root, reversal_id, cfg.epochs, RECOVERY, result)
    return result
