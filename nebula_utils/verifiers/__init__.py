"""Verifiers shared by data filtering, RL rewards and evaluation (one implementation each).

    from nebula_utils.verifiers import get_verifier, verify_batch
    math = get_verifier("math")
    math("... so the answer is \\boxed{42}", {"answer": "#### 42"}).score  # 1.0

Names: "math", "ifeval" (strict=True/False), "code" (HumanEval rows, sandboxed), "format".
Importing this package is light: lm-eval and the sandbox load only when their verifier is built.
"""

from .base import (
    VERIFIERS,
    BaseVerifier,
    InvalidReference,
    VerificationResult,
    Verifier,
    completion_text,
    get_verifier,
    hacking_guard,
    verify_batch,
)
from .ifeval import ifeval_scores

__all__ = [
    "VERIFIERS",
    "BaseVerifier",
    "InvalidReference",
    "VerificationResult",
    "Verifier",
    "completion_text",
    "get_verifier",
    "hacking_guard",
    "ifeval_scores",
    "verify_batch",
]
