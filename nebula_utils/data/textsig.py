"""Text signatures for dedup and decontamination: word n-gram hashes and batched MinHash.

Why not datasketch's `MinHash().update_batch` per row: it hashes every shingle with SHA-1 in a
Python loop and permutes one set per call (~3k rows/s on 200-word texts). Here a whole batch of
rows is hashed at once with numpy:

1. tokens and shingles of raw texts (`text_ngrams`, used by `MinHasher.signatures` and the
   decontamination index): tokenised and hashed on the batch's bytes in numpy, see below;
   of token lists (`shingle_hashes`): each distinct word hashed once with CRC-32 and cached, an
   n-gram hash a multiply-add of its word hashes with fixed odd 64-bit constants, then a 64-bit
   avalanche. Both are stable across processes and machines, unlike `hash()`.
2. shingles: the word n-grams of every row of the batch in one flat array.
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
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

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


# ---------------------------------------------------------------- n-gram hashes of raw text, all in numpy
#
# Decontamination looks every n-gram of every training row up in the benchmark index: at ~200
# words a row, splitting into Python str objects and one dict lookup per word was 60% of the
# time (8k rows/s). Here a chunk of rows is lower-cased and encoded (one C call per row), and
# the rest runs on the chunk's bytes in numpy: a 256-entry class table finds the token
# boundaries with exactly `tokenize`'s rules; a word's hash is a polynomial over its bytes from
# one prefix sum (sum b_j P^(j-s), read off as (C[e] - C[s]) * P^-s: an odd P is invertible mod
# 2^64), avalanched by fmix64; an n-gram's hash is the same polynomial over its word hashes.
# No library tokenises + hashes word n-grams of raw text in batch (datasketch and
# text-dedup hash shingle by shingle in Python), hence this code.

_SPACES = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f "  # what str.split() splits on below U+0080
# ... and above: mapped to a space before encoding, so split points stay byte-level.
_UNICODE_SPACES = str.maketrans({c: " " for c in map(chr, range(0x80, 0x3001)) if c.isspace()})
_BYTE_CLASS = np.ones(256, dtype=np.uint8)  # 1: part of a word (UTF-8 lead/continuation bytes too)
_BYTE_CLASS[[ord(c) for c in _SPACES]] = 0  # 0: separator
_BYTE_CLASS[[ord(c) for c in string.punctuation if c != "_" and c not in _OPERATORS]] = 0
_BYTE_CLASS[[ord(c) for c in _OPERATORS]] = 2  # 2: a one-byte token of its own
_POLY = np.uint64(0x9E3779B97F4A7C15)  # odd: invertible mod 2^64
# Rows are hashed in chunks of about this many bytes so the power tables stay small (2 x 8 MiB).
CHUNK_BYTES = 1 << 20


class _Powers:
    """P^i and P^-i mod 2^64 for i < size, grown on demand (np.cumprod wraps mod 2^64)."""

    def __init__(self) -> None:
        self.pow = self.inv = np.ones(1, dtype=np.uint64)

    def upto(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        if size > len(self.pow):
            size = max(size, 2 * len(self.pow))
            one = np.ones(1, dtype=np.uint64)
            self.pow = np.concatenate([one, np.cumprod(np.full(size - 1, _POLY, dtype=np.uint64))])
            inv = np.uint64(pow(int(_POLY), -1, 2**64))
            self.inv = np.concatenate([one, np.cumprod(np.full(size - 1, inv, dtype=np.uint64))])
        return self.pow[:size], self.inv[:size]


_POWERS = _Powers()


def _poly_spans(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """sum_{j in [s, e)} values[j] * P^(j - s) mod 2^64 for each span."""
    pw, inv = _POWERS.upto(len(values) + 1)
    prefix = np.zeros(len(values) + 1, dtype=np.uint64)
    np.cumsum(values * pw[: len(values)], out=prefix[1:])
    return (prefix[ends] - prefix[starts]) * inv[starts]


def _encode(texts: Sequence[str]) -> list[bytes]:
    return [(t.lower() if t.isascii() else t.lower().translate(_UNICODE_SPACES)).encode("utf-8") for t in texts]


def token_spans(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(bytes, token starts, token ends, first token of each row + total) of `tokenize`'s tokens.

    The rows are joined with one space; token i is bytes[starts[i]:ends[i]] (UTF-8, lower case).
    """
    encoded = _encode(texts)
    buf = np.frombuffer(b" ".join(encoded) + b" ", dtype=np.uint8)
    cls = _BYTE_CLASS[buf]
    word, op = cls == 1, cls == 2
    begins = op.copy()
    begins[0] |= word[0]
    begins[1:] |= word[1:] & ~word[:-1]
    stops = op  # a token ends after an operator byte or a word byte followed by a non-word byte
    stops[:-1] |= word[:-1] & ~word[1:]
    starts, ends = np.flatnonzero(begins), np.flatnonzero(stops) + 1
    row_bytes = np.cumsum([0] + [len(b) + 1 for b in encoded])
    return buf, starts, ends, np.searchsorted(starts, row_bytes)


