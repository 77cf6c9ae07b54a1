"""The targeted patch mix: the current model's measured weaknesses -> verified rows that target them.

NebulaExp's third SFT stage is a small mix aimed at the model's weak spots after stage 2. Here a
weakness is measured, not guessed:

1. `score_prompts`: the current model answers every training-side prompt that has a rule verifier
   `n` times (the prompt of an SFT row: its conversation before the last assistant turn); each
   answer is verified (data.difficulty.grade, the scoring 13_difficulty uses). A prompt's pass
   rate is passes / n; a prompt whose reference a verifier rejects is a data bug (quarantined).
2. `category_rates`: per task category, the mean per-prompt pass rate with a 95% bootstrap CI over
   prompts (n = prompts; each prompt's n samples are one cluster).
3. `weak_categories`: the categories with the lowest pass rate, at most `max_pass_rate`, at most
   `max_categories` of them.
4. `select_patch`: in the weak categories, the prompts the model fails (pass rate <= `fail_at_most`),
   worst first, whose own answer passes its verifier: that answer (a teacher answer that passed
   12_filter's gates, or the dataset's verified answer) is the patch row. Every row carries the
   weakness it targets; every other row is counted by reason, so the step balances.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NO_VERIFIER = "no_verifier"


def prompt_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], Counter]:
    """SFT rows -> prompt rows the grader reads (messages = the chat before the answer; `prompt` =
    the last user turn, which math/format echo guards read), and the count of rows without a
    verifier or reference (they cannot be scored)."""
    out, skipped = [], Counter()
    for row in rows:
        messages = list(row["messages"])
        if not row.get("verifier") or not row.get("reference") or messages[-1]["role"] != "assistant":
            skipped[NO_VERIFIER] += 1
            continue
        prompt = [dict(m) for m in messages[:-1]]
        out.append(
            dict(row) | {"messages": prompt, "prompt": prompt[-1]["content"], "answer": messages[-1]["content"]}
        )
    return out, skipped


def per_category(rows: Sequence[Mapping[str, Any]], k: int, seed: int = 0) -> tuple[list[dict[str, Any]], Counter]:
    """A seeded sample of at most k prompt rows per task (0 = all), so every category is measured
    on the same number of prompts (the demo's corpus is 199 math rows to 40 code rows: a plain
    sample of 32 would rate code on ~5 prompts); the rest are counted as `over_per_category`."""
    import random

    by_task: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_task.setdefault(row["task"], []).append(dict(row))
    chosen, drops = [], Counter()
    for task in sorted(by_task):
        items = sorted(by_task[task], key=lambda r: r["id"])
        random.Random(f"{seed}:{task}").shuffle(items)
        keep = items if not k else items[:k]
        chosen += keep
        if len(items) > len(keep):
            drops["over_per_category"] += len(items) - len(keep)
    return chosen, drops


@dataclass
class Scored:
    prompts: list[dict[str, Any]]  # one per scored prompt: id, task, pass_rate, passes, answer_verified
    quarantined: list[dict[str, Any]]  # {id, reason}: a reference the verifier rejects


def score_prompts(generator: Any, rows: Sequence[Mapping[str, Any]], params: Any, workers: int = 1) -> Scored:
    """Sample params.n answers per prompt row with `generator`, verify each (data.difficulty.grade),
    and verify the row's own answer too (a patch row must be a verified response)."""
    from .difficulty import grade

    graded = grade(generator, rows, params, hard_at_most=0.0, easy_above=1.0, workers=workers)
    by_id = {r["id"]: r for r in rows}
    own = answer_verified([by_id[s["id"]] for s in graded.samples], workers)
    prompts = [
        {
            "id": s["id"],
            "task": s["task"],
            "pass_rate": s["pass_rate"],
            "passes": int(sum(s["passes"])),
            "samples": len(s["passes"]),
            "truncated": s["truncated"],
            "answer_verified": ok,
        }
        for s, ok in zip(graded.samples, own)
    ]
    return Scored(prompts, graded.quarantined)


