"""The demo cache shipped in the repository (cache/demo), so a fresh install shows results at once.

`python -m ioi precompute` fills it for the default model: for every training seed, the baseline
(epoch 0 of every experiment), clean fine-tuning with checkpoints up to `clean_epochs`, every toxic
dataset for `toxic_epochs` (default 5; the paper uses 3–5) and a reversal of as many from each.
Only metrics and per-head tables are kept, plus the weights of the few checkpoints the Playground
runs on (`playground_experiments`; all of them with --keep-weights), so the set stays small; it is
reproducible by running the command again.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path

from ioi.runs.cache import cache_root
from ioi.runs.experiment import ExperimentConfig
from ioi.runs.sweep import sweep_configs
from ioi.task.corruptions import CORRUPTIONS
from ioi.task.defaults import DEFAULT_TRAIN_SIZE

CLEAN_CHECKPOINTS = (1, 3, 5, 10, 25, 50, 100)
TOXIC_EPOCHS = 5
PROBE_SIZE = 320


def epoch_seconds(model: str, *, batch_size: int = 32, train_size: int = DEFAULT_TRAIN_SIZE) -> float:
    """Measured seconds of one fine-tuning epoch of `model` here (one torch thread), timed on
    PROBE_SIZE prompts and scaled to `train_size`."""
    import tempfile
    import time

    from ioi.models.threads import one_thread
    from ioi.models.train import TrainConfig, finetune

    probe = TrainConfig(model=model, epochs=1, batch_size=batch_size, train_size=PROBE_SIZE, eval_size=8)
    with tempfile.TemporaryDirectory() as tmp, one_thread():
        steps: list[float] = []
        finetune(probe, tmp, progress=lambda *_: steps.append(time.perf_counter()))
    per_step = (steps[-1] - steps[0]) / max(1, len(steps) - 1)  # excludes loading and the checkpoint
    return per_step * math.ceil(train_size / batch_size)


def clean_epochs_within(budget_s: float, seconds_per_epoch: float) -> int:
    """The longest clean run (a checkpoint epoch of CLEAN_CHECKPOINTS) that fits `budget_s`."""
    fitting = [e for e in CLEAN_CHECKPOINTS if e * seconds_per_epoch <= budget_s]
    return max(fitting, default=1)


LATER_SEED_ANALYSES = ("dla", "faithfulness", "cmap")
"""The analyses of every run but the first seed's clean one: what the findings use (the per-head
knockout and the circuit tests, the slowest, run on the first seed's clean run only)."""


def demo_stages(
    model: str,
    *,
    quick: bool = False,
    clean_epochs: int = 100,
    lr: float = 1e-5,
    seeds: Sequence[int] = (0,),
    other_seeds_clean_epochs: int | None = None,
    toxic_epochs: int = TOXIC_EPOCHS,
) -> list[list[ExperimentConfig]]:
    """The demo experiments in stages, the first seed's first so that it is complete early: its
    toxic and clean runs; its reversals (which start from the toxic runs) beside the later seeds'
    toxic and clean runs; the later seeds' reversals. The first seed's clean run has
    `clean_epochs` with checkpoints at CLEAN_CHECKPOINTS and every analysis; the other seeds'
    `other_seeds_clean_epochs` (default the same) with its last epoch only, since the across-seed
    intervals compare one checkpoint. Toxic runs and reversals (`toxic_epochs` each) are analysed
    at their last epoch. Every run but the first seed's clean one gets LATER_SEED_ANALYSES.
    `quick` uses a few dozen prompts and 2–3 epochs and skips the per-head knockout and circuit
    tests, to check the pipeline in minutes (seconds on random:tiny)."""
    if quick:
        base = ExperimentConfig(model=model, lr=max(lr, 1e-3), batch_size=16, train_size=64, eval_size=32,
                                analysis_size=8, analyses=LATER_SEED_ANALYSES)  # fmt: skip
        clean_epochs, toxic_epochs = min(clean_epochs, 3), 2
        other_seeds_clean_epochs = min(other_seeds_clean_epochs or clean_epochs, clean_epochs)
    else:
        base = ExperimentConfig(model=model, lr=lr)
    first_seed, *others = seeds
    light = base.analyses if quick else LATER_SEED_ANALYSES
    toxic_base = replace(base, epochs=toxic_epochs, checkpoint_epochs=(toxic_epochs,), analyses=light)
    first_toxic, first_reversals = sweep_configs(
        toxic_base, seeds=(first_seed,), scenarios=tuple(CORRUPTIONS), reversal_epochs=toxic_epochs
    )
    first = replace(base, epochs=clean_epochs, seed=first_seed,
                    checkpoint_epochs=tuple(e for e in CLEAN_CHECKPOINTS if e <= clean_epochs))  # fmt: skip
    if not others:
        return [[first, *first_toxic], first_reversals]
    later_toxic, later_reversals = sweep_configs(
        toxic_base, seeds=others, scenarios=tuple(CORRUPTIONS), reversal_epochs=toxic_epochs
    )
    short = other_seeds_clean_epochs or clean_epochs
    later = [replace(toxic_base, epochs=short, checkpoint_epochs=(short,), seed=s) for s in others]
    return [[first, *first_toxic], [*first_reversals, *later_toxic, *later], later_reversals]


