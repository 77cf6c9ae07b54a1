"""The bootstrap against closed forms: a normal-approximation interval and exact degenerate cases."""

import math

import numpy as np

from nebula_utils.stats import bootstrap_mean, paired_bootstrap


def test_bootstrap_matches_normal_approximation_for_bernoulli():
    rng = np.random.default_rng(1)
    x = (rng.random(400) < 0.3).astype(float)
    est = bootstrap_mean(x, resamples=4000, seed=0)
    p = x.mean()
    half = 1.96 * math.sqrt(p * (1 - p) / x.size)  # closed-form Wald half-width
    assert est.value == p
    assert abs((est.high - est.low) / 2 - half) < 0.1 * half
    assert est.low < p < est.high and est.n == 400


def test_constant_scores_have_zero_width_and_same_seed_is_identical():
    assert bootstrap_mean([1.0] * 20) == bootstrap_mean([1.0] * 20)
    est = bootstrap_mean([1.0] * 20)
    assert (est.low, est.value, est.high) == (1.0, 1.0, 1.0)


def test_paired_bootstrap_flags_no_change_as_containing_zero():
    rng = np.random.default_rng(2)
    a = (rng.random(200) < 0.5).astype(float)
    same = paired_bootstrap(a, a.copy())
    assert same.value == 0.0 and same.contains_zero()
    better = paired_bootstrap(a, np.ones_like(a))
    assert better.low > 0 and not better.contains_zero()
