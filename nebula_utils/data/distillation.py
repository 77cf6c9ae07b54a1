"""Response distillation: a teacher answers each prompt k times; the whole candidate group is kept.

Input prompts come from an `sft` version (the conversation before the last assistant turn; that
answer can be kept as one more candidate, generator "dataset"; a prompt-only row, which ends with
its user turn, has no such answer) or an `rl` version (its chat prompt). Output rows follow the `preference` schema: every candidate with its generator, its
sampling params and its scores, chosen/rejected and the preference reason, plus three extra
columns the schema allows:
  verifier, reference   the prompt's rule verifier and ground truth (null when it has none)
  candidate_meta        JSON list, one {finish_reason, num_tokens} per candidate (truncation)

Scores at this stage are the ones that come for free: the rule verifier (`verifier:<name>@<version>`)
when the prompt has one, and the teacher's mean token log-probability (`teacher_mean_logprob`).
Chosen/rejected rank by verifier score, then log-prob; a group where both tie on every signal is
marked `tie:` in its preference_reason so preference training can skip it. The multi-dimensional
cross-verification (stage 12) reads these groups.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from datasets import Dataset, Features, Value

from ..inference.generation import Completion, SamplingParams
from .schema import FEATURES, canonical_json, normalize_row, validate_rows

EXTRA_FEATURES = {"verifier": Value("string"), "reference": Value("string"), "candidate_meta": Value("string")}
LOGPROB_KEY = "teacher_mean_logprob"


def verifier_key(verifier: Any) -> str:
    return f"verifier:{verifier.name}@{verifier.version}"


def prompt_records(ds: Dataset, schema: str) -> list[dict[str, Any]]:
    """Prompt records {id, source, license, task, prompt, verifier, reference, original, parents}."""
    if schema not in ("sft", "rl"):
        raise ValueError(f"distillation reads sft or rl versions, not {schema!r}")
    out = []
    for row in ds:
        chat = [{"role": t["role"], "content": t["content"]} for t in row["messages"]]
        answered = schema == "sft" and chat[-1]["role"] == "assistant"
        original = chat[-1]["content"] if answered else None
        prompt = chat[:-1] if answered else chat
        out.append(
            {k: row[k] for k in ("id", "source", "license", "task", "verifier", "reference")}
            | {"prompt": prompt, "original": original, "parents": list(row["parents"] or [])}
        )
    return out


def score_candidates(
    records: Sequence[Mapping[str, Any]], texts: Sequence[Sequence[str]], workers: int = 1
) -> list[list[dict[str, float]]]:
    """{verifier key: score} per candidate, verifying in one batch per verifier name."""
    from ..verifiers import get_verifier, verify_batch

    scores: list[list[dict[str, float]]] = [[{} for _ in group] for group in texts]
    names = sorted({r["verifier"] for r in records if r.get("verifier") and r.get("reference")})
    for name in names:
        verifier = get_verifier(name)
        where = [
            (i, j)
            for i, r in enumerate(records)
            if r.get("verifier") == name and r.get("reference")
            for j in range(len(texts[i]))
        ]
        refs = [_reference(records[i]) for i, _ in where]
        results = verify_batch(verifier, [texts[i][j] for i, j in where], refs, workers=workers)
        for (i, j), res in zip(where, results):
            scores[i][j][verifier_key(verifier)] = res.score
    return scores


def _reference(record: Mapping[str, Any]) -> dict[str, Any]:
    ref = record["reference"]
    ref = json.loads(ref) if isinstance(ref, str) else dict(ref)
    if record["verifier"] in ("format", "math") and "prompt" not in ref:  # echo guards read it
        ref["prompt"] = record["prompt"][-1]["content"]
    return ref


def _rank_key(scores: Mapping[str, float]) -> tuple[float, float]:
    verified = [v for k, v in scores.items() if k.startswith("verifier:")]
    logprob = scores.get(LOGPROB_KEY)
    return (max(verified) if verified else 0.0, logprob if logprob is not None else -math.inf)


def rank(scores: Sequence[Mapping[str, float]]) -> tuple[int, int, str]:
    """(chosen, rejected, reason) from per-candidate scores; ties are marked 'tie:'."""
    keys = [_rank_key(s) for s in scores]
    chosen = max(range(len(keys)), key=lambda i: keys[i])
    rejected = min((i for i in range(len(keys)) if i != chosen), key=lambda i: keys[i])
    (vc, lc), (vr, lr) = keys[chosen], keys[rejected]
    if vc != vr:
        return chosen, rejected, f"verifier score {vc:g} vs {vr:g}"
    if lc != lr and math.isfinite(lr):
        return chosen, rejected, f"equal verifier score {vc:g}; teacher mean log-prob {lc:.3f} vs {lr:.3f}"
    return chosen, rejected, f"tie: no signal separates the candidates (verifier {vc:g})"


def build_groups(
    records: Sequence[Mapping[str, Any]],
    completions: Sequence[Sequence[Completion]],
    params: SamplingParams,
    generator_name: str,
    include_original: bool = True,
    workers: int = 1,
) -> list[dict[str, Any]]:
    """Preference rows: each prompt with its teacher completions (and the dataset answer)."""
    sampling = canonical_json(params.to_dict())
    groups = []
    for rec, comps in zip(records, completions):
        cands = [{"content": c.text, "generator": generator_name, "sampling_params": sampling} for c in comps]
        meta = [{"finish_reason": c.finish_reason, "num_tokens": c.num_tokens} for c in comps]
        scores = [{LOGPROB_KEY: c.mean_logprob} if c.mean_logprob is not None else {} for c in comps]
        if include_original and rec.get("original"):
            cands.append({"content": rec["original"], "generator": "dataset", "sampling_params": "{}"})
            meta.append({"finish_reason": "dataset", "num_tokens": None})
            scores.append({})
        groups.append({"rec": rec, "cands": cands, "meta": meta, "scores": scores})
    verified = score_candidates(
        [g["rec"] for g in groups], [[c["content"] for c in g["cands"]] for g in groups], workers
    )
    return [_group_row(g, v) for g, v in zip(groups, verified)]


def _group_row(group: dict[str, Any], verified: list[dict[str, float]]) -> dict[str, Any]:
    rec = group["rec"]
    scores = [s | v for s, v in zip(group["scores"], verified)]
    chosen, rejected, reason = rank(scores) if len(scores) > 1 else (0, 0, "single candidate")
    cands = [c | {"scores": canonical_json(s)} for c, s in zip(group["cands"], scores)]
    ref = rec.get("reference")
    return {
        "id": rec["id"],
        "source": rec["source"],
        "license": rec["license"],
        "task": rec["task"],
        "prompt": rec["prompt"],
        "candidates": cands,
        "chosen": chosen,
        "rejected": rejected,
        "preference_reason": reason,
        "parents": list(rec.get("parents") or []),
        "verifier": rec.get("verifier"),
        "reference": ref if ref is None or isinstance(ref, str) else canonical_json(ref),
        "candidate_meta": canonical_json(group["meta"]),
    }


def group_dataset(rows: Sequence[Mapping[str, Any]]) -> Dataset:
    """Validated preference rows with the extra columns, typed."""
    normalized = [normalize_row("preference", r) for r in rows]
    validate_rows("preference", normalized)
    features = Features(dict(FEATURES["preference"]) | EXTRA_FEATURES)
    return Dataset.from_dict({k: [r.get(k) for r in normalized] for k in features}, features=features)


def distill(
    generator: Any,
    records: Sequence[Mapping[str, Any]],
    params: SamplingParams,
    include_original: bool = True,
    workers: int = 1,
) -> list[dict[str, Any]]:
    """Generate k = params.n teacher answers per prompt record and build the candidate groups."""
    completions = generator.generate_full([r["prompt"] for r in records], params)
    return build_groups(records, completions, params, generator.model_spec, include_original, workers)
