"""Text signatures for dedup and decontamination: word n-gram hashes and batched MinHash.

Why not datasketch's `MinHash().update_batch` per row: it hashes every shingle with SHA-1 in a
Python loop and permutes one set per call (~3k rows/s on 200-word texts). Here a whole batch of
rows is hashed at once with numpy:

1. tokens: lower-cased `\\w+` words; each distinct word is hashed once with CRC-32 (stable across
   processes and machines, unlike `hash()`) and cached.
2. shingles: the word n-grams of every row of the batch in one flat array; an n-gram hash is a
   multiply-add of its word hashes with fixed odd 64-bit constants, then a 64-bit avalanche.
3. MinHash: datasketch's own `affine32` scheme (its permutation parameters, the MurmurHash3
   32-bit pre-mix, `a*h+b mod 2^32`), applied to a (shingles x permutations) matrix and
   min-reduced per row with `np.minimum.reduceat`. Given the same input hashes the signature is
   identical to datasketch's `MinHash(hashfunc=...).update_batch` (tests check it), so the
   signatures go straight into `datasketch.MinHashLSH` (as `LeanMinHash`) for the index.
"""

from __future__ import annotations

import gc
import string
import zlib
from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence

import numpy as np

# Tokens: lower-cased text split on whitespace after ASCII punctuation (underscore aside) became
# spaces, except math operators, which stay tokens of their own ("8 - 3" and "8 + 3" differ).
# str.translate + split is ~2x faster than re.findall(r"\w+") on 200-word texts.
_OPERATORS = "+-*/=<>^%"
_PUNCT = str.maketrans({c: (f" {c} " if c in _OPERATORS else " ") for c in string.punctuation if c != "_"})
# Random odd 64-bit multipliers for the n-gram position mix (fixed: signatures are persisted).
_POS_MULT = np.random.RandomState(20240607).randint(0, 2**62, size=64, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
# ~16 MB uint32 work matrix per chunk at 128 permutations.
MAX_SHINGLES_PER_CHUNK = 32_768


@contextmanager
def paused_gc() -> Iterator[None]:
    """The LSH index holds ~10 Python objects per benchmark text; with a full registry (19k
    benchmark texts) the cyclic GC rescanning them took 40% of a check. Nothing here makes cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class TokenHashes(dict):
    """word -> CRC-32, computed on first use (dict lookups in C; the vocabulary is small)."""

    def __missing__(self, word: str) -> int:
        value = self[word] = zlib.crc32(word.encode("utf-8"))
        return value


def tokenize(text: str) -> list[str]:
    return text.lower().translate(_PUNCT).split()


def normalized(text: str) -> str:
    """Case, punctuation and whitespace folded: the key of exact-duplicate matching."""
    return " ".join(tokenize(text))


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, the pre-mix datasketch's affine32 scheme applies."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def shingle_hashes(token_lists: Sequence[Sequence[str]], n: int, words: TokenHashes) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit n-gram hashes of all rows, the first shingle index of each row).

    A row shorter than `n` words is padded to `n` with a zero word hash, so every row has at least
    one shingle (an empty row's shingle is all padding: callers skip empty texts).
    """
    if not 1 <= n <= len(_POS_MULT):
        raise ValueError(f"n-gram size must be in 1..{len(_POS_MULT)}, got {n}")
    flat: list[int] = []
    lengths = np.empty(len(token_lists), dtype=np.int64)
    for i, toks in enumerate(token_lists):
        flat.extend(map(words.__getitem__, toks))
        if len(toks) < n:
            flat.extend([0] * (n - len(toks)))
        lengths[i] = max(len(toks), n)
    tokens = np.asarray(flat, dtype=np.uint64)
    counts = lengths - n + 1
    offsets = np.cumsum(lengths) - lengths
    first = np.cumsum(counts) - counts
    starts = np.arange(counts.sum(), dtype=np.int64) + np.repeat(offsets - first, counts)
    acc = np.zeros(starts.size, dtype=np.uint64)
    for j in range(n):
        acc += tokens[starts + j] * _POS_MULT[j]
    return _fmix64(acc), first


def text_shingles(texts: Iterable[str], n: int, words: TokenHashes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hashes, first shingle per row, word count per row) for raw texts."""
    token_lists = [tokenize(t) for t in texts]
    hashes, first = shingle_hashes(token_lists, n, words)
    return hashes, first, np.fromiter((len(t) for t in token_lists), np.int64, len(token_lists))


class MinHasher:
    """Batched MinHash signatures in datasketch's affine32 scheme (num_perm, seed as datasketch)."""

    def __init__(self, num_perm: int = 128, seed: int = 1, shingle_n: int = 3):
        from datasketch import MinHash

        self.num_perm, self.seed, self.shingle_n = num_perm, seed, shingle_n
        a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
        self.a, self.b = a.astype(np.uint32), b.astype(np.uint32)
        self.words = TokenHashes()
        # One preallocated (permutations x shingles) work matrix: allocating it per chunk cost
        # 3x the arithmetic in page faults.
        self._work = np.empty((num_perm, MAX_SHINGLES_PER_CHUNK), dtype=np.uint32)

    def from_hashes32(self, hashes: np.ndarray, first: np.ndarray) -> np.ndarray:
        """Signatures (rows x num_perm, uint32) of rows whose 32-bit shingle hashes are given."""
        out = np.empty((len(first), self.num_perm), dtype=np.uint32)
        bounds = np.append(first, hashes.size)
        row = 0
        while row < len(first):
            end = int(np.searchsorted(bounds, bounds[row] + MAX_SHINGLES_PER_CHUNK, side="right")) - 1
            end = min(max(end, row + 1), len(first))
            lo, hi = bounds[row], bounds[end]
            h = fmix32(hashes[lo:hi].astype(np.uint32))
            work = self._work[:, : hi - lo] if hi - lo <= MAX_SHINGLES_PER_CHUNK else np.empty((self.num_perm, hi - lo), np.uint32)
            np.multiply(self.a[:, None], h[None, :], out=work)
            np.add(work, self.b[:, None], out=work)
            out[row:end] = np.minimum.reduceat(work, first[row:end] - lo, axis=1).T
            row = end
        return out

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        return self.signatures_of_tokens([tokenize(t) for t in texts])

    def signatures_of_tokens(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        hashes, first = shingle_hashes(token_lists, self.shingle_n, self.words)
        return self.from_hashes32((hashes >> np.uint64(32)).astype(np.uint32), first)


def estimated_jaccard(sig: np.ndarray, others: np.ndarray) -> np.ndarray:
    """MinHash Jaccard estimate of one signature against each row of `others`."""
    return (others == sig).mean(axis=-1)


class MinHashIndex:
    """A datasketch MinHashLSH over batched signatures; candidates are re-checked on the signature."""

    def __init__(self, threshold: float, hasher: MinHasher):
        from datasketch import MinHashLSH

        self.threshold, self.hasher = threshold, hasher
        self.lsh = MinHashLSH(threshold=threshold, num_perm=hasher.num_perm)
        self._sigs: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._sigs)

    def _lean(self, sig: np.ndarray):
        from datasketch import LeanMinHash

        return LeanMinHash(seed=self.hasher.seed, hashvalues=sig, scheme="affine32")

    def add(self, sig: np.ndarray, lean=None) -> int:
        """Insert one signature; its key is its insertion index."""
        key = len(self._sigs)
        self.lsh.insert(key, lean if lean is not None else self._lean(sig), check_duplication=False)
        self._sigs.append(sig)
        return key

    def query(self, sig: np.ndarray, lean=None) -> list[tuple[int, float]]:
        """(key, estimated Jaccard) of indexed signatures at or above the threshold, best first."""
        keys = list(self.lsh.query(lean if lean is not None else self._lean(sig)))
        if not keys:
            return []
        sims = estimated_jaccard(sig, np.stack([self._sigs[k] for k in keys]))
        found = [(k, float(s)) for k, s in zip(keys, sims) if s >= self.threshold]
        return sorted(found, key=lambda ks: -ks[1])

    def add_unless_near(self, sig: np.ndarray) -> tuple[int, float] | None:
        """Greedy near-dedup step: the best indexed match, or None after inserting `sig`."""
        lean = self._lean(sig)
        found = self.query(sig, lean)
        if found:
            return found[0]
        self.add(sig, lean)
        return None
