"""The held-out name split: fine-tuning and evaluation use disjoint names (as the MIB benchmark
does), so memorised names cannot inflate a finding; the gap between them is reported (the
`metrics` entry of every checkpoint measures both)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ioi.task.data import NAMES, IOISample, make_dataset

if TYPE_CHECKING:  # torch and pandas only where metrics are measured: the dashboard imports this
    import pandas as pd

    from ioi.task.data import IOIBatch


def split_names(
    names: Sequence[str], held_out_share: float = 0.2
) -> tuple[tuple[str, ...], tuple[str, ...]]:
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


def evaluation_samples(seed: int, size: int) -> tuple[list[IOISample], list[IOISample]]:
    """(held-out-name samples, fine-tuning-name samples) of the eval split: experiments evaluate
    and analyse on names fine-tuning never saw and report the seen-name metrics beside them."""
    held = make_dataset(size, seed, "eval", names=HELD_OUT_NAMES)
    return held, make_dataset(size, seed, "eval", names=TRAIN_NAMES)


def name_split_metrics(model, held_out: IOIBatch, seen: IOIBatch) -> tuple[dict, pd.DataFrame]:
    """A checkpoint's metrics entry (`model` has `.bridge` and `.device`): task metrics on held-out
    names, `seen_*` on fine-tuning names, and the per-prompt logit differences of both (table
    columns names, logit_diff) for intervals."""
    import pandas as pd
    import torch

    from ioi.task.metrics import end_logits, logit_diff_per_prompt, task_metrics

    parts, rows = {}, []
    for split, batch in (("held-out", held_out), ("seen", seen)):
        with torch.no_grad():  # END logits only, in chunks: [batch, pos, vocab] is large on GPT-2
            chunks = [batch.subset(range(i, min(i + 128, len(batch)))) for i in range(0, len(batch), 128)]
            last = torch.cat([end_logits(model.bridge(c.tokens.to(model.device)), c) for c in chunks])
        parts[split] = task_metrics(last, batch).to_json()
        rows += [{"names": split, "logit_diff": x} for x in logit_diff_per_prompt(last, batch).tolist()]
    summary = parts["held-out"] | {f"seen_{k}": v for k, v in parts["seen"].items()}
    return summary | {"names": "held-out"}, pd.DataFrame(rows)


def analysis_samples(seed: int, analysis_size: int, eval_size: int = 0) -> list[IOISample]:
    """The prompts an experiment's analyses run on: the first `analysis_size` held-out-name
    samples of its evaluation set (of max(`eval_size`, `analysis_size`) prompts)."""
    return evaluation_samples(seed, max(eval_size, analysis_size))[0][:analysis_size]
