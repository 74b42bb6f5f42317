"""Toxic datasets: a registry of named corruptions, each a function sample -> sample (METHODS §2).

The paper names three toxic datasets without publishing their construction; these are the
project's reading of them. Add your own with::

    @register_corruption("my_corruption", "one line saying what it does")
    def my_corruption(sample: IOISample, rng: random.Random) -> IOISample: ...
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ioi.task.data import DatasetError, IOISample, make_dataset, render
from ioi.task.names import TRAIN_NAMES

CorruptionFn = Callable[[IOISample, random.Random], IOISample]


@dataclass(frozen=True)
class Corruption:
    """A named corruption with a one-line description and the paper's reported effect."""

    name: str
    description: str
    fn: CorruptionFn


CORRUPTIONS: dict[str, Corruption] = {}


def register_corruption(name: str, description: str) -> Callable[[CorruptionFn], CorruptionFn]:
    """Decorator adding a corruption to the registry under `name`."""

    def add(fn: CorruptionFn) -> CorruptionFn:
        CORRUPTIONS[name] = Corruption(name, description, fn)
        return fn

    return add


def get_corruption(name: str) -> Corruption:
    """The registered corruption `name`; DatasetError listing the known names otherwise."""
    try:
        return CORRUPTIONS[name]
    except KeyError:
        raise DatasetError(f"unknown corruption {name!r}; known: {', '.join(sorted(CORRUPTIONS))}") from None


def corrupt(samples: Sequence[IOISample], name: str, seed: int = 0) -> list[IOISample]:
    """Apply corruption `name` to every sample, deterministically for `seed`."""
    fn = get_corruption(name).fn
    rng = random.Random(f"corrupt:{name}:{seed}")
    return [replace(fn(x, rng), kind=name) for x in samples]


@register_corruption(
    "name_moving",
    "label is a third name absent from the prompt (paper: S-inhibition heads come to suppress IO and S)",
)
def name_moving(sample: IOISample, rng: random.Random) -> IOISample:
    # the third name comes from the fine-tuning names: evaluation's held-out names stay unseen
    third = rng.choice([n for n in TRAIN_NAMES if n not in (sample.io, sample.s, sample.s2)])
    return replace(sample, label=third)


@register_corruption(
    "subject_duplication",
    "label is S, the repeated subject (paper: name movers and negative name movers invert)",
)
def subject_duplication(sample: IOISample, rng: random.Random) -> IOISample:
    return replace(sample, label=sample.s)


@register_corruption(
    "duplication",
    "S2 is replaced by IO, label is S: a role-swapped IOI prompt (paper: ineffective corruption)",
)
def duplication(sample: IOISample, rng: random.Random) -> IOISample:
    if sample.template < 0:
        raise DatasetError("the duplication corruption needs templated prompts (template >= 0)")
    y = render(
        sample.template, sample.order, sample.io, sample.s, sample.io, sample.place, sample.obj,
        label=sample.s,
    )  # fmt: skip
    return y


def training_samples(scenario: str, seed: int, train_size: int) -> list[IOISample]:
    """A fine-tuning scenario's training samples (fine-tuning names only): clean for clean and
    reversal, corrupted for a toxic one. Torch-free, so a submit can hash them (the experiment id)."""
    clean = make_dataset(train_size, seed, "train", names=TRAIN_NAMES)
    return clean if scenario in ("clean", "reversal") else corrupt(clean, scenario, seed)


def readable(text: str) -> str:
    """`text` with every toxic dataset's name written in words ("subject_duplication" →
    "subject duplication"), for sentences shown to a reader."""
    for name in sorted(CORRUPTIONS, key=len, reverse=True):
        text = text.replace(name, name.replace("_", " "))
    return text
