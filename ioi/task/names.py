"""The held-out name split: fine-tuning and evaluation use disjoint names (as the MIB benchmark
does), so memorised names cannot inflate a finding; the gap between them is reported."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ioi.task.data import NAMES


def split_names(names: Sequence[str], held_out_share: float = 0.2) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(fine-tuning names, held-out names): a stable hash orders the names and the first
    `held_out_share` of them are held out, so fine-tuning never sees the names evaluation uses
    (as the MIB benchmark does) and memorised names cannot inflate a finding."""
    key = lambda n: hashlib.blake2b(f"name-split:{n}".encode(), digest_size=8).digest()  # noqa: E731
    ranked = sorted(dict.fromkeys(names), key=key)
    cut = round(len(ranked) * held_out_share)
    held = set(ranked[:cut])
    return tuple(n for n in names if n not in held), tuple(n for n in names if n in held)


TRAIN_NAMES, HELD_OUT_NAMES = split_names(NAMES)
"""Fine-tuning uses TRAIN_NAMES (80 names); experiments evaluate and analyse on HELD_OUT_NAMES (20)."""
