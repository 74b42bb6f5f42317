"""Intervals for every number a conclusion uses: paired bootstrap over prompts, spread over seeds,
and guarded ratios (METHODS §5, §8).

Paired: every quantity compared, summed or divided is resampled with the *same* prompt indices, so
an interval of a ratio or a difference keeps the correlation between its parts. A ratio whose
denominator is near 0 (a model that no longer does the task) is undefined: NaN with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

N_BOOT = 1000
LEVEL = 0.95
MIN_DENOMINATOR = 0.5
"""Logits. A ratio F(C)/F(M), or a share of a gap, is undefined when |F(M)| (the gap) is below this
or its interval reaches 0: the logit differences themselves are reported instead."""
NO_TASK = "not defined: F(M) ≈ 0"
"""How a ratio over F(M) is marked where the model does not do the task (:func:`ratio_defined`)."""


@dataclass(frozen=True)
class Estimate:
    """A number with its 95% interval; `over` says what the interval is over; a NaN value comes
    with the `reason` it is undefined."""

    value: float
    lo: float
    hi: float
    over: str
    reason: str = ""

    @property
    def defined(self) -> bool:
        return not math.isnan(self.value)

    def excludes(self, x: float = 0.0) -> bool:
        """Whether the interval lies wholly on one side of `x`."""
        return self.defined and (self.lo > x or self.hi < x)

    def columns(self, name: str) -> dict[str, float]:
        """{name, name_lo, name_hi}: the estimate as table columns."""
        return {name: self.value, f"{name}_lo": self.lo, f"{name}_hi": self.hi}

    def to_json(self) -> dict:
        return {"value": self.value, "lo": self.lo, "hi": self.hi, "over": self.over, "reason": self.reason}

    @classmethod
    def undefined(cls, reason: str, over: str = "") -> Estimate:
        return cls(math.nan, math.nan, math.nan, over, reason)


def resample_indices(n: int, *, n_boot: int = N_BOOT, seed: int = 0) -> torch.Tensor:
    """[n_boot, n] prompt indices drawn with replacement; one draw for every quantity compared."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(n, (n_boot, n), generator=gen)


def bootstrap_means(values: torch.Tensor, *, n_boot: int = N_BOOT, seed: int = 0) -> torch.Tensor:
    """[n_boot, ...] means over the last (prompt) axis of `values` [..., batch]; the same
    resample (same `seed`, same batch size) for every leading entry and every call. NaN from one
    prompt: it has no spread to resample, and a zero-width interval would claim certainty."""
    idx = resample_indices(values.shape[-1], n_boot=n_boot, seed=seed)
    means = values.cpu().double()[..., idx].mean(-1).movedim(-1, 0)
    return means if values.shape[-1] > 1 else torch.full_like(means, math.nan)


def interval(samples: torch.Tensor, level: float = LEVEL) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile interval over axis 0 of bootstrap samples (NaN samples ignored)."""
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=samples.dtype)
    low, high = torch.nanquantile(samples, q, dim=0)
    return low, high


def _over(n: int) -> str:
    return f"prompts (paired bootstrap, n={n})"


def mean_estimate(per_prompt: torch.Tensor, *, n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """Mean over prompts of `per_prompt` [batch] with its bootstrap interval."""
    boot = bootstrap_means(per_prompt, n_boot=n_boot, seed=seed)
    lo, hi = interval(boot)
    return Estimate(per_prompt.double().mean().item(), lo.item(), hi.item(), _over(per_prompt.numel()))


def ratio_defined(
    denominator: torch.Tensor,
    *,
    min_abs: float = MIN_DENOMINATOR,
    seed: int = 0,
    meaning: str = "the model does not do the task",
) -> str:
    """'' if mean(`denominator` [batch]) is a usable denominator, else why not (`meaning` says
    what a small one means)."""
    mean = denominator.double().mean().item()
    if abs(mean) < min_abs:
        return f"|denominator| = {abs(mean):.3f} < {min_abs} logits: {meaning}"
    lo, hi = interval(bootstrap_means(denominator, seed=seed))
    if lo.item() <= 0 <= hi.item():
        return f"the denominator's interval [{lo.item():.3f}, {hi.item():.3f}] contains 0"
    return ""


def ratio_estimate(
    numerator: torch.Tensor,
    denominator: torch.Tensor,
    *,
    min_abs: float = MIN_DENOMINATOR,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Estimate:
    """mean(numerator) / mean(denominator) over the same prompts ([batch] each), paired bootstrap;
    undefined (NaN + reason) when the denominator is not usable (:func:`ratio_defined`)."""
    over = _over(numerator.numel())
    reason = ratio_defined(denominator, min_abs=min_abs, seed=seed)
    if reason:
        return Estimate.undefined(reason, over)
    num = bootstrap_means(numerator, n_boot=n_boot, seed=seed)
    den = bootstrap_means(denominator, n_boot=n_boot, seed=seed)
    lo, hi = interval(num / den)
    value = numerator.double().mean().item() / denominator.double().mean().item()
    return Estimate(value, lo.item(), hi.item(), over)


def ratio_intervals(
    numerators: torch.Tensor, denominator: torch.Tensor, *, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(value, lo, hi) [...] of mean(numerators[..., batch]) / mean(denominator [batch]), paired."""
    num = bootstrap_means(numerators, n_boot=n_boot, seed=seed)
    den = bootstrap_means(denominator, n_boot=n_boot, seed=seed).view(-1, *[1] * (num.dim() - 1))
    lo, hi = interval(num / den)
    return numerators.double().mean(-1) / denominator.double().mean(), lo, hi


# two-sided 97.5% quantiles of Student's t for n − 1 degrees of freedom (n = 2 … 10 seeds)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def across_seeds(values: Sequence[float]) -> Estimate:
    """Mean over training seeds with a t interval (mean ± t·sd/√n); undefined below 2 seeds or
    when a seed's value is undefined."""
    over = f"seeds (n={len(values)})"
    if len(values) < 2:
        return Estimate.undefined("fewer than 2 seeds", over)
    if any(math.isnan(v) for v in values):
        return Estimate.undefined("undefined on at least one seed", over)
    x = torch.tensor(list(values), dtype=torch.float64)
    n = len(values)
    half = _T975.get(n - 1, 1.96) * x.std().item() / math.sqrt(n)
    return Estimate(x.mean().item(), x.mean().item() - half, x.mean().item() + half, over)


def difference_estimate(a: torch.Tensor, b: torch.Tensor, *, n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """mean(a) − mean(b) of two independent prompt sets ([n_a], [n_b]), each resampled on its own."""
    boot = bootstrap_means(a, n_boot=n_boot, seed=seed) - bootstrap_means(b, n_boot=n_boot, seed=seed + 1)
    lo, hi = interval(boot)
    over = f"prompts (bootstrap of two independent sets, n={a.numel()} and {b.numel()})"
    return Estimate(a.double().mean().item() - b.double().mean().item(), lo.item(), hi.item(), over)
