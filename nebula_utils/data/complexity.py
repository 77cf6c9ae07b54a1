"""What makes an SFT row complex: the hard and multi-constraint rows of each capability.

The complex curriculum mix (16_curriculum, `mix_complexity`) takes these rows. Light on purpose
(no datasets import): stage configs check their values against COMPLEXITY.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

COMPLEXITY = ("any", "complex", "simple")  # what a curriculum mix may take
_STEP_LINE = re.compile(r"=")  # a worked-answer line with a computation ("3 - 7 = -4")


def _reference(row: Mapping[str, Any]) -> dict[str, Any]:
    ref = row.get("reference")
    if not ref:
        return {}
    try:
        out = json.loads(ref) if isinstance(ref, str) else dict(ref)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def math_steps(answer: str) -> int:
    """Computation lines of a worked answer (lines holding '='), the final-answer line left out."""
    return sum(1 for line in answer.splitlines() if _STEP_LINE.search(line) and "\\boxed" not in line)


def complexity_reason(
    row: Mapping[str, Any],
    min_if_instructions: int = 2,
    min_math_steps: int = 3,
    hard_labels: Sequence[str] = ("hard",),
) -> str:
    """Why a row is complex ("" = it is not), by capability:

    - any task: its difficulty label (13_difficulty-style) is in `hard_labels`;
    - instruction following (task complex_if or an ifeval reference): at least `min_if_instructions`
      instructions in the reference's instruction_id_list (several constraints at once);
    - code (task or verifier): every code row (a whole function against unit tests);
    - math (task math_reasoning or a math reference): at least `min_math_steps` computation lines
      in the answer (multi-step: a 4-term chain sum or a leg count, not a one-line lcm).
    """
    if row.get("difficulty") in hard_labels:
        return f"difficulty:{row['difficulty']}"
    task, verifier = row.get("task"), row.get("verifier")
    if task == "complex_if" or verifier == "ifeval":
        n = len(_reference(row).get("instruction_id_list") or [])
        return f"if_instructions:{n}" if n >= min_if_instructions else ""
    if task == "code" or verifier == "code":
        return "code"
    if task == "math_reasoning" or verifier == "math":
        messages = row.get("messages") or []
        answer = messages[-1]["content"] if messages and messages[-1]["role"] == "assistant" else ""
        steps = math_steps(answer)
        return f"math_steps:{steps}" if steps >= min_math_steps else ""
    return ""
