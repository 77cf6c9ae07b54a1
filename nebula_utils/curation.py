"""Stages 14_classify_sample and 15_decontam: configs and the calls their notebooks make.

14_classify_sample: label every row with a task (rules + embedding classifier, data/classify.py),
then keep `target_fraction` of the rows with per-task quotas, chosen inside each task by k-center
greedy or k-means medoids (`selection`) on the prompt embeddings (data/diversity.py); the coverage
of both pickers is compared with random samples of the same quotas.

15_decontam: exact + near dedup inside the corpus (data/dedup.py), then the check of every row's
prompt and answer against the benchmark quarantine registry (data/decontam.py). Duplicates are
filtered; contaminated rows are quarantined (written with their hits to quarantine/contaminated.jsonl).

Both write a child data version under `<run_dir>/data` with one processing step (counts balance:
in = kept + filtered + quarantined). Heavy modules are imported inside functions: resolving a
stage config must not import torch or datasets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import REPO_ROOT, ConfigError, StageConfig


def repo_path(path: str) -> Path:
    """A params path: absolute as given, relative to the repository root otherwise."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


@dataclass
class ClassifySampleConfig(StageConfig):
    data: str  # a data version folder; pipelines pass "@10_data_sft_mix/sft"
    shared_data_dir: str  # labelled prompts from ../shared/data when the folder exists
    classifier_per_class: int  # labelled prompts per task and source group
    classifier_holdout: float  # fraction of the labelled prompts held out for the accuracy
    classifier_C: float  # inverse L2 strength of the logistic regression
    relabel: bool  # write the predicted task into each row's `task`
    target_fraction: float  # rows kept by the diversity sample
    min_per_category: int
    selection: str  # kcenter (min max distance) | kmeans (min mean distance) | random
    random_baseline_seeds: int  # random samples with the same quotas, for the coverage baseline
    embed_batch_size: int

    def __post_init__(self) -> None:
        from .data.diversity import METHODS

        if self.selection not in METHODS:
            raise ConfigError(f"14_classify_sample: key 'selection' is {self.selection!r} (known: {', '.join(METHODS)})")


@dataclass
class DecontamConfig(StageConfig):
    data: str
    shared_data_dir: str  # benchmark files of `source: shared` registry entries
    registry: str  # the benchmark quarantine registry
    dedup_exact: bool
    dedup_near: bool
    near_threshold: float  # estimated Jaccard of word 3-gram shingles for near duplicates
    num_perm: int
    shingle_n: int
    ngram_n: int
    ngram_min_overlap: float  # of a benchmark item's informative n-grams
    ngram_min_matches: int
    ngram_max_df: int  # n-grams in more registry items than this are template boilerplate
    min_words: int  # benchmark texts shorter than this are not indexed
    minhash_threshold: float
    minhash_min_words: int
    drop_contaminated: bool  # false: report hits but keep the rows

    def index_kwargs(self) -> dict[str, Any]:
        return {"ngram_n": self.ngram_n, "min_overlap": self.ngram_min_overlap, "min_matches": self.ngram_min_matches,
                "max_df": self.ngram_max_df, "min_words": self.min_words, "minhash_threshold": self.minhash_threshold,
                "minhash_min_words": self.minhash_min_words, "num_perm": self.num_perm, "shingle_n": self.shingle_n}


# ---------------------------------------------------------------- 14_classify_sample


@dataclass
class Classified:
    ds: Any
    prompts: list[str]
    embeddings: Any
    labels: list[str]
    how: list[str]
    heldout: dict[str, Any]
    groups: dict[str, int]
    from_cache: dict[str, bool]  # classifier / row embeddings read from ~/.cache/nebula


def classify_rows(cfg: ClassifySampleConfig) -> Classified:
    """Train the classifier on labelled prompts (held-out accuracy first; cached by its inputs'
    hash) and label every row (embeddings cached by the texts' hash)."""
    from .data.classify import embed_cached, train_classifier
    from .data.dedup import dataset_sides
    from .data.versions import load_version

    ds = load_version(repo_path(cfg.data))
    shared = repo_path(cfg.shared_data_dir) if cfg.shared_data_dir else ""
    trained = train_classifier(cfg.classifier_per_class, cfg.seed, shared, cfg.classifier_holdout, cfg.classifier_C,
                               cfg.embed_batch_size)
    prompts = dataset_sides(ds)[0]
    emb, emb_cached = embed_cached(prompts, cfg.embed_batch_size)
    predicted, how = trained.classifier.predict(prompts, emb)
    return Classified(ds, prompts, emb, predicted, how, trained.heldout, trained.groups,
                      {"classifier": trained.cached, "embeddings": emb_cached})


def diversity_sample(cfg: ClassifySampleConfig, c: Classified) -> dict[str, Any]:
    """Quotas, the `selection` pick, and the coverage of each picker next to random selections."""
    from .data.diversity import category_quotas, coverage, random_coverage, select

    target = max(1, round(cfg.target_fraction * len(c.labels)))
    quotas = category_quotas(c.labels, target, cfg.min_per_category)
    picks = {m: select(c.embeddings, c.labels, quotas, seed=cfg.seed, method=m) for m in ("kcenter", "kmeans")}
    chosen = picks.get(cfg.selection)
    if chosen is None:
        chosen = select(c.embeddings, c.labels, quotas, seed=cfg.seed, method=cfg.selection)
    return {"quotas": quotas, "selected": chosen, "coverage": coverage(c.embeddings, chosen),
            "by_method": {m: coverage(c.embeddings, p) for m, p in picks.items()},
            "random": random_coverage(c.embeddings, c.labels, quotas, range(cfg.seed, cfg.seed + cfg.random_baseline_seeds))}


