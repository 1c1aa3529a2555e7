"""Known-answer tests of the confidence intervals in skill_lens.base.stats."""

import math

import pytest
import torch

from skill_lens.base.stats import StatsError, paired_bootstrap_gap, wilson_interval


def test_wilson_matches_published_values():
    low, high = wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and round(high, 3) == 0.278
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and round(low, 3) == 0.722
    low, high = wilson_interval(50, 100, level=0.99)  # wider at a higher level
    assert (round(low, 3), round(high, 3)) == (0.375, 0.625)


def test_wilson_covers_p_at_about_the_nominal_rate():
    gen = torch.Generator().manual_seed(0)
    p, n, reps = 0.3, 50, 2000
    counts = torch.binomial(torch.full((reps,), float(n)), torch.full((reps,), p), generator=gen).long().tolist()
    covered = sum(lo <= p <= hi for lo, hi in (wilson_interval(k, n) for k in counts)) / reps
    assert 0.93 <= covered <= 0.97  # Wilson's coverage at n=50, p=0.3 is close to 95%; 2000 reps: s.e. 0.005


def test_wilson_refuses_bad_counts():
    with pytest.raises(StatsError, match="successes <= n"):
        wilson_interval(11, 10)
    with pytest.raises(StatsError, match="level"):
        wilson_interval(1, 10, level=1.5)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def _synthetic(gen, n, p_skill, p_random, draws, m):
    skill = torch.rand(draws, n, generator=gen) < p_skill
    random = torch.rand(m, n, generator=gen) < p_random
    return skill, random


def test_paired_bootstrap_gap_is_the_mean_difference():
    skill = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    random = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    gap, low, high = paired_bootstrap_gap(skill, random, bootstrap=500, seed=1)
    assert gap == pytest.approx(0.75 - 0.375)
    assert low <= gap <= high and low < high
    assert paired_bootstrap_gap(skill, random, bootstrap=500, seed=1) == (gap, low, high)  # seeded


def test_paired_bootstrap_interval_covers_the_true_gap_at_about_95_percent():
    # examples differ in difficulty (shared across sets: the pairing matters); true gap = 0.7 - 0.5 = 0.2
    gen = torch.Generator().manual_seed(0)
    reps, n, covered, widths = 200, 200, 0, []
    for rep in range(reps):
        skill, random = _synthetic(gen, n, 0.5, 0.7, draws=2, m=3)
        gap, low, high = paired_bootstrap_gap(skill, random, bootstrap=400, seed=rep)
        covered += low <= 0.2 <= high
        widths.append(high - low)
    # binomial s.e. of coverage at 200 reps is ~0.015: [0.88, 0.99] is ~4.5 s.e. below and 2.7 above 0.95
    assert 0.88 <= covered / reps <= 0.99
    assert 0.05 < sum(widths) / reps < 0.25  # an interval of the right scale, not [-1, 1]


def test_paired_bootstrap_misses_a_wrong_gap():
    gen = torch.Generator().manual_seed(1)
    skill, random = _synthetic(gen, 200, 0.5, 0.7, draws=1, m=3)
    gap, low, high = paired_bootstrap_gap(skill, random)
    assert not low <= 0.0 <= high  # a 0.2 gap on 200 examples is far from zero


def test_paired_bootstrap_without_controls_is_nan_and_refuses_bad_shapes():
    skill = torch.ones(1, 5, dtype=torch.bool)
    assert all(math.isnan(x) for x in paired_bootstrap_gap(skill, torch.zeros(0, 5, dtype=torch.bool)))
    with pytest.raises(StatsError, match="same n"):
        paired_bootstrap_gap(skill, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(StatsError, match="bootstrap"):
        paired_bootstrap_gap(skill, skill, bootstrap=0)