def ngram_hashes(texts: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(64-bit word n-gram hashes of all rows, first n-gram of each row, word count of each row).

    Tokens are `tokenize`'s. A row shorter than n words has one n-gram: all its words (an empty
    row's is 0; callers skip empty texts). n = 0: one hash per row, of all its words (an exact-match
    key). Hashes are stable across processes and machines but differ from `shingle_hashes`'
    (CRC-32 words); they are only compared with each other.
    """
    (grams,), n_words = text_ngrams(texts, (n,))
    return grams[0], grams[1], n_words


def text_ngrams(texts: Sequence[str], ns: Sequence[int]) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """([(hashes, first n-gram of each row) for each n in ns], word count of each row): one
    tokenisation for several n-gram sizes (see `ngram_hashes`)."""
    if any(n < 0 for n in ns):
        raise ValueError(f"n-gram sizes must be >= 0, got {list(ns)}")
    chunks, row, total = [], 0, 0
    for end in range(1, len(texts) + 1):  # chunks of ~CHUNK_BYTES of text
        total += len(texts[end - 1])
        if total >= CHUNK_BYTES or end == len(texts):
            chunks.append(_ngram_chunk(texts[row:end], ns))
            row, total = end, 0
    n_words = np.concatenate([c[1] for c in chunks]) if chunks else np.empty(0, np.int64)
    out = []
    for k in range(len(ns)):
        parts = [c[0][k] for c in chunks]
        offsets = np.cumsum([0] + [len(h) for h, _ in parts[:-1]])
        out.append(
            (
                np.concatenate([h for h, _ in parts]) if parts else np.empty(0, np.uint64),
                np.concatenate([f + o for (_, f), o in zip(parts, offsets)]) if parts else np.empty(0, np.int64),
            )
        )
    return out, n_words


def _ngram_chunk(texts: Sequence[str], ns: Sequence[int]) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    buf, starts, ends, row_tok = token_spans(texts)
    words = _fmix64(_poly_spans(buf.astype(np.uint64), starts, ends))
    n_words = np.diff(row_tok)
    out = []
    for n in ns:
        counts = np.maximum(n_words - n + 1, 1) if n else np.ones_like(n_words)
        first = np.cumsum(counts) - counts
        gram_start = np.arange(counts.sum(), dtype=np.int64) + np.repeat(row_tok[:-1] - first, counts)
        gram_end = np.minimum(gram_start + n, np.repeat(row_tok[1:], counts)) if n else row_tok[1:]
        out.append((_fmix64(_poly_spans(words, gram_start, gram_end)), first))
    return out, n_words


def select_rows(hashes: np.ndarray, first: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (hashes, first) of the given rows only, from a flat (hashes, first) pair."""
    counts = np.diff(np.append(first, len(hashes)))[rows]
    new_first = np.cumsum(counts) - counts
    idx = np.arange(counts.sum(), dtype=np.int64) + np.repeat(first[rows] - new_first, counts)
    return hashes[idx], new_first


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
            work = (
                self._work[:, : hi - lo]
                if hi - lo <= MAX_SHINGLES_PER_CHUNK
                else np.empty((self.num_perm, hi - lo), np.uint32)
            )
            np.multiply(self.a[:, None], h[None, :], out=work)
            np.add(work, self.b[:, None], out=work)
            out[row:end] = np.minimum.reduceat(work, first[row:end] - lo, axis=1).T
            row = end
        return out

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """Signatures of raw texts, tokenised and shingled in numpy (`ngram_hashes`)."""
        return self.signatures_of_hashes(*ngram_hashes(texts, self.shingle_n)[:2])

    def signatures_of_hashes(self, hashes: np.ndarray, first: np.ndarray) -> np.ndarray:
        """Signatures from 64-bit shingle hashes (e.g. `text_ngrams`'), their top 32 bits."""
        return self.from_hashes32((hashes >> np.uint64(32)).astype(np.uint32), first)

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