def write_sampled(cfg: ClassifySampleConfig, c: Classified, sample: dict[str, Any], out_dir: Path) -> Any:
    from .data.manifests import processing_step
    from .data.versions import derive_version

    chosen = [int(i) for i in sample["selected"]]
    out = c.ds.select(chosen)
    old = [c.ds[i]["task"] for i in chosen]
    new = [c.labels[i] for i in chosen]
    if cfg.relabel:
        out = out.map(lambda _, i: {"task": new[i]}, with_indices=True)
    n_in = len(c.ds)
    step = processing_step(
        "classify_sample", count_in=n_in, count_out=len(out), drop_reasons={"not_selected": n_in - len(out)},
        params={k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("run_dir", "run_id", "data")},
        quotas=sample["quotas"], relabelled=sum(a != b for a, b in zip(old, new)) if cfg.relabel else 0,
        classifier_heldout_accuracy=sum(c.heldout["correct"]) / max(1, len(c.heldout["correct"])),
        coverage=sample["coverage"], classified_by={h: c.how.count(h) for h in sorted(set(c.how))})
    return derive_version(repo_path(cfg.data), out, out_dir, step)


# ---------------------------------------------------------------- 15_decontam


def dedup_rows(cfg: DecontamConfig, ds: Any) -> Any:
    from .data.dedup import dataset_sides, deduplicate

    prompts, answers = dataset_sides(ds)
    texts = [f"{p}\n{a}" for p, a in zip(prompts, answers)]
    return deduplicate(texts, cfg.near_threshold, cfg.num_perm, cfg.shingle_n, seed=1, near=cfg.dedup_near,
                       exact=cfg.dedup_exact)


def decontaminate(cfg: DecontamConfig, ds: Any) -> dict[str, Any]:
    """Load the registry's benchmarks (skipping absent files with a reason), index, check rows."""
    from .data.decontam import DecontamIndex, hits_table, load_benchmarks, load_registry
    from .data.dedup import dataset_sides

    specs = load_registry(repo_path(cfg.registry))
    shared = repo_path(cfg.shared_data_dir) if cfg.shared_data_dir else ""
    benchmarks, skipped = load_benchmarks(specs, shared)
    index = DecontamIndex(**cfg.index_kwargs()).build(benchmarks)
    row_hits = index.check_rows(*dataset_sides(ds))
    return {"benchmarks": benchmarks, "skipped": skipped, "index": index, "row_hits": row_hits,
            "table": hits_table(benchmarks, skipped, row_hits, index)}


def write_decontaminated(cfg: DecontamConfig, ds: Any, dedup: Any, decon: dict[str, Any], out_dir: Path,
                         quarantine_path: Path) -> Any:
    """Child version without duplicates (filtered) and contaminated rows (quarantined)."""
    from collections import Counter

    from .data.manifests import isolation_manifest, processing_step
    from .data.versions import derive_version, read_manifests
    from .io import atomic_write_jsonl

    reasons, keep, quarantine = Counter(), [], []
    for i, (kept, why, hits) in enumerate(zip(dedup.keep, dedup.reason, decon["row_hits"])):
        if not kept:
            reasons[why] += 1
        elif hits and cfg.drop_contaminated:
            reasons[f"contaminated:{hits[0].benchmark}"] += 1
            quarantine.append({"row": i, "id": ds[i]["id"], "hits": [h.to_dict() for h in hits]})
        else:
            keep.append(i)
    atomic_write_jsonl(quarantine_path, quarantine)
    table = decon["table"]
    step = processing_step(
        "dedup_decontam", count_in=len(ds), count_out=len(keep), quarantined=len(quarantine), drop_reasons=reasons,
        params={k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("run_dir", "run_id", "data")},
        quarantine_path=str(quarantine_path), dedup_counts=dedup.counts)
    checked = [{k: v for k, v in r.items() if k != "status"} | {"match": "exact, word n-gram overlap, MinHash LSH"}
               for r in table if r["status"] == "checked"]
    parent = read_manifests(repo_path(cfg.data))["evaluation_isolation"]
    isolation = isolation_manifest(checked, method="text overlap on prompt and answer sides (15_decontam)",
                                   notes=[f"skipped {s['name']}: {s['reason']}" for s in decon["skipped"]])
    isolation |= {"skipped": decon["skipped"], "registry": str(repo_path(cfg.registry)),
                  "inherited": {k: v for k, v in parent.items() if k != "content_hash"}}
    return derive_version(repo_path(cfg.data), ds.select(keep), out_dir, step, isolation=isolation)


def hits_frame(decon: dict[str, Any]) -> Any:
    import pandas as pd

    return pd.DataFrame(decon["table"]).fillna("")


def example_hits(ds: Any, decon: dict[str, Any], limit: int = 10) -> Any:
    """The first contaminated rows with what they matched."""
    import pandas as pd

    rows = [{"id": ds[i]["id"], **h.to_dict()} for i, hs in enumerate(decon["row_hits"]) for h in hs[:1]]
    return pd.DataFrame(rows[:limit])