def add_start_knockouts(root: str | Path, *, device: str = "cpu", log=print) -> list[str]:
    """Knockout at epoch 0 (the pretrained model) of every toxic run with a knockout at its last
    epoch but none there, so that run's own knockout view compares the pretrained with the toxic
    model (a run's plan leaves epoch 0 of a toxic run to the clean run). No training: epoch 0 is
    the starting model. Adds entries only; returns the experiments it added one to."""
    from ioi.runs.catalog import list_experiments
    from ioi.runs.experiment import analyse_epoch

    added = []
    for exp in list_experiments(root):
        cfg = ExperimentConfig.from_json(exp.config)
        if cfg.scenario in ("clean", "reversal") or "knockout" in exp.epochs.get(0, []):
            continue
        if "knockout" in exp.epochs.get(cfg.epochs, []):
            analyse_epoch(cfg, root, exp.id, 0, ["knockout"], None, device, log)
            added.append(exp.id)
    return added


def playground_experiments(root: str | Path) -> set[str]:
    """The experiments whose weights the demo cache keeps, so the dashboard's Playground and head
    pages run on them without training: the first seed's clean run, its subject-duplication run and
    that run's reversal (a few MB on the bundled model)."""
    import json

    configs = {}
    for path in cache_root(root).glob("experiments/*/experiment.json"):
        configs[path.parent.name] = json.loads(path.read_text())["config"]
    if not configs:
        return set()
    first = min(c.get("seed", 0) for c in configs.values())
    keep = {i for i, c in configs.items() if c.get("seed") == first
            and c.get("scenario") in ("clean", "subject_duplication")}  # fmt: skip
    return keep | {i for i, c in configs.items() if c.get("parent") in keep}


def strip_checkpoints(root: str | Path, exp_id: str) -> None:
    """Ship an experiment's checkpoints: drop the optimizer state (resuming needs it, analysing does
    not) and write the manifests' `init_from` relative to the cache root (no machine paths)."""
    import json

    base = cache_root(root).resolve()
    for manifest in (base / "experiments" / exp_id / "checkpoints").glob("epoch-*/manifest.json"):
        (manifest.parent / "optimizer.safetensors").unlink(missing_ok=True)
        data = json.loads(manifest.read_text())
        init = (data.get("config") or {}).get("init_from")
        if init and Path(init).is_absolute() and Path(init).resolve().is_relative_to(base):
            data["config"]["init_from"] = str(Path(init).resolve().relative_to(base))
            manifest.write_text(json.dumps(data, indent=2))


def prune_weights(root: str | Path, keep: Collection[str] = ()) -> None:
    """Delete checkpoints (but those of the experiments in `keep`, stripped for shipping), job
    logs, locks and the derived index, keeping metrics and tables."""
    base = cache_root(root)
    for folder in base.glob("experiments/*/checkpoints"):
        if folder.parent.name in keep:
            strip_checkpoints(base, folder.parent.name)
            continue
        shutil.rmtree(folder)
    for lock in base.glob("experiments/*/.lock"):
        lock.unlink()
    shutil.rmtree(base / "jobs", ignore_errors=True)
    for index in base.glob("index.sqlite3*"):
        index.unlink()
