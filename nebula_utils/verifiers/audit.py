"""The reward-hacking audit set: known exploits, kept as data with the verdict each must get.

`assets/reward_hacking_audit.jsonl`, one case a line: id, verifier, attack, reference,
expected_score, expected_passed, expected_reason (a substring of the verifier's reason), and the
completion either literally (`completion`) or, for very long ones, as `completion_parts`:
[[text, repeat], ...] joined in order. Positive controls (legitimate answers that must still
score) sit next to the attacks so that a rule cannot pass the audit by rejecting everything.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from typing import Any

from ..io import iter_jsonl
from .base import get_verifier

AUDIT_FILE = "reward_hacking_audit.jsonl"
REQUIRED = ("id", "verifier", "attack", "reference", "expected_score", "expected_passed", "expected_reason")


def audit_path():
    return resources.files("nebula_utils") / "assets" / AUDIT_FILE


def load_audit_cases() -> Iterator[dict[str, Any]]:
    path = audit_path()
    for lineno, case in iter_jsonl(path):
        missing = [k for k in REQUIRED if k not in case]
        if missing or ("completion" in case) == ("completion_parts" in case):
            raise ValueError(f"{path}:{lineno}: needs {missing or 'exactly one of completion / completion_parts'}")
        if "completion_parts" in case:
            case["completion"] = "".join(text * int(times) for text, times in case.pop("completion_parts"))
        yield case


def run_audit(verifier_options: dict[str, dict] | None = None) -> list[dict[str, Any]]:
    """Every case with the verdict it got and `ok` (got == expected)."""
    options, cache, rows = verifier_options or {}, {}, []
    for case in load_audit_cases():
        name = case["verifier"]
        if name not in cache:
            cache[name] = get_verifier(name, **options.get(name, {}))
        got = cache[name](case["completion"], case["reference"])
        ok = (
            abs(got.score - case["expected_score"]) < 1e-9
            and got.passed == case["expected_passed"]
            and case["expected_reason"] in got.reason
        )
        rows.append(
            {
                "id": case["id"],
                "verifier": name,
                "attack": case["attack"],
                "score": got.score,
                "passed": got.passed,
                "reason": got.reason,
                "ok": ok,
            }
        )
    return rows
