"""The defaults every entry point shares, importable without torch so that `ioi --help` answers at once.

The modules that use a default import it from here (one definition each); the CLI's help and the
dashboard's forms read the same values.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEFAULT_MODEL = "ioi-tiny"
DEFAULT_TRAIN_SIZE = 6360
DEFAULT_EVAL_SIZE = 500
DEFAULT_ANALYSES: tuple[str, ...] = ("dla", "faithfulness", "circuit-tests", "knockout", "cmap")
"""Run at every checkpoint unless an experiment names its own list ("metrics" always runs)."""
TOXIC_DATASETS: tuple[str, ...] = ("name_moving", "subject_duplication", "duplication")
"""The names `ioi.task.corruptions` registers, written here for help texts (a test keeps them equal)."""
SCENARIOS: tuple[str, ...] = ("clean", *TOXIC_DATASETS, "reversal")


class SettingError(ValueError):
    """An `IOI_*` environment variable that cannot be used; the message names it."""


def env_count(name: str, default: int) -> int:
    """$`name` as a whole number of at least 1 (unset or empty: `default`); SettingError otherwise,
    never a silent substitute."""
    import os

    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not (text.isdigit() and int(text) >= 1):
        raise SettingError(f"{name} must be a whole number of at least 1, got {text!r}")
    return int(text)


def torch_threads() -> int:
    """Torch threads of a process that trains or analyses, direct command or job alike:
    $IOI_JOB_THREADS, default 1. Torch's own default (one per core) thrashes on a shared CPU: on 2
    busy cores a direct `finetune` ran 0.3 steps/s with it, 8.2 with one (BENCHMARKS.md)."""
    return env_count("IOI_JOB_THREADS", 1)


PAPER_LR = 1e-5
"""The paper's fine-tuning learning rate for GPT-2 (METHODS §3)."""
MODEL_LR = {"ioi-tiny": 1e-4}
"""Models that learn the task's shifts too slowly at the paper's rate; ioi-tiny's demo cache used 1e-4."""


def default_lr(model: str) -> float:
    """The fine-tuning learning rate a run of `model` gets unless told otherwise."""
    return MODEL_LR.get(model, PAPER_LR)


def lr_text(lr: float) -> str:
    """A learning rate as people write it: 1e-4, not 0.0001."""
    return f"{lr:.0e}".replace("e-0", "e-") if lr == float(f"{lr:.0e}") else f"{lr:g}"


def lr_help(model_flag: str = "--model") -> str:
    """The sentence the CLI's `--help` and the dashboard's form say about the default lr."""
    per_model = ", ".join(f"{m} {lr_text(lr)}" for m, lr in MODEL_LR.items())
    paper = lr_text(PAPER_LR)
    return f"learning rate (default per {model_flag}: {per_model}; other models {paper}, the paper's)"
