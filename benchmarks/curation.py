"""Throughput and peak memory of the CPU curation stages, side by side with baselines.

    OMP_NUM_THREADS=1 python benchmarks/curation.py            # 100,000 samples
    OMP_NUM_THREADS=1 python benchmarks/curation.py --n 20000  # a quick run

Samples are generated 200-word texts (a Zipf vocabulary of 20k words), with 2% planted near
duplicates (a copy with 1% of its words replaced) of earlier samples and, for decontamination,
1% planted benchmark items (exact, lightly edited, or embedded in a longer text).

1. MinHash near-dedup (query, then insert when new), 128 permutations, word 3-gram shingles:
   baseline = datasketch's own per-sample loop (MinHash().update_batch over the encoded shingles,
   MinHashLSH.query + insert); ours = batched numpy signatures (textsig.MinHasher) into the same
   MinHashLSH. Recall on the planted near duplicates is printed for both (equal-recall check).
2. n-gram decontamination (8-grams against 2,000 benchmark items): baseline = a Python set of
   n-gram tuples per sample; ours = DecontamIndex's vectorised lookup (ngram method only); then
   ours with all three methods (exact, n-gram, MinHash LSH), as 15_decontam runs it.
3. per-category k-center greedy and k-means medoids vs random selection on skewed clustered
   embeddings (coverage: mean and max distance to the nearest pick; lower is better).
4. exact dedup: baseline = an md5-of-normalised-text set loop; ours = dedup.deduplicate(near=False).
5. cross-verification rule gates (format + length/echo/repetition/language heuristics) per
   candidate, on the first --gate-n samples: throughput only (no library does these gates).
6. task classification on the first --classify-n samples: rules + all-MiniLM-L6-v2 embeddings
   batched (ours) vs the same model encoding one text at a time (the per-row baseline).

Throughput is samples/s on one core (the process runs single-threaded); peak memory is
tracemalloc's peak of Python + numpy allocations during the stage on its first 5,000 samples.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from nebula_utils.data.decontam import BenchmarkItems, BenchmarkSpec, DecontamIndex  # noqa: E402
from nebula_utils.data.textsig import MinHasher, MinHashIndex, paused_gc, tokenize  # noqa: E402

NUM_PERM, SHINGLE, THRESHOLD = 128, 3, 0.8


def corpus(n: int, seed: int = 0, words: int = 200, dup_rate: float = 0.02) -> tuple[list[str], dict[int, int]]:
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(20_000)])
    p = 1.0 / np.arange(1, len(vocab) + 1)
    texts, planted = [], {}
    ids = rng.choice(len(vocab), size=(n, words), p=p / p.sum())
    for i in range(n):
        if i > 10 and rng.random() < dup_rate:
            src = int(rng.integers(0, i))
            toks = texts[src].split()
            for j in rng.choice(words, size=words // 100, replace=False):
                toks[j] = "edit"
            texts.append(" ".join(toks))
            planted[i] = src
        else:
            texts.append(" ".join(vocab[ids[i]]))
    return texts, planted


MEMORY_SAMPLES = 5_000


def measure(fn, data, *args):
    """(result, seconds, peak MiB). Timing runs untraced (tracemalloc slows per-object Python code
    ~10x); the peak is traced in a second run on the first MEMORY_SAMPLES samples."""
    t0 = time.perf_counter()
    out = fn(data, *args)
    dt = time.perf_counter() - t0
    tracemalloc.start()
    fn(data[:MEMORY_SAMPLES], *args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, dt, peak / 2**20


def baseline_near_dedup(texts: list[str]) -> set[int]:
    from datasketch import MinHash, MinHashLSH

    lsh, dups = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM), set()
    for i, text in enumerate(texts):
        toks = tokenize(text)
        m = MinHash(num_perm=NUM_PERM)
        m.update_batch(
            [" ".join(toks[j : j + SHINGLE]).encode("utf-8") for j in range(max(1, len(toks) - SHINGLE + 1))]
        )
        if lsh.query(m):
            dups.add(i)
        else:
            lsh.insert(i, m, check_duplication=False)
    return dups


def ours_near_dedup(texts: list[str], batch: int = 4096) -> set[int]:
    hasher = MinHasher(NUM_PERM, seed=1, shingle_n=SHINGLE)
    index, dups = MinHashIndex(THRESHOLD, hasher), set()
    with paused_gc():
        for lo in range(0, len(texts), batch):
            for i, sig in enumerate(hasher.signatures(texts[lo : lo + batch]), start=lo):
                if index.add_unless_near(sig) is not None:
                    dups.add(i)
    return dups


def benchmark_items(n_items: int, seed: int = 1) -> BenchmarkItems:
    texts, _ = corpus(n_items, seed=seed, words=60, dup_rate=0.0)
    spec = BenchmarkSpec("synthetic", "test", "test", "file", "-", {"prompt": "prompt", "answer": None})
    return BenchmarkItems(spec, [str(i) for i in range(n_items)], texts, [""] * n_items)


def plant(texts: list[str], bench: BenchmarkItems, rate: float = 0.01, seed: int = 2) -> dict[int, str]:
    rng = np.random.default_rng(seed)
    planted = {}
    for i in rng.choice(len(texts), size=int(rate * len(texts)), replace=False):
        item = int(rng.integers(len(bench.ids)))
        kind = ("exact", "edited", "embedded")[int(i) % 3]
        toks = bench.prompts[item].split()
        if kind == "edited":
            toks[len(toks) // 3] = "changed"
        body = " ".join(toks).upper() if kind != "embedded" else texts[i][:600] + " " + " ".join(toks)
        texts[i] = body
        planted[int(i)] = bench.ids[item]
    return planted


def baseline_ngram(texts: list[str], bench: BenchmarkItems, n: int = 8) -> set[int]:
    grams = {}
    for item, text in zip(bench.ids, bench.prompts):
        toks = tokenize(text)
        for j in range(len(toks) - n + 1):
            grams.setdefault(tuple(toks[j : j + n]), item)
    totals = {}
    for _gram, item in grams.items():
        totals[item] = totals.get(item, 0) + 1
    hits = set()
    for i, text in enumerate(texts):
        toks = tokenize(text)
        found = {}
        for g in {tuple(toks[j : j + n]) for j in range(len(toks) - n + 1)}:
            if (item := grams.get(g)) is not None:
                found[item] = found.get(item, 0) + 1
        if any(c >= 3 and c / totals[item] >= 0.5 for item, c in found.items()):
            hits.add(i)
    return hits


def ours_ngram(texts: list[str], index: DecontamIndex) -> set[int]:
    return {i for i, hs in enumerate(index.check_texts(texts, "prompt", methods=("ngram",))) if hs}


def report(name: str, n: int, base: tuple, ours: tuple) -> None:
    (_, tb, mb), (_, to, mo) = base, ours
    print(
        f"{name:28s} baseline {n / tb:9.0f} samples/s  peak {mb:7.1f} MiB | ours {n / to:9.0f} samples/s  "
        f"peak {mo:7.1f} MiB | speed-up x{tb / to:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="samples (default 100,000)")
    parser.add_argument("--baseline-n", type=int, default=0, help="samples for the slow baselines (default = --n)")
    parser.add_argument(
        "--gate-n", type=int, default=5_000, help="samples for the filter gates (langdetect is ~ms/row)"
    )
    parser.add_argument("--classify-n", type=int, default=1_000, help="samples for MiniLM classification")
    args = parser.parse_args()
    n, nb = args.n, args.baseline_n or args.n
    texts, planted = corpus(n)
    print(f"{n} samples of 200 words, {len(planted)} planted near duplicates; baselines on the first {nb}")

    planted_b = {i for i in planted if i < nb}
    base = measure(baseline_near_dedup, texts[:nb])
    ours = measure(ours_near_dedup, texts)
    recall_b = len(base[0] & planted_b) / max(1, len(planted_b))
    recall_o = len(ours[0] & set(planted)) / max(1, len(planted))
    report("minhash near-dedup", nb, base, (None, ours[1] * nb / n, ours[2]))
    print(
        f"{'':28s} recall on planted near duplicates: baseline {recall_b:.3f}  ours {recall_o:.3f}; "
        f"flagged beyond planted: baseline {len(base[0] - planted_b)}  ours {len(ours[0] - set(planted))}"
    )

    bench = benchmark_items(2_000)
    texts2 = list(texts)
    contaminated = plant(texts2, bench)
    index = DecontamIndex(min_words=5).build([bench])
    base = measure(baseline_ngram, texts2[:nb], bench)
    ours = measure(ours_ngram, texts2, index)
    planted_c = {i for i in contaminated if i < nb}
    report("n-gram decontamination", nb, base, (None, ours[1] * nb / n, ours[2]))
    print(
        f"{'':28s} recall on planted benchmark items: baseline {len(base[0] & planted_c) / max(1, len(planted_c)):.3f}  "
        f"ours {len(ours[0] & set(contaminated)) / max(1, len(contaminated)):.3f}; false positives: "
        f"baseline {len(base[0] - planted_c)}  ours {len(ours[0] - set(contaminated))}"
    )
    t0 = time.perf_counter()
    found = {i for i, hs in enumerate(index.check_texts(texts2, "prompt")) if hs}
    print(
        f"{'':28s} all three methods (exact + n-gram + MinHash LSH), ours: {n / (time.perf_counter() - t0):.0f} samples/s, "
        f"recall {len(found & set(contaminated)) / max(1, len(contaminated)):.3f}, false positives {len(found - set(contaminated))}"
    )

    from nebula_utils.data.diversity import category_quotas, coverage, random_coverage, select

    rng = np.random.default_rng(0)
    sizes = rng.zipf(1.6, size=50).clip(1, 2_000)
    x = np.concatenate([c + 0.1 * rng.normal(size=(s, 64)) for c, s in zip(rng.normal(size=(50, 64)), sizes)]).astype(
        np.float32
    )
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = [str(i % 6) for i in range(len(x))]
    quotas = category_quotas(labels, max(6, len(x) // 20))
    rand = random_coverage(x, labels, quotas, range(5))
    import sklearn.cluster  # noqa: F401  (imported before the timing)

    print(
        f"{'diversity selection':28s} {len(x)} points in 6 categories -> {sum(quotas.values())}; coverage mean/max "
        f"(lower = better): random {np.mean([r['mean'] for r in rand]):.3f}/{np.mean([r['max'] for r in rand]):.3f} (5 seeds)"
    )
    for method in ("kcenter", "kmeans"):
        t0 = time.perf_counter()
        cov = coverage(x, select(x, labels, quotas, method=method))
        print(f"{'':28s} {method:8s} {cov['mean']:.3f}/{cov['max']:.3f} in {time.perf_counter() - t0:.2f}s")

    more_stages(texts, nb, args.gate_n, args.classify_n)


def baseline_exact(texts: list[str]) -> set[int]:
    import hashlib

    seen, dups = set(), set()
    for i, text in enumerate(texts):
        key = hashlib.md5(" ".join(text.lower().split()).encode()).hexdigest()
        if key in seen:
            dups.add(i)
        seen.add(key)
    return dups


def ours_exact(texts: list[str]) -> set[int]:
    from nebula_utils.data.dedup import deduplicate

    result = deduplicate(texts, near=False)
    return {i for i, k in enumerate(result.keep) if not k}


def gates(texts: list[str]) -> int:
    from nebula_utils.data.crossverify import FilterRules, format_gate, heuristics_gate

    rules = FilterRules(keep_rules={"default": ["format", "heuristics"]})
    prompt = [{"role": "user", "content": "Write about the topic."}]
    return sum(
        format_gate(prompt, t, "stop", "general_chat", None, None).passed
        and heuristics_gate(t, "Write about the topic.", "general_chat", rules).passed
        for t in texts
    )


def classify_batched(texts: list[str]) -> list[str]:
    from nebula_utils.data.classify import embed, rule_label

    rules = [rule_label(t)[0] for t in texts]
    return rules + [str(v) for v in embed(texts).shape]


def classify_per_row(texts: list[str]) -> list[str]:
    from nebula_utils.data.classify import embedding_model, rule_label

    model = embedding_model()
    rules = [rule_label(t)[0] for t in texts]
    return rules + [str(model.encode([t], normalize_embeddings=True).shape) for t in texts]


def more_stages(texts: list[str], nb: int, gate_n: int, classify_n: int) -> None:
    dup_texts = texts + texts[: len(texts) // 50]  # 2% exact copies, spread through the corpus
    dup_texts = [dup_texts[i] for i in np.random.default_rng(3).permutation(len(dup_texts))]
    base = measure(baseline_exact, dup_texts[:nb])
    ours = measure(ours_exact, dup_texts)
    report("exact dedup", nb, base, (None, ours[1] * nb / len(dup_texts), ours[2]))
    print(
        f"{'':28s} duplicates found: baseline {len(base[0])} in {nb}  ours {len(ours[0])} in {len(dup_texts)} "
        f"({len(texts) // 50} copies planted)"
    )
    gate_texts = texts[:gate_n]
    t0 = time.perf_counter()
    passed = gates(gate_texts)
    print(
        f"{'filter gates (format+heur.)':28s} ours {gate_n / (time.perf_counter() - t0):9.0f} samples/s "
        f"({passed} of {gate_n} pass)"
    )
    from nebula_utils.data.classify import embedding_model

    embedding_model()  # load the model before timing either side
    cls_texts = [" ".join(t.split()[:60]) for t in texts[:classify_n]]
    base = measure(classify_per_row, cls_texts)
    ours = measure(classify_batched, cls_texts)
    report("classification (MiniLM)", classify_n, base, ours)


if __name__ == "__main__":
    main()
