"""Circuits: named head classes, the published GPT-2 small IOI circuit, and head notation.

Heads are written ``L.H`` (layer.head), e.g. ``9.9``. A circuit maps each IOI head class to its
heads; a circuit found by the analysis code on any model has the same type as the published one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple


class Head(NamedTuple):
    layer: int
    head: int

    def __str__(self) -> str:
        return f"{self.layer}.{self.head}"

    @classmethod
    def parse(cls, text: str) -> Head:
        """'9.9' -> Head(9, 9); ValueError with the expected form otherwise."""
        try:
            layer, head = (int(x) for x in text.strip().split("."))
        except ValueError:
            raise ValueError(f"a head is written L.H (e.g. 9.9), got {text!r}") from None
        return cls(layer, head)


# The IOI classes, in the order of the circuit (downstream first), with the token position at
# which each class acts (METHODS §5: the position where a circuit head is kept under knockout).
CLASS_POSITIONS: dict[str, str] = {
    "name mover": "end",
    "backup name mover": "end",
    "negative name mover": "end",
    "s-inhibition": "end",
    "induction": "s2",
    "duplicate token": "s2",
    "previous token": "s1+1",
    "other heads carrying the effect": "end",
}
OTHER = "other heads carrying the effect"
"""Heads that carry the model's effect without passing an IOI class test (METHODS §5: a circuit is
every head that carries the effect); kept at END, where their direct or path effect is measured."""


@dataclass(frozen=True)
class Circuit:
    """Head classes of a circuit; `source` says where it came from (published, discovered, …)."""

    name: str
    classes: dict[str, tuple[Head, ...]]
    source: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def heads(self) -> tuple[Head, ...]:
        return tuple(h for hs in self.classes.values() for h in hs)

    @property
    def empty_classes(self) -> tuple[str, ...]:
        """The IOI classes (circuit order) in which no head met the criteria."""
        return tuple(c for c in CLASS_POSITIONS if c != OTHER and not self.classes.get(c))

    def class_of(self, head: Head) -> str | None:
        return next((c for c, hs in self.classes.items() if head in hs), None)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "classes": {c: [str(h) for h in hs] for c, hs in self.classes.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> Circuit:
        """The circuit `to_json` wrote (or any object with a `classes` map of class -> ["L.H", …],
        such as `ioi analyze classify --out`'s); ValueError saying what is wrong otherwise."""
        classes = data.get("classes") if isinstance(data, dict) else None
        if not isinstance(classes, dict):
            raise ValueError('a circuit is a JSON object with "classes": {"name mover": ["9.9", …], …}')
        listed = {
            c: isinstance(hs, list) and all(isinstance(h, str) for h in hs) for c, hs in classes.items()
        }
        if bad := [c for c, ok in listed.items() if not ok]:
            raise ValueError(
                f'circuit class {bad[0]!r}: give its heads as a list of "L.H" strings, e.g. ["9.9"]'
            )
        if unknown := [c for c in classes if c not in CLASS_POSITIONS]:
            # A misspelt class would be knocked out at the wrong positions, so it is refused.
            near = difflib.get_close_matches(unknown[0], CLASS_POSITIONS, n=1, cutoff=0.6)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(
                f"unknown circuit class {unknown[0]!r}{hint}; the classes are "
                + ", ".join(repr(c) for c in CLASS_POSITIONS)
            )
        parsed = {c: tuple(Head.parse(h) for h in hs) for c, hs in classes.items()}
        return cls(str(data.get("name", "given circuit")), parsed, str(data.get("source", "")))


def _heads(text: str) -> tuple[Head, ...]:
    return tuple(Head.parse(h) for h in text.split())


def parse_heads(value, n_layers: int | None = None, n_heads: int | None = None) -> tuple[Head, ...]:
    """Heads from "9.9 9.6,10.0" or a list of "L.H" strings / Heads; with a model's size, refuses
    heads it does not have."""
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list | tuple):
        raise ValueError(f"heads are given as text like '9.9 10.0', got {value!r}")
    heads = tuple(h if isinstance(h, Head) else Head.parse(str(h)) for h in value)
    if n_layers is not None:
        bad = [str(h) for h in heads if not (0 <= h.layer < n_layers and 0 <= h.head < (n_heads or 0))]
        if bad:
            raise ValueError(
                f"heads {', '.join(bad)} are outside this model ({n_layers} layers × {n_heads} heads; "
                f"they are numbered from 0.0 to {n_layers - 1}.{(n_heads or 1) - 1})"
            )
    return heads


def check_layers(layers: Iterable[int], n_layers: int) -> tuple[int, ...]:
    """`layers` (MLP or block numbers) as a tuple; ValueError naming those a model of `n_layers` lacks."""
    layers = tuple(layers)
    bad = [str(layer) for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"layers {', '.join(bad)} are outside this model (its {n_layers} layers are "
                         f"numbered 0 to {n_layers - 1})")  # fmt: skip
    return layers


GPT2_SMALL_CIRCUIT = Circuit(
    name="GPT-2 small IOI circuit",
    source="Wang et al. 2022 (arXiv 2211.00593), 26 heads",
    classes={
        "name mover": _heads("9.9 9.6 10.0"),
        "backup name mover": _heads("10.10 10.6 10.2 10.1 11.2 9.7 9.0 11.9"),
        "negative name mover": _heads("10.7 11.10"),
        "s-inhibition": _heads("7.3 7.9 8.6 8.10"),
        "induction": _heads("5.5 5.8 5.9 6.9"),
        "duplicate token": _heads("0.1 0.10 3.0"),
        "previous token": _heads("2.2 4.11"),
    },
)
