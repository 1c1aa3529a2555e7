"""Confidence intervals: :func:`wilson_interval` for an accuracy, :func:`paired_bootstrap_gap` for the
accuracy gap between perturbed neuron sets scored on the same examples.

Pure statistics on counts and per-example correctness; no model runs here.

>>> lo, hi = wilson_interval(8, 10)
>>> round(lo, 3), round(hi, 3)
(0.49, 0.943)
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch
from jaxtyping import Bool
from torch import Tensor

__all__ = ["StatsError", "wilson_interval", "paired_bootstrap_gap"]


class StatsError(ValueError):
    """Invalid input to an interval (counts, level, shapes)."""


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise StatsError(f"level must be in (0, 1), got {level}; pass e.g. 0.95 for a 95% interval.")


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion ``successes / n`` at confidence ``level``.

    Unlike the normal (Wald) interval it stays inside [0, 1] and is not empty at 0 or n successes.
    ``n == 0`` gives ``(0.0, 1.0)`` (nothing is known).

    >>> [round(x, 3) for x in wilson_interval(8, 10)]
    [0.49, 0.943]
    >>> wilson_interval(0, 10)[0]
    0.0
    """
    _check_level(level)
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise StatsError(f"need 0 <= successes <= n, got successes={successes}, n={n}; pass counts of correct "
                         "examples out of all examples.")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, center - half)  # exact at the ends (no rounding residue)
    return low, 1.0 if successes == n else min(1.0, center + half)


def paired_bootstrap_gap(skill: Bool[Tensor, "draws n"], random: Bool[Tensor, "m n"], bootstrap: int = 1000,
                         seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """The accuracy gap (mean accuracy of the ``random`` rows minus that of the ``skill`` rows) and its
    paired bootstrap percentile interval at ``level``.

    Each row is one evaluation's per-example correctness on the same ``n`` examples (skill: one row
    per noise draw; random: one per control and noise draw). Examples are resampled with replacement
    ``bootstrap`` times (seeded by ``seed``), the same indices for every row (paired); each resample's
    gap is the mean over random rows minus the mean over skill rows on those examples. With no
    random rows everything is NaN.

    >>> skill = torch.tensor([[1, 0, 0, 0]], dtype=torch.bool)
    >>> random = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    >>> gap, low, high = paired_bootstrap_gap(skill, random, bootstrap=200)
    >>> gap, low <= gap <= high
    (0.375, True)
    """
    _check_level(level)
    skill, random = torch.as_tensor(skill), torch.as_tensor(random)
    if skill.ndim != 2 or random.ndim != 2 or len(skill) == 0 or skill.shape[1] != random.shape[1] \
            or skill.shape[1] == 0:
        raise StatsError(f"skill [draws, n] and random [m, n] must be 2-d with the same n > 0 examples and at least "
                         f"one skill row, got {list(skill.shape)} and {list(random.shape)}.")
    if bootstrap < 1:
        raise StatsError(f"bootstrap must be >= 1 resamples, got {bootstrap}; pass e.g. 1000.")
    if len(random) == 0:
        return math.nan, math.nan, math.nan
    per_example = random.double().mean(0) - skill.double().mean(0)  # the gap is its mean over examples
    n = per_example.numel()
    idx = torch.randint(n, (bootstrap, n), generator=torch.Generator().manual_seed(seed))
    gaps = per_example[idx].mean(1)
    alpha = (1 - level) / 2
    low, high = torch.quantile(gaps, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return per_example.mean().item(), low, high
