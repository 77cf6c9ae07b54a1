"""Difficulty grading: a reference policy's verifier pass rate over n samples per prompt.

pass rate -> fine bin (BINS: exactly 0, (0, .25], (.25, .5], (.5, .75], (.75, 1), exactly 1) and
a coarse label: hard (pass rate <= hard_at_most), easy (pass rate > easy_above), medium between.
The medium pool is what the reasoning branch's GRPO trains on: prompts the policy sometimes
solves, whose sampled groups have reward variance (a group that always or never passes gives
GRPO a zero advantage, so no gradient).

A prompt whose reference a verifier rejects as malformed (`InvalidReference`) is a data bug, not a
hard prompt: it is quarantined with the reason, never graded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..inference.generation import SamplingParams

BINS = ("0", "(0,.25]", "(.25,.5]", "(.5,.75]", "(.75,1)", "1")
LABELS = ("hard", "medium", "easy")


def pass_rate_bin(rate: float) -> str:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"pass rate {rate!r} outside [0, 1]")
    if rate == 0.0:
        return BINS[0]
    if rate == 1.0:
        return BINS[5]
    for edge, name in ((0.25, BINS[1]), (0.5, BINS[2]), (0.75, BINS[3])):
        if rate <= edge:
            return name
    return BINS[4]


def difficulty_label(rate: float, hard_at_most: float = 0.25, easy_above: float = 0.75) -> str:
    if not 0.0 <= hard_at_most <= easy_above <= 1.0:
        raise ValueError(f"need 0 <= hard_at_most ({hard_at_most}) <= easy_above ({easy_above}) <= 1")
    if rate <= hard_at_most:
        return "hard"
    return "easy" if rate > easy_above else "medium"


@dataclass
class Graded:
    rows: list[dict[str, Any]]  # input rows (rl schema) with pass_rate and difficulty set
    quarantined: list[dict[str, Any]]  # {id, reason}
    samples: list[dict[str, Any]]  # per prompt: id, passes, finish reasons (for tables)


def _reference(row: Mapping[str, Any]) -> dict[str, Any]:
    ref = json.loads(row["reference"]) if isinstance(row["reference"], str) else dict(row["reference"])
    if row["verifier"] in ("math", "format") and "prompt" not in ref:
        ref["prompt"] = row["prompt"]
    return ref


def grade(
    generator: Any,
    rows: Sequence[Mapping[str, Any]],
    params: SamplingParams,
    *,
    hard_at_most: float,
    easy_above: float,
    workers: int = 1,
) -> Graded:
    """Sample params.n answers per prompt with the reference policy and verify each."""
    from ..verifiers import InvalidReference, get_verifier

    completions = generator.generate_full([list(r["messages"]) for r in rows], params)
    verifiers: dict[str, Any] = {}
    graded, quarantined, samples = [], [], []
    for row, group in zip(rows, completions):
        verifier = verifiers.setdefault(row["verifier"], get_verifier(row["verifier"]))
        try:
            passes = _verify(verifier, [c.text for c in group], _reference(row), workers)
        except InvalidReference as exc:
            quarantined.append({"id": row["id"], "reason": f"invalid_reference:{exc}"})
            continue
        rate = sum(passes) / len(passes)
        graded.append(dict(row) | {"pass_rate": rate, "difficulty": difficulty_label(rate, hard_at_most, easy_above)})
        samples.append(
            {
                "id": row["id"],
                "task": row["task"],
                "verifier": row["verifier"],
                "pass_rate": rate,
                "bin": pass_rate_bin(rate),
                "passes": passes,
                "truncated": sum(c.truncated for c in group),
            }
        )
    return Graded(graded, quarantined, samples)


def _verify(verifier: Any, texts: list[str], reference: dict[str, Any], workers: int) -> list[bool]:
    from ..verifiers import verify_batch

    return [r.passed for r in verify_batch(verifier, texts, [reference] * len(texts), workers=workers)]
