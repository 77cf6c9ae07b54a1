"""Rejection-sampling fine-tuning (RSFT): sample k answers per prompt from the current policy, keep the
best one that passes its verifier, fine-tune the policy on the kept answers.

Industrial pipelines put RSFT between SFT and RL (Llama 2/3's rejection sampling, the RL "cold start"):
the model learns from its own verified outputs, so the training data is on-policy and every row is
checked. Sampling and verification are data.distillation.distill (the same code path as teacher
distillation, with the policy as the teacher and no dataset answer in the group); fine-tuning is
train.sft.train_sft, called as is.

Selection per prompt: among the k samples, those not truncated (finish reason "length", unless
`allow_truncated`) whose verifier score is >= `min_score` pass; the kept one is the highest-scoring passing sample, the
shorter on ties (no reward for verbosity). A prompt with no passing sample contributes nothing.

Effective sample rate per task = kept / generated (at most 1/k: one answer kept per prompt);
the pass rate (passing / generated) and the prompt coverage (prompts with a kept answer / prompts)
are reported beside it, each a mean of 0/1 items with n and a 95% bootstrap interval.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..stats import bootstrap_mean


def _verifier_score(scores: Mapping[str, float]) -> tuple[float | None, str | None]:
    """(best verifier score, its version) of one candidate's scores."""
    found = [(v, k.rsplit("@", 1)[-1]) for k, v in scores.items() if k.startswith("verifier:") and v is not None]
    return max(found) if found else (None, None)


def select_best(
    groups: Sequence[Mapping[str, Any]], min_score: float, allow_truncated: bool = False
) -> tuple[list[dict], list[dict]]:
    """(sft rows: one per prompt with a passing sample, per-sample records {group, task, index, score,
    passed, kept}). A truncated sample passes only with `allow_truncated` (tiny test models never
    end their turn; a real policy's cut-off answer would teach it not to stop)."""
    rows, samples = [], []
    for group in groups:
        meta = json.loads(group.get("candidate_meta") or "[]")
        passing = []
        for i, cand in enumerate(group["candidates"]):
            score, version = _verifier_score(json.loads(cand["scores"] or "{}"))
            truncated = i < len(meta) and meta[i].get("finish_reason") == "length"
            ok = score is not None and score >= min_score and (allow_truncated or not truncated)
            if ok:
                passing.append((score, -len(cand["content"]), -i, i, version))
            samples.append({"group": group["id"], "task": group["task"], "index": i, "score": score, "passed": ok})
        if not passing:
            continue
        score, _, _, best, version = max(passing)
        for s in samples[-len(group["candidates"]) :]:
            s["kept"] = s["index"] == best
        rows.append(_sft_row(group, best, score, version))
    for s in samples:
        s.setdefault("kept", False)
    return rows, samples


def _sft_row(group: Mapping[str, Any], best: int, score: float, version: str | None) -> dict[str, Any]:
    return {
        "id": group["id"],
        "source": group["source"],
        "license": group["license"],
        "task": group["task"],
        "messages": list(group["prompt"]) + [{"role": "assistant", "content": group["candidates"][best]["content"]}],
        "quality": {"verifier": float(score)},
        "verifier": group.get("verifier"),
        "verifier_version": version,
        "reference": group.get("reference"),
        "parents": list(group.get("parents") or []),
    }


def rejection_sample(
    generator: Any,
    records: Sequence[Mapping[str, Any]],
    params: Any,
    min_score: float = 1.0,
    workers: int = 1,
    allow_truncated: bool = False,
) -> tuple[list[dict], list[dict], list[dict]]:
    """(candidate groups, kept sft rows, per-sample records) for k = params.n samples per prompt record."""
    from ..data.distillation import distill

    unverifiable = [r["id"] for r in records if not (r.get("verifier") and r.get("reference"))]
    if unverifiable:
        raise ValueError(f"RSFT needs a verifier per prompt; {len(unverifiable)} have none (first: {unverifiable[0]})")
    groups = distill(generator, records, params, include_original=False, workers=workers)
    rows, samples = select_best(groups, min_score, allow_truncated)
    return groups, rows, samples


def timed_rejection_sample(*args: Any, **kwargs: Any) -> tuple[list[dict], list[dict], list[dict], dict[str, dict]]:
    """rejection_sample plus timing/sampling_wall_s and timing/sampling_cpu_s (process CPU, all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = rejection_sample(*args, **kwargs)
    n = len(out[2])
    timing = {
        "timing/sampling_wall_s": {"value": time.perf_counter() - wall, "n": n},
        "timing/sampling_cpu_s": {"value": time.process_time() - cpu, "n": n},
    }
    return (*out, timing)


def sample_rates(samples: Sequence[Mapping[str, Any]], resamples: int = 1000, seed: int = 0) -> dict[str, dict]:
    """rsft/effective_rate|pass_rate|coverage/<task and all>: {value, n, ci95}."""
    by_task: dict[str, list[Mapping[str, Any]]] = {"all": list(samples)}
    for s in samples:
        by_task.setdefault(s["task"], []).append(s)
    out = {}
    for task, items in sorted(by_task.items()):
        kept = [1.0 if s["kept"] else 0.0 for s in items]
        passed = [1.0 if s["passed"] else 0.0 for s in items]
        groups: dict[str, float] = {}
        for s in items:
            groups[s["group"]] = max(groups.get(s["group"], 0.0), 1.0 if s["kept"] else 0.0)
        out[f"rsft/effective_rate/{task}"] = bootstrap_mean(kept, resamples, seed).as_metric()
        out[f"rsft/pass_rate/{task}"] = bootstrap_mean(passed, resamples, seed).as_metric()
        out[f"rsft/coverage/{task}"] = bootstrap_mean(list(groups.values()), resamples, seed).as_metric()
    return out


def rate_table(metrics: Mapping[str, Mapping[str, Any]]):
    """Per task: prompts covered, samples generated, passing and kept, as rates with their intervals."""
    import pandas as pd

    tasks = sorted({k.split("/")[-1] for k in metrics if k.startswith("rsft/effective_rate/")})
    rows = []
    for task in tasks:
        row = {"task": task, "generated": metrics[f"rsft/effective_rate/{task}"]["n"]}
        for name in ("effective_rate", "pass_rate", "coverage"):
            m = metrics[f"rsft/{name}/{task}"]
            row[name] = f"{m['value']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"
        rows.append(row)
    return pd.DataFrame(rows)


def train_rsft(sft_cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """Fine-tune on the kept answers: train.sft.train_sft with an SFT stage config whose `data` is the
    kept-answers version (built by stages.rsft.RSFTStageConfig.sft_config)."""
    from .sft import train_sft

    cpu = time.process_time()
    metrics = train_sft(sft_cfg, run_dir)
    return metrics | {"timing/train_cpu_s": {"value": time.process_time() - cpu, "n": None}}
