"""Confidence intervals for benchmark scores (percentile bootstrap, paired bootstrap) and the
minimum detectable effect of a paired comparison.

Written here rather than taken from scipy.stats.bootstrap because the report needs the paired
variant over item ids shared by two runs and a fixed seed for bit-identical reruns; both are a few
vectorised numpy lines. 1,000 resamples keep the 95% interval's endpoints stable to ~0.01 at n=100.

Minimum detectable effect (MDE) of a paired comparison of runs A (baseline) and B on the same n
items, d_i = b_i - a_i. The report marks a delta up/down when its paired 95% interval excludes 0;
that interval is about mean(d) +- z * sd(d) / sqrt(n) (z = 1.96; sd with ddof=0, the variance the
bootstrap resamples), so at the observed variance the smallest delta whose interval excludes 0 is

    MDE = z * sqrt(V / n)

with V chosen in this order:
  * paired:   V = var(d), the observed variance of the paired differences. For 0/1 items
              var(d) = p01 + p10 - (p01 - p10)^2 with p01, p10 the shares of items B gained / lost:
              the discordant pairs carry all of it.
  * unpaired bound, when var(d) = 0 (the runs agree on every item, or shift every item alike):
              V = var(a) + var(b), the variance of d if the runs' per-item scores were
              uncorrelated; = 2 p (1 - p) for two identical 0/1 runs at score p. Conservative: two
              checkpoints of one model agree more than chance (an easy item stays easy), which only
              lowers var(d).
  * floor, for 0/1 items (or V = 0): a delta k/n carried by k items that all flip one way has
              var(d) = k/n (1 - k/n), and its interval excludes 0 only when k/n > z^2 / (n + z^2),
              i.e. k >= 4 items: the percentile bootstrap agrees (P(a resample misses all k
              flips) = (1 - k/n)^n ~ e^-k < 0.025 from k = 4). MDE = max(MDE, z^2 / (n + z^2)).

A delta of exactly the MDE is detected about half the time; 80% power needs (1.96 + 0.84) / 1.96
= 1.43 x the MDE. The MDE of an average of k benchmarks (the stratified bootstrap resamples them
independently) is sqrt(sum MDE_j^2) / k. The items needed for a target MDE t follow from
n = (z sd / t)^2 (and at least z^2 (1 - t) / t for 0/1 items).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
Z95 = 1.959964  # two-sided 95% normal quantile


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    n: int

    def as_metric(self) -> dict:
        """The entry shape Run.log_metrics stores: {value, n, ci95: [low, high]}."""
        return {"value": self.value, "n": self.n, "ci95": [self.low, self.high]}

    def contains_zero(self) -> bool:
        return self.low <= 0.0 <= self.high


def _percentiles(draws: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_mean(
    scores: Sequence[float], resamples: int = DEFAULT_RESAMPLES, seed: int = 0, alpha: float = 0.05
) -> Estimate:
    """Mean of per-item scores with a percentile-bootstrap (1 - alpha) interval."""
    x = np.asarray(scores, dtype=float)
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    lo, hi = _percentiles(x[idx].mean(axis=1), alpha)
    return Estimate(float(x.mean()), lo, hi, int(x.size))


def wilson_interval(rate: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion `rate` over n items. Where every item scores the same
    (0/n or n/n) the percentile bootstrap collapses to [rate, rate]; Wilson still says how far the
    true rate could be (0 of 6 prompts: [0, 0.39])."""
    if n <= 0:
        return float("nan"), float("nan")
    denom = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denom
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], resamples: int = DEFAULT_RESAMPLES, seed: int = 0, alpha: float = 0.05
) -> Estimate:
    """Delta mean(b) - mean(a) over the same items, resampling items jointly (a[i] pairs b[i])."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired bootstrap needs the same items: {x.size} vs {y.size} scores")
    return bootstrap_mean(y - x, resamples, seed, alpha)


def mean_of_estimates(values: Sequence[float]) -> float:
    """The suite average as the papers report it: the unweighted mean of benchmark scores."""
    return float(np.mean(values)) if len(values) else float("nan")


@dataclass(frozen=True)
class Power:
    """Minimum detectable effect of a paired comparison: `mde` at `n` items, `sd` the standard
    deviation of the paired differences it assumes, `basis` which rule chose it (module docstring):
    paired | unpaired bound | floor."""

    mde: float
    n: int
    sd: float
    basis: str
    binary: bool = True

    def items_for(self, target: float, z: float = Z95) -> int:
        """Items needed (same variance) for an MDE of `target`."""
        if self.n == 0 or not target > 0:
            return 0
        need = (z * self.sd / target) ** 2
        if self.binary or self.sd == 0:
            need = max(need, z * z * (1 - target) / target)
        return math.ceil(need)


def _is_binary(x: np.ndarray) -> bool:
    return bool(np.isin(x, (0.0, 1.0)).all())


def minimum_detectable_effect(a: Sequence[float], b: Sequence[float] | None = None, z: float = Z95) -> Power:
    """MDE of the paired comparison b - a over the same items (a[i] pairs b[i]); `b=None` sizes
    a comparison of `a` against an identical rerun. Rules and derivation: module docstring."""
    x = np.asarray(a, dtype=float)
    y = x if b is None else np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"minimum detectable effect needs the same items: {x.size} vs {y.size} scores")
    n = int(x.size)
    if n == 0:
        return Power(float("nan"), 0, float("nan"), "none")
    var, basis = float((y - x).var()), "paired"
    if var <= 1e-15:
        var, basis = float(x.var() + y.var()), "unpaired bound"
    mde = z * math.sqrt(var / n)
    binary = _is_binary(x) and _is_binary(y)
    floor = z * z / (n + z * z)
    if (binary or var <= 1e-15) and floor > mde:
        mde, basis = floor, "floor"
    return Power(mde, n, math.sqrt(var), basis, binary)


def mde_of_mean(mdes: Sequence[float]) -> float:
    """MDE of the unweighted mean of k independently resampled benchmarks' deltas: sqrt(sum m^2) / k."""
    m = np.asarray([v for v in mdes if not math.isnan(v)], dtype=float)
    return float(np.sqrt((m**2).sum()) / m.size) if m.size else float("nan")
