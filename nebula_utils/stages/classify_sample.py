"""Stage 14_classify_sample: task classification and diversity-aware sampling.

Label every row with a task (rules + embedding classifier, data/classify.py), then keep
`target_fraction` of the rows with per-task quotas, chosen inside each task by k-center greedy or
k-means medoids (`selection`) on the prompt embeddings (data/diversity.py); the coverage of both
pickers is compared with random samples of the same quotas. Writes a child data version under
`<run_dir>/data` with one processing step (in = kept + filtered + quarantined). Heavy modules are
imported inside functions: resolving a stage config must not import torch or datasets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..config import StageConfig, doc
from ..paths import repo_path


@dataclass
class ClassifySampleConfig(StageConfig):
    # the curated corpus: teacher answers (11_distill) that passed cross-verification (12_filter)
    upstream: ClassVar[dict[str, str]] = {"data": "12_filter/sft"}
    builtin_inputs: ClassVar[dict[str, str]] = {"data": "sft"}

    data: str = doc(
        'data version to classify and sample; "" = the newest 12_filter/sft (the cross-verified corpus) under results/'
    )
    shared_data_dir: str = doc('labelled prompts from this folder when it exists (repo-relative); "" = none')
    classifier_per_class: int = doc("labelled prompts per task and source group (pypi, seed, shared)")
    classifier_holdout: float = doc("fraction of the labelled prompts held out for the accuracy estimate")
    classifier_C: float = doc("inverse L2 strength of the logistic regression on MiniLM embeddings")
    relabel: bool = doc("each kept row's `task` becomes the predicted task")
    target_fraction: float = doc("fraction of rows kept, within per-task quotas")
    min_per_category: int = doc("every task keeps at least this many rows")
    selection: str = doc(
        "kmeans (min mean distance; won on real MiniLM embeddings at 5-25%) | kcenter (min max distance) | random"
    )
    random_baseline_seeds: int = doc("random samples with the same quotas, for the coverage baseline")
    embed_batch_size: int = doc("texts per MiniLM forward pass")

    def check(self) -> None:
        from ..data.diversity import METHODS

        self.one_of("selection", METHODS)
        self.above("target_fraction", 0.0)
        self.within("target_fraction", 0.0, 1.0)
        self.above("classifier_holdout", 0.0)
        self.within("classifier_holdout", 0.0, 0.9)
        self.above("classifier_C", 0.0)
        self.at_least("classifier_per_class", 2)
        self.at_least("min_per_category", 0)
        self.at_least("random_baseline_seeds", 1)
        self.at_least("embed_batch_size", 1)


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
    from ..data.classify import embed_cached, train_classifier
    from ..data.dedup import dataset_sides
    from ..data.versions import load_version

    ds = load_version(repo_path(cfg.data))
    shared = repo_path(cfg.shared_data_dir) if cfg.shared_data_dir else ""
    trained = train_classifier(
        cfg.classifier_per_class, cfg.seed, shared, cfg.classifier_holdout, cfg.classifier_C, cfg.embed_batch_size
    )
    prompts = dataset_sides(ds)[0]
    emb, emb_cached = embed_cached(prompts, cfg.embed_batch_size)
    predicted, how = trained.classifier.predict(prompts, emb)
    return Classified(
        ds,
        prompts,
        emb,
        predicted,
        how,
        trained.heldout,
        trained.groups,
        {"classifier": trained.cached, "embeddings": emb_cached},
    )


def diversity_sample(cfg: ClassifySampleConfig, c: Classified) -> dict[str, Any]:
    """Quotas, the `selection` pick, and the coverage of each picker next to random selections."""
    from ..data.diversity import category_quotas, coverage, random_coverage, select

    target = max(1, round(cfg.target_fraction * len(c.labels)))
    quotas = category_quotas(c.labels, target, cfg.min_per_category)
    picks = {m: select(c.embeddings, c.labels, quotas, seed=cfg.seed, method=m) for m in ("kcenter", "kmeans")}
    chosen = picks.get(cfg.selection)
    if chosen is None:
        chosen = select(c.embeddings, c.labels, quotas, seed=cfg.seed, method=cfg.selection)
    return {
        "quotas": quotas,
        "selected": chosen,
        "coverage": coverage(c.embeddings, chosen),
        "by_method": {m: coverage(c.embeddings, p) for m, p in picks.items()},
        "random": random_coverage(
            c.embeddings, c.labels, quotas, range(cfg.seed, cfg.seed + cfg.random_baseline_seeds)
        ),
    }


def write_sampled(cfg: ClassifySampleConfig, c: Classified, sample: dict[str, Any], out_dir: Path) -> Any:
    from ..data.manifests import processing_step
    from ..data.versions import derive_version

    chosen = [int(i) for i in sample["selected"]]
    out = c.ds.select(chosen)
    old = [c.ds[i]["task"] for i in chosen]
    new = [c.labels[i] for i in chosen]
    if cfg.relabel:
        out = out.map(lambda _, i: {"task": new[i]}, with_indices=True)
    n_in = len(c.ds)
    step = processing_step(
        "classify_sample",
        count_in=n_in,
        count_out=len(out),
        drop_reasons={"not_selected": n_in - len(out)},
        params={k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("run_dir", "run_id", "data")},
        quotas=sample["quotas"],
        relabelled=sum(a != b for a, b in zip(old, new)) if cfg.relabel else 0,
        classifier_heldout_accuracy=sum(c.heldout["correct"]) / max(1, len(c.heldout["correct"])),
        coverage=sample["coverage"],
        classified_by={h: c.how.count(h) for h in sorted(set(c.how))},
    )
    return derive_version(repo_path(cfg.data), out, out_dir, step)
