"""Shared pieces of the job, cache and sweep tests: a tiny experiment and a toy analysis.

The toy analysis stands in for the real ones (registered by other modules) and is importable by
background workers through $IOI_ANALYSIS_MODULES=jobs_support with this folder on PYTHONPATH.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file

from ioi.methods.analyses import ANALYSES, AnalysisResult, register_analysis
from ioi.runs.experiment import ExperimentConfig
from ioi.task.metrics import logit_diff, run_logits

TOY = "toy-norms"


if TOY not in ANALYSES:

    @register_analysis(TOY, "per-head norm of W_O, and the clean logit difference (tests only)")
    def toy_norms(model, clean, abc, *, other=None, **options) -> AnalysisResult:
        norms = model.bridge.W_O.norm(dim=(-2, -1))  # [layer, head]
        heads = pd.DataFrame(
            [{"layer": layer, "head": h, "value": float(norms[layer, h])}
             for layer in range(norms.shape[0]) for h in range(norms.shape[1])]
        )  # fmt: skip
        ld = float(logit_diff(run_logits(model.bridge, clean), clean))
        extra = pd.DataFrame({"prompt": range(len(clean)), "io_tok": clean.io_tok.tolist()})
        return AnalysisResult(TOY, heads, {"logit_diff": ld, "total": float(norms.sum())}, {"prompts": extra})


def tiny_config(**overrides) -> ExperimentConfig:
    """A random:tiny experiment that trains and analyses in seconds."""
    fields = dict(model="random:tiny", epochs=2, checkpoint_epochs=(1,), lr=1e-3, batch_size=8,
                  train_size=32, eval_size=16, analysis_size=8, analyses=(TOY,))  # fmt: skip
    return ExperimentConfig(**fields | overrides)


def worker_env(monkeypatch) -> None:
    """Let background workers import the toy analysis, on one thread each; the job daemon each
    test's cache root gets exits 5 s after its last job, not 10 minutes."""
    here = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("IOI_ANALYSIS_MODULES", "jobs_support")
    monkeypatch.setenv("IOI_JOB_THREADS", "1")
    monkeypatch.setenv("IOI_JOB_DAEMON_IDLE", "5")


def final_weights(root: Path, exp_id: str, epoch: int) -> dict[str, torch.Tensor]:
    folder = root / "experiments" / exp_id / "checkpoints" / f"epoch-{epoch:03d}"
    return load_file(str(folder / "model.safetensors"))