def answer_verified(rows: Sequence[Mapping[str, Any]], workers: int = 1) -> list[bool]:
    """Whether each prompt row's own `answer` passes the row's verifier."""
    from ..verifiers import get_verifier, verify_batch
    from .difficulty import _reference

    out = [False] * len(rows)
    for name in sorted({r["verifier"] for r in rows}):
        where = [i for i, r in enumerate(rows) if r["verifier"] == name]
        results = verify_batch(
            get_verifier(name),
            [rows[i]["answer"] for i in where],
            [_reference(rows[i]) for i in where],
            workers=workers,
        )
        for i, res in zip(where, results):
            out[i] = bool(res.passed)
    return out


def category_rates(prompts: Sequence[Mapping[str, Any]], seed: int = 0, resamples: int = 1000) -> list[dict[str, Any]]:
    """Per task: prompts (n), samples, mean pass rate and its 95% bootstrap CI over prompts; worst first."""
    from ..stats import bootstrap_mean, wilson_interval

    by_task: dict[str, list[Mapping[str, Any]]] = {}
    for p in prompts:
        by_task.setdefault(p["task"], []).append(p)
    out = []
    for task, items in by_task.items():
        rates = [p["pass_rate"] for p in items]
        est = bootstrap_mean(rates, resamples=resamples, seed=seed)
        ci, method = [est.low, est.high], "bootstrap over prompts"
        if len(set(rates)) == 1 and rates[0] in (0.0, 1.0):  # the bootstrap collapses to one point
            ci, method = list(wilson_interval(est.value, len(items))), "wilson over prompts (all equal)"
        out.append(
            {
                "task": task,
                "n": len(items),
                "samples": sum(p["samples"] for p in items),
                "pass_rate": est.value,
                "ci95": ci,
                "ci_method": method,
                "failed_prompts": sum(1 for p in items if p["pass_rate"] < 1.0),
            }
        )
    return sorted(out, key=lambda r: (r["pass_rate"], -r["n"], r["task"]))


def weak_categories(rates: Sequence[Mapping[str, Any]], max_categories: int, max_pass_rate: float) -> list[str]:
    """The lowest-pass-rate categories (rates sorted worst first) at or below max_pass_rate; 0 = no cap on the count."""
    weak = [r["task"] for r in rates if r["pass_rate"] <= max_pass_rate]
    return weak[:max_categories] if max_categories else weak


def select_patch(
    prompts: Sequence[Mapping[str, Any]],
    rates: Sequence[Mapping[str, Any]],
    weak: Sequence[str],
    fail_at_most: float,
) -> tuple[list[dict[str, Any]], Counter]:
    """Targets (one per patch candidate: id, task, pass rate, the weakness it targets), worst prompt
    first, and the reasons the other scored prompts were left out."""
    rate_of = {r["task"]: r for r in rates}
    targets, drops = [], Counter()
    for p in sorted(prompts, key=lambda p: (p["pass_rate"], p["task"], p["id"])):
        if p["task"] not in weak:
            drops["category_not_weak"] += 1
        elif p["pass_rate"] > fail_at_most:
            drops["model_passes"] += 1
        elif not p["answer_verified"]:
            drops["answer_not_verified"] += 1
        else:
            cat = rate_of[p["task"]]
            targets.append(
                {
                    "id": p["id"],
                    "task": p["task"],
                    "pass_rate": p["pass_rate"],
                    "passes": p["passes"],
                    "samples": p["samples"],
                    "weakness": (
                        f"{p['task']}: model passes {cat['pass_rate']:.2f} "
                        f"[{cat['ci95'][0]:.2f}, {cat['ci95'][1]:.2f}] of n={cat['n']} prompts; "
                        f"this prompt {p['passes']}/{p['samples']}"
                    ),
                }
            )
    return targets, drops
