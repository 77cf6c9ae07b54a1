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
_FENCE = re.compile(r"```(?:python|py)?[^\n]*\n(.*?)```", re.S)  # the first fenced code block


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


def code_statements(answer: str) -> int:
    """Statements of the code in an answer (its first fenced block, else the whole text), not
    counting function/class headers, imports and docstrings: a one-line `return` is 1, a loop with
    a counter and a condition 4 or more; -1 when it does not parse."""
    import ast

    match = _FENCE.search(answer)
    try:
        tree = ast.parse(match.group(1) if match else answer)
    except SyntaxError:
        return -1
    skip = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)
    return sum(
        1
        for node in ast.walk(tree)
        if isinstance(node, ast.stmt)
        and not isinstance(node, skip)
        and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
    )


def _answer(row: Mapping[str, Any]) -> str:
    messages = row.get("messages") or []
    return messages[-1]["content"] if messages and messages[-1]["role"] == "assistant" else ""


def complexity_reason(
    row: Mapping[str, Any],
    min_if_instructions: int = 2,
    min_math_steps: int = 3,
    min_code_statements: int = 4,
    hard_labels: Sequence[str] = ("hard",),
) -> str:
    """Why a row is complex ("" = it is not), by capability:

    - any task: its difficulty label (13_difficulty-style) is in `hard_labels`;
    - instruction following (task complex_if or an ifeval reference): at least `min_if_instructions`
      instructions in the reference's instruction_id_list (several constraints at once);
    - code (task or verifier): at least `min_code_statements` statements in the answer's code
      (HumanEval train solutions: half are 1-3 statements, half 4-11);
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
        n = code_statements(_answer(row))
        return f"code_statements:{n}" if n >= min_code_statements else ""
    if task == "math_reasoning" or verifier == "math":
        steps = math_steps(_answer(row))
        return f"math_steps:{steps}" if steps >= min_math_steps else ""
    return ""
