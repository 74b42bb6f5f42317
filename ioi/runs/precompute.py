"""The demo cache shipped in the repository (cache/demo), so a fresh install shows results at once.

`python -m ioi precompute` fills it for the default model: the baseline (epoch 0 of every
experiment), clean fine-tuning with checkpoints up to `clean_epochs`, every toxic dataset for 5
epochs and a 5-epoch reversal from each. Only metrics and per-head tables are kept (weights are
pruned unless asked), so the set stays small; it is reproducible by running the command again.
"""

from __future__ import annotations

import math
import shutil
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

    import torch

    from ioi.models.train import TrainConfig, finetune

    torch.set_num_threads(1)
    probe = TrainConfig(model=model, epochs=1, batch_size=batch_size, train_size=PROBE_SIZE, eval_size=8)
    with tempfile.TemporaryDirectory() as tmp:
        steps: list[float] = []
        finetune(probe, tmp, progress=lambda *_: steps.append(time.perf_counter()))
    per_step = (steps[-1] - steps[0]) / max(1, len(steps) - 1)  # excludes loading and the checkpoint
    return per_step * math.ceil(train_size / batch_size)


def clean_epochs_within(budget_s: float, seconds_per_epoch: float) -> int:
    """The longest clean run (a checkpoint epoch of CLEAN_CHECKPOINTS) that fits `budget_s`."""
    fitting = [e for e in CLEAN_CHECKPOINTS if e * seconds_per_epoch <= budget_s]
    return max(fitting, default=1)


def demo_stages(
    model: str, *, quick: bool = False, clean_epochs: int = 100, lr: float = 1e-5
) -> list[list[ExperimentConfig]]:
    """The demo experiments in two stages (clean and toxic runs, then reversals). `quick` uses a
    few dozen prompts and 2–3 epochs and skips the per-head knockout (the report does not use it;
    on GPT-2 small it is 144 patched forward passes per checkpoint), to check the pipeline in
    minutes (seconds on random:tiny)."""
    if quick:
        base = ExperimentConfig(model=model, lr=max(lr, 1e-3), batch_size=16, train_size=64, eval_size=32,
                                analysis_size=8, analyses=("dla", "faithfulness", "cmap"))  # fmt: skip
        clean_epochs, toxic_epochs = min(clean_epochs, 3), 2
    else:
        base, toxic_epochs = ExperimentConfig(model=model, lr=lr), TOXIC_EPOCHS
    clean = replace(base, epochs=clean_epochs,
                    checkpoint_epochs=tuple(e for e in CLEAN_CHECKPOINTS if e <= clean_epochs))  # fmt: skip
    toxic_base = replace(base, epochs=toxic_epochs, checkpoint_epochs=tuple(range(1, toxic_epochs + 1)))
    first, *rest = sweep_configs(toxic_base, scenarios=tuple(CORRUPTIONS), reversal_epochs=toxic_epochs)
    return [[clean, *first], *rest]


def prune_weights(root: str | Path) -> None:
    """Delete checkpoints, job logs, locks and the derived index, keeping metrics and tables."""
    base = cache_root(root)
    for folder in base.glob("experiments/*/checkpoints"):
        shutil.rmtree(folder)
    for lock in base.glob("experiments/*/.lock"):
        lock.unlink()
    shutil.rmtree(base / "jobs", ignore_errors=True)
    for index in base.glob("index.sqlite3*"):
        index.unlink()
