"""What replaces a knocked-out activation (METHODS §5): mean, per-template mean, zero or resample
over the ABC prompts. Below both the circuit tests (:mod:`ioi.methods.ablation`) and the class
tests (:mod:`ioi.methods.classify`, whose backup-name-mover test knocks the name movers out).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

import torch
from torch import Tensor

from ioi.methods.patching import Patch, position_mask
from ioi.task.circuit import Head
from ioi.task.data import IOIBatch


class AblationType(Enum):
    """What replaces an ablated activation."""

    MEAN = "mean"
    """Its mean over all ABC prompts at the same token index (padding excluded). Templates differ in
    length and layout, so one index mixes roles across templates."""
    MEAN_BY_TEMPLATE = "mean-by-template"
    """Its mean over the ABC prompts of the same template, position by position (IOI paper)."""
    ZERO = "zero"
    """Zero."""
    RESAMPLE = "resample"
    """Its value on another ABC prompt of the same template, drawn at random (seeded)."""

    @classmethod
    def parse(cls, value: AblationType | str) -> AblationType:
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower().replace("_", "-"))
        except ValueError:
            known = ", ".join(a.value for a in cls)
            raise ValueError(f"unknown ablation {value!r}; known: {known}") from None


DEFAULT_ABLATION = AblationType.MEAN_BY_TEMPLATE


def ablation_values(x_abc: Tensor, abc: IOIBatch, ablation: AblationType, seed: int = 0) -> Tensor:
    """Replacement values with the shape of `x_abc` ([layer, batch, pos, ...], from the ABC run):
    row i holds what prompt i's activation becomes when ablated."""
    if ablation is AblationType.ZERO:
        return torch.zeros_like(x_abc)
    groups = abc.group.to(x_abc.device)
    if ablation is AblationType.MEAN:
        valid = (
            torch.arange(x_abc.shape[2], device=x_abc.device)[None, :] <= abc.end.to(x_abc.device)[:, None]
        )
        valid = valid.reshape(1, *valid.shape, *([1] * (x_abc.dim() - 3))).to(x_abc.dtype)
        mean = (x_abc * valid).sum(1) / valid.sum(1).clamp(min=1)
        return mean[:, None].expand_as(x_abc).clone()
    out = torch.empty_like(x_abc)
    gen = torch.Generator().manual_seed(seed)
    for g in groups.unique():
        rows = (groups == g).nonzero().flatten()
        if ablation is AblationType.MEAN_BY_TEMPLATE:
            out[:, rows] = x_abc[:, rows].mean(1, keepdim=True)
        else:  # RESAMPLE: a derangement within the template where it has two prompts or more
            shift = torch.randint(1, len(rows), (1,), generator=gen).item() if len(rows) > 1 else 0
            perm = torch.randperm(len(rows), generator=gen)
            source = perm.roll(shift)
            out[:, rows[perm]] = x_abc[:, rows[source]]
    return out


def knockout_patches(
    values: Tensor, heads: Iterable[Head], clean: IOIBatch, position: str | None = None
) -> list[Patch]:
    """Patches ablating `heads` at `position` (None: every position)."""
    where = position_mask(clean, position)
    return [Patch(h.layer, h.head, values[h.layer, :, :, h.head], where) for h in heads]


