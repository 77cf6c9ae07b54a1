"""Minimum detectable effect (stats.minimum_detectable_effect) against closed forms and against the
paired bootstrap that decides the report's marks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nebula_utils.report.compare import stratified_mean
from nebula_utils.stats import Z95, mde_of_mean, minimum_detectable_effect, paired_bootstrap


def pair(n: int, p_base: float, p_new: float, keep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ease = rng.random(n)
    later = np.where(rng.random(n) < keep, ease, rng.random(n))
    return (ease < p_base).astype(float), (later < p_new).astype(float)


def test_paired_mde_is_the_normal_half_width_of_the_paired_interval():
    a, b = pair(400, 0.4, 0.45, keep=0.6, seed=1)
    power = minimum_detectable_effect(a, b)
    d = b - a
    assert power.basis == "paired" and power.n == 400
    assert power.mde == pytest.approx(Z95 * d.std() / math.sqrt(400))
    # 0/1 items: var(d) = p01 + p10 - (p01 - p10)^2, carried by the discordant pairs alone
    p01, p10 = np.mean((a == 0) & (b == 1)), np.mean((a == 1) & (b == 0))
    assert power.sd**2 == pytest.approx(p01 + p10 - (p01 - p10) ** 2)
    boot = paired_bootstrap(a, b, resamples=4000)
    assert (boot.high - boot.low) / 2 == pytest.approx(power.mde, rel=0.1)


def test_identical_runs_use_the_uncorrelated_bound_and_all_zero_runs_the_floor():
    a, _ = pair(100, 0.3, 0.3, keep=1.0, seed=2)
    same = minimum_detectable_effect(a, a.copy())
    p = a.mean()
    assert same.basis == "unpaired bound"
    assert same.mde == pytest.approx(Z95 * math.sqrt(2 * p * (1 - p) / 100))
    assert minimum_detectable_effect(a) == same  # b=None sizes a rerun of the same items
    zeros = minimum_detectable_effect(np.zeros(24), np.zeros(24))  # tiny-random scores 0 everywhere
    assert zeros.basis == "floor" and zeros.mde == pytest.approx(Z95**2 / (24 + Z95**2))


@pytest.mark.parametrize("n", [24, 120, 400])
def test_floor_matches_the_bootstrap_k_items_flipping_one_way(n):
    """k of n items gained and none lost: flat for k = 3, up for k = 4, and the MDE lies between."""
    base = np.zeros(n)
    marks = {}
    for k in (3, 4):
        new = base.copy()
        new[:k] = 1.0
        marks[k] = paired_bootstrap(base, new, resamples=4000).contains_zero()
        power = minimum_detectable_effect(base, new)
        assert power.basis in ("floor", "paired")
    assert marks == {3: True, 4: False}
    assert 3 / n < Z95**2 / (n + Z95**2) < 4 / n


def test_flat_mark_agrees_with_the_mde_across_many_comparisons():
    """|delta| < MDE <=> the bootstrap interval contains 0, in >= 90% of 200 random comparisons
    (the bootstrap is a percentile interval, the MDE its normal approximation)."""
    agree = 0
    for seed in range(200):
        a, b = pair(60, 0.4, 0.4 + 0.002 * (seed % 50), keep=0.7, seed=seed)
        power, boot = minimum_detectable_effect(a, b), paired_bootstrap(a, b, resamples=500, seed=seed)
        agree += (abs(b.mean() - a.mean()) < power.mde) == boot.contains_zero()
    assert agree >= 180


def test_average_mde_matches_the_stratified_bootstrap_half_width():
    pairs = [pair(150, p, p + 0.05, keep=0.6, seed=s) for s, p in enumerate((0.2, 0.4, 0.6))]
    mdes = [minimum_detectable_effect(a, b).mde for a, b in pairs]
    combined = mde_of_mean(mdes)
    assert combined == pytest.approx(math.sqrt(sum(m * m for m in mdes)) / 3)
    boot = stratified_mean([b - a for a, b in pairs], resamples=4000)
    assert (boot.high - boot.low) / 2 == pytest.approx(combined, rel=0.1)
    assert math.isnan(mde_of_mean([]))


def test_items_for_target_scales_with_the_inverse_square():
    a, b = pair(200, 0.35, 0.5, keep=0.7, seed=5)
    power = minimum_detectable_effect(a, b)
    need = power.items_for(power.mde / 2)
    assert need == pytest.approx(4 * 200, rel=0.01)
    assert minimum_detectable_effect(np.zeros(10)).items_for(0.05) == math.ceil(Z95**2 * 0.95 / 0.05)


def test_unpaired_shapes_and_empty_input():
    with pytest.raises(ValueError, match="same items: 3 vs 2"):
        minimum_detectable_effect([1, 0, 1], [1, 0])
    empty = minimum_detectable_effect([], [])
    assert empty.n == 0 and math.isnan(empty.mde) and empty.items_for(0.05) == 0
