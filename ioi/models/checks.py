"""Cheap checks of what a user asks of a model (no torch, no weights read): its name, its epochs, sizes.

Submitting a job runs them so that a typo is refused at once instead of failing in the background
worker; `ioi.models.load` and `ioi.models.train` are what actually load and train.
"""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path

from ioi.task.data import MAX_PROMPTS
from ioi.task.defaults import ASSETS


def _hf_offline() -> bool:
    # ioi.models.load sets HF_HUB_OFFLINE=1 unless the user chose otherwise; the same default here.
    return os.environ.get("HF_HUB_OFFLINE", "1") not in ("0", "false", "False")


BUNDLED = {"ioi-tiny": "pretrain-tiny", "ioi-small": "pretrain-small"}
"""Bundled model name (a folder of ioi/assets) -> the subcommand that rebuilds it."""
RANDOM_MODELS = ("random:gpt2", "random:tiny", "random:pythia")
"""The seeded random architectures `ioi.models.load` builds."""


def model_problem(name: str) -> str | None:
    """None when `name` is loadable as far as a cheap check can tell: a bundled model, a
    ``random:*`` architecture, a directory with a config.json, or a HuggingFace name (when offline,
    only one whose config is in the local HF cache). Otherwise a sentence saying what is wrong."""
    if name.startswith("random:"):
        return None if name in RANDOM_MODELS else unknown_random(name)
    path = ASSETS / name if name in BUNDLED else Path(name).expanduser()
    if path.is_dir():
        return (
            None if (path / "config.json").exists() else f"{path} is not a model directory (no config.json)"
        )
    if name in BUNDLED:
        return f"the bundled {name} model is missing; rebuild it with `ioi {BUNDLED[name]}`"
    if path.exists():
        return f"{path} is a file, not a model directory"
    if name.startswith(("/", ".", "~")):
        return f"model directory {path} does not exist"
    if not _hf_offline():
        return None
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except HFValidationError:
        cached = None
    if isinstance(cached, str):
        return None
    return (
        f"model {name!r} is neither a directory, a bundled model ({', '.join(BUNDLED)}), random:* nor "
        f"in the local HuggingFace cache (offline); {did_you_mean(name)}download it once with "
        "HF_HUB_OFFLINE=0 or give a local directory"
    )


def did_you_mean(name: str) -> str:
    """'did you mean 'ioi-small'? Else ' when `name` looks like a misspelt bundled, random or
    GPT-2 name ("IOI-small", "ioi_tiny"), else ''; put before the advice for a hub name."""
    known = [n for n in (*BUNDLED, *RANDOM_MODELS, "gpt2") if n != name]
    close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.75)
    return f"did you mean {close[0]!r}? Else " if close else ""


def unknown_random(name: str) -> str:
    return f"unknown random model {name!r}; known: {', '.join(RANDOM_MODELS)}"


class TrainingError(ValueError):
    """A fine-tuning request that cannot run as asked; the message says why."""


def _whole_numbers(text: str, what: str, example: str) -> list[int]:
    """ "1, 3 5" -> [1, 3, 5] in the order written; TrainingError naming `what` for a non-integer."""
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise TrainingError(
            f"write {what} as whole numbers separated by commas, e.g. {example} (got {text!r})"
        ) from None


def parse_epochs(text: str, epochs: int | None = None) -> tuple[int, ...]:
    """ "1, 3 5" -> (1, 3, 5), sorted and unique; TrainingError for a non-integer, or with `epochs`
    for an epoch outside 1..epochs."""
    values = tuple(sorted(set(_whole_numbers(text, "checkpoint epochs", "1, 3, 5"))))
    bad = [v for v in values if epochs is not None and not 1 <= v <= epochs]
    if bad:
        raise TrainingError(f"checkpoint epochs {list(bad)} are outside 1..{epochs} (the number of epochs)")
    return values


def parse_seeds(text: str) -> tuple[int, ...]:
    """ "0, 1 2" -> (0, 1, 2): training seeds in the order written (a study's first seed is its main
    one), each once; TrainingError for a non-integer or an empty list."""
    values = tuple(dict.fromkeys(_whole_numbers(text, "seeds", "0, 1, 2")))
    if not values:
        raise TrainingError("give at least one seed, e.g. --seeds 0 or --seeds 0,1,2")
    return values


MAX_EPOCHS = 10_000
MAX_BATCH = 4096


def check_bounds(epochs: int, batch_size: int, **sizes: int) -> None:
    """TrainingError unless epochs, batch size and the dataset sizes (by name) are within the caps
    that keep a mistyped number from grinding the machine (MAX_EPOCHS, MAX_BATCH, MAX_PROMPTS)."""
    if not 1 <= epochs <= MAX_EPOCHS:
        raise TrainingError(f"epochs must be from 1 to {MAX_EPOCHS:,}, got {epochs}")
    if not 1 <= batch_size <= MAX_BATCH:
        raise TrainingError(f"batch size must be from 1 to {MAX_BATCH:,}, got {batch_size}")
    for name, size in sizes.items():
        if not 1 <= size <= MAX_PROMPTS:
            what = name.replace("_", " ")
            raise TrainingError(f"{what} must be at least 1 and at most {MAX_PROMPTS:,}, got {size}")


def check_optimizer(lr: float, weight_decay: float) -> None:
    """TrainingError unless the learning rate is a positive number and the weight decay a
    non-negative one (NaN and infinity are neither)."""
    if not (math.isfinite(lr) and lr > 0):
        raise TrainingError(f"the learning rate must be a positive number, got {lr}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise TrainingError(f"the weight decay must be a number >= 0, got {weight_decay}")
