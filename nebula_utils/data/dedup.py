"""Exact and near deduplication of a training corpus (first occurrence kept).

- exact: rows whose whole text (prompt + answer) is equal after folding case, punctuation and
  whitespace (`textsig.normalized`), keyed by its SHA-1.
- near: rows whose word-shingle MinHash (datasketch's scheme, hashed in batches by
  `textsig.MinHasher`) has an estimated Jaccard >= `threshold` with an earlier kept row, found
  through datasketch's MinHashLSH.

Each dropped row records the index of the kept row it duplicates and why, so the processing
manifest can count drops by reason and a table can show the pairs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .textsig import MinHasher, MinHashIndex, normalized, paused_gc


def row_sides(row: Mapping[str, Any]) -> tuple[str, str]:
    """(prompt side, answer side) of an sft, rl or preference row, as plain text."""
    if "candidates" in row:  # preference
        prompt = "\n".join(t["content"] for t in row["prompt"])
        return prompt, "\n".join(c["content"] for c in row["candidates"])
    turns = row.get("messages") or []
    prompt = "\n".join(t["content"] for t in turns if t["role"] != "assistant")
    answer = "\n".join(t["content"] for t in turns if t["role"] == "assistant")
    if not turns and row.get("prompt"):
        prompt = row["prompt"]
    return prompt, answer


def dataset_sides(ds: Any) -> tuple[list[str], list[str]]:
    """Prompt and answer texts of every row of a `datasets.Dataset` (or list of rows)."""
    sides = [row_sides(row) for row in ds]
    return [p for p, _ in sides], [a for _, a in sides]


@dataclass
class DedupResult:
    keep: list[bool]
    reason: list[str | None]  # exact_duplicate | near_duplicate | None (kept)
    duplicate_of: list[int | None]
    similarity: list[float | None]
    counts: dict[str, int] = field(default_factory=dict)

    def pairs(self) -> list[tuple[int, int, str, float]]:
        return [
            (i, d, r, s)
            for i, (d, r, s) in enumerate(zip(self.duplicate_of, self.reason, self.similarity))
            if r is not None
        ]


def exact_keys(texts: Sequence[str]) -> list[str]:
    return [hashlib.sha1(normalized(t).encode("utf-8")).hexdigest() for t in texts]


def deduplicate(
    texts: Sequence[str],
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle_n: int = 3,
    seed: int = 1,
    near: bool = True,
    exact: bool = True,
) -> DedupResult:
    """Exact then near dedup in row order; the first of each group is kept."""
    n = len(texts)
    keep, reason, dup_of, sim = [True] * n, [None] * n, [None] * n, [None] * n
    first_seen: dict[str, int] = {}
    for i, key in enumerate(exact_keys(texts) if exact else []):
        if key in first_seen:
            keep[i], reason[i], dup_of[i], sim[i] = False, "exact_duplicate", first_seen[key], 1.0
        else:
            first_seen[key] = i
    if near:
        hasher = MinHasher(num_perm=num_perm, seed=seed, shingle_n=shingle_n)
        kept = [i for i in range(n) if keep[i]]
        sigs = hasher.signatures([texts[i] for i in kept])
        index = MinHashIndex(threshold, hasher)
        owner: list[int] = []  # index key -> row
        with paused_gc():
            _near_pass(index, kept, sigs, owner, keep, reason, dup_of, sim)
    counts = {r: reason.count(r) for r in ("exact_duplicate", "near_duplicate") if reason.count(r)}
    return DedupResult(keep, reason, dup_of, sim, counts)


def _near_pass(index, kept, sigs, owner, keep, reason, dup_of, sim) -> None:
    for row, sig in zip(kept, sigs):
        match = index.add_unless_near(sig)
        if match is None:
            owner.append(row)
        else:
            keep[row], reason[row], dup_of[row], sim[row] = False, "near_duplicate", owner[match[0]], match[1]
