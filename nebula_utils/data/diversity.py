"""Diversity-aware sampling: per-category quotas, a diverse pick inside each category, coverage.

Two pickers inside each category (stratum), both against the same random baseline:
  kcenter  k-center greedy: minimises the MAX distance to the nearest pick (outliers first)
  kmeans   k-means clusters (scikit-learn), the member nearest each centroid: minimises the MEAN
           distance, i.e. represents dense regions in proportion to their size

k-center greedy (Gonzalez 1985; the "core-set" selection of Sener & Savarese 2018) repeatedly
picks the point farthest from everything selected so far, a 2-approximation of the smallest
covering radius. Written here in a few vectorised numpy lines because scikit-learn has no
k-center and the selection must respect per-category quotas: one (n,) distance update per pick,
O(n k d) in all. Embeddings are L2-normalised, so distance = sqrt(2 - 2 cos).

Coverage of a selection = distances of every corpus point to its nearest selected point (mean
and max): lower is better; the notebook compares it with random samples of the same quotas.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence

import numpy as np


def _dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Euclidean distances of the rows of x to the rows of c (n x m)."""
    sq = (x * x).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2.0 * x @ c.T
    return np.sqrt(np.maximum(sq, 0.0))


METHODS = ("kcenter", "kmeans", "random")
# Up to this many points per category sklearn's KMeans (exact Lloyd); above, MiniBatchKMeans.
KMEANS_EXACT_MAX = 20_000


def k_center_greedy(x: np.ndarray, k: int, seed: int = 0, start: Sequence[int] = ()) -> np.ndarray:
    """Indices of `k` rows of x chosen by farthest-point traversal, continuing from `start` (which
    are included in the k) or from a seeded random start."""
    n = len(x)
    if k >= n:
        return np.arange(n)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    chosen = [int(i) for i in start][:k] or [int(np.random.default_rng(seed).integers(n))]
    nearest = _dist(x, x[chosen]).min(1)
    nearest[chosen] = -1.0  # never picked twice, even among duplicate points
    for _ in range(k - len(chosen)):
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        nearest = np.minimum(nearest, _dist(x, x[nxt : nxt + 1])[:, 0])
        nearest[nxt] = -1.0
    return np.array(chosen)


def k_means_medoids(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Indices of `k` rows of x: the member of each k-means cluster nearest its centroid.

    Clusters are disjoint, so the picks are distinct; if duplicate points leave clusters empty,
    the remaining picks continue by k-center greedy from those made.
    """
    n = len(x)
    if k >= n:
        return np.arange(n)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.exceptions import ConvergenceWarning

    model = (
        KMeans(k, n_init=1, random_state=seed)
        if n <= KMEANS_EXACT_MAX
        else MiniBatchKMeans(k, batch_size=4096, n_init=3, random_state=seed)
    )
    with warnings.catch_warnings():  # duplicate points -> fewer clusters: topped up below
        warnings.simplefilter("ignore", ConvergenceWarning)
        assign = model.fit_predict(x)
    d = _dist(x, model.cluster_centers_)[np.arange(n), assign]
    order = np.lexsort((d, assign))  # by cluster, nearest first
    first = order[np.r_[True, assign[order][1:] != assign[order][:-1]]]
    return k_center_greedy(x, k, seed, start=first) if len(first) < k else np.sort(first)


def category_quotas(labels: Sequence[str], target: int, min_per_category: int = 1) -> dict[str, int]:
    """Proportional quotas summing to min(target, n), each category >= min(min_per_category, its size).

    Largest-remainder rounding; a category never gets more than it has.
    """
    counts = Counter(labels)
    target = min(target, len(labels))
    quota = {c: min(n, min_per_category) for c, n in counts.items()}
    while sum(quota.values()) < target:
        left = target - sum(quota.values())
        room = {c: counts[c] - quota[c] for c in counts if counts[c] > quota[c]}
        total = sum(room.values())
        shares = {c: left * r / total for c, r in room.items()}
        add = {c: min(room[c], int(s)) for c, s in shares.items()}
        if not sum(add.values()):  # hand out the remainders, largest first
            add = {c: 0 for c in room}
            for c in sorted(room, key=lambda c: (-(shares[c] - int(shares[c])), c))[:left]:
                add[c] = 1
        for c, a in add.items():
            quota[c] += a
    return dict(sorted(quota.items()))


def select(
    x: np.ndarray, labels: Sequence[str], quotas: dict[str, int], seed: int = 0, method: str = "kcenter"
) -> np.ndarray:
    """Sorted row indices meeting each category's quota, by `method` (METHODS) inside each category."""
    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r} ({' | '.join(METHODS)})")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked = []
    for cat, k in sorted(quotas.items()):
        idx = np.flatnonzero(labels == cat)
        if method == "kcenter":
            picked.append(idx[k_center_greedy(x[idx], k, seed)])
        elif method == "kmeans":
            picked.append(idx[k_means_medoids(x[idx], k, seed)])
        else:
            picked.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)


def coverage(x: np.ndarray, selected: np.ndarray, chunk: int = 4096) -> dict[str, float]:
    """Mean and max distance of every row of x to its nearest selected row."""
    if len(selected) == 0:
        return {"mean": float("inf"), "max": float("inf")}
    nearest = np.concatenate([_dist(x[i : i + chunk], x[selected]).min(1) for i in range(0, len(x), chunk)])
    return {"mean": float(nearest.mean()), "max": float(nearest.max())}


def random_coverage(
    x: np.ndarray, labels: Sequence[str], quotas: dict[str, int], seeds: Sequence[int]
) -> list[dict[str, float]]:
    """Coverage of random selections with the same quotas, one per seed (the baseline)."""
    return [coverage(x, select(x, labels, quotas, seed=s, method="random")) for s in seeds]
