"""What every verifier shares: the result type, the protocol, the registry and batch running.

A verifier is a small callable object `(completion, reference) -> VerificationResult` with a
`name` and a `version`. Every result records both, so a filtered data set, a reward curve or an
eval table can always say which checker (and which revision of its rules) produced a number.
Bump a verifier's `version` whenever a change could flip a verdict.

The anti-reward-hacking guards that are not specific to one task (empty answers, answers far
too long to be useful, answers that only repeat the prompt, degenerate repetition) live here
so that math, IFEval and format verifiers apply exactly the same rules.
"""

from __future__ import annotations

import importlib
import re
import threading
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

# Longest completion any verifier looks at. 100k characters is ~25k tokens: well above the
# longest chain of thought we train or evaluate (8k-16k tokens), far below what makes regexes
# or sympy slow. Longer outputs are a symptom (looping, padding for a length reward), not an answer.
MAX_COMPLETION_CHARS = 100_000

# Degenerate-repetition guard: natural English and worked solutions compress 2-4x with zlib
# (measured, texts >= 600 chars: GSM8K train question+solution median 2.1x, max 3.6x, n=2264;
# alpaca demo outputs max 2.8x, n=438); one phrase or keyword repeated compresses 20-500x. Only texts of at least 600 characters are
# judged, because short texts do not compress well whatever they contain.
REPETITION_MIN_CHARS = 600
REPETITION_MAX_RATIO = 6.0

# An answer counts as an echo of the prompt when removing the prompt's text leaves fewer than
# this many word characters: nothing the model wrote itself.
ECHO_MAX_OWN_CHARS = 3
# A verbatim *piece* of the prompt counts as an echo only when it carries at least half of the
# prompt's words. Short answers are very often substrings of the prompt: a bare GSM8K answer
# ("20") occurs inside its question in 144 of 1,319 test rows, and IFEval's constrained answers
# ("My answer is yes.") are quoted in the prompt by design; neither is an echo.
ECHO_MIN_CHUNK_FRACTION = 0.5


class InvalidReference(ValueError):
    """The reference row (ground truth) is malformed: a data bug, never a model failure."""


@dataclass(frozen=True)
class VerificationResult:
    score: float  # 0..1
    passed: bool
    reason: str
    verifier: str  # name of the verifier that produced it
    version: str
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"{self.verifier}: score {self.score} is outside [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Verifier(Protocol):
    name: str
    version: str

    def __call__(self, completion: str, reference: Mapping[str, Any]) -> VerificationResult: ...


class BaseVerifier:
    """Convenience base: `self.result(...)` fills in name and version."""

    name: str = "base"
    version: str = "0"
    # True when calls spend their time outside the GIL (subprocesses), so a thread pool helps.
    # CPU-bound pure-Python verifiers (math, IFEval) run in the calling thread: threads would
    # only add overhead, and math-verify's SIGALRM timeout works in the main thread only.
    parallel_in_threads: bool = False
    # True when the reference's "prompt" means the question the model saw (used by the echo
    # guard), so a reward adapter may fill it in from the trainer's prompt. False for code, where
    # "prompt" is the HumanEval stub the program is built from.
    prompt_is_question: bool = True

    def result(self, score: float, reason: str, passed: bool | None = None, **details: Any) -> VerificationResult:
        score = float(min(1.0, max(0.0, score)))
        return VerificationResult(
            score=score,
            passed=score >= 1.0 if passed is None else passed,
            reason=reason,
            verifier=self.name,
            version=self.version,
            details=details,
        )

    def fail(self, reason: str, **details: Any) -> VerificationResult:
        return self.result(0.0, reason, passed=False, **details)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version!r})"


# ---------------------------------------------------------------------------------------------
# Shared guards


def completion_text(completion: Any) -> str:
    """The text to verify: a plain string, or the last assistant message of a conversation."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return str(completion.get("content") or "")
    if isinstance(completion, Sequence):
        messages = [m for m in completion if isinstance(m, Mapping)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"]
        picked = assistant[-1] if assistant else (messages[-1] if messages else None)
        return str(picked.get("content") or "") if picked else ""
    raise TypeError(f"completion must be a string or a list of messages, got {type(completion).__name__}")


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def is_echo(completion: str, prompt: str | None) -> bool:
    """True when the completion is (repetitions of) the prompt, or a piece of it, and nothing more."""
    if not prompt or not completion.strip():
        return False
    c, p = _squash(completion), _squash(prompt)
    if c in p:  # a verbatim chunk of the prompt: an echo when it is most of the prompt
        return len(re.findall(r"\w+", c)) >= ECHO_MIN_CHUNK_FRACTION * len(re.findall(r"\w+", p))
    own = c.replace(p, " ")
    return p in c and len(re.findall(r"\w", own)) < ECHO_MAX_OWN_CHARS


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8", "replace")
    return len(data) / max(1, len(zlib.compress(data, 6)))


def hacking_guard(completion: str, prompt: str | None = None, max_chars: int = MAX_COMPLETION_CHARS) -> str | None:
    """Reason why a completion must get no credit whatever the task, or None when it may be judged."""
    if not completion.strip():
        return "empty answer"
    if len(completion) > max_chars:
        return f"answer too long ({len(completion)} chars > {max_chars})"
    if is_echo(completion, prompt):
        return "answer only echoes the prompt"
    if len(completion) >= REPETITION_MIN_CHARS:
        ratio = compression_ratio(completion)
        if ratio > REPETITION_MAX_RATIO:
            return f"degenerate repetition (compresses {ratio:.0f}x > {REPETITION_MAX_RATIO:.0f}x)"
    return None


# ---------------------------------------------------------------------------------------------
# Registry and batch runner

# Import strings, so that `get_verifier("math")` does not import lm-eval and vice versa.
VERIFIERS: dict[str, str] = {
    "math": "nebula_utils.verifiers.math_answer:MathVerifier",
    "ifeval": "nebula_utils.verifiers.ifeval:IFEvalVerifier",
    "code": "nebula_utils.verifiers.code:CodeVerifier",
    "format": "nebula_utils.verifiers.format:FormatVerifier",
}


def get_verifier(name: str, **options: Any) -> Verifier:
    """Build the verifier registered under `name` with its options (e.g. ifeval strict=False)."""
    try:
        target = VERIFIERS[name]
    except KeyError:
        raise ValueError(f"unknown verifier '{name}' (known: {', '.join(sorted(VERIFIERS))})") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)(**options)


def _resolve(name_or_verifier: str | Verifier) -> Verifier:
    return get_verifier(name_or_verifier) if isinstance(name_or_verifier, str) else name_or_verifier


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def verify_batch(
    name_or_verifier: str | Verifier,
    completions: Sequence[Any],
    references: Sequence[Mapping[str, Any]],
    workers: int = 1,
) -> list[VerificationResult]:
    """Verify completions[i] against references[i]; results keep the input order.

    `workers > 1` runs calls in a bounded thread pool for verifiers whose work happens in
    subprocesses (code); CPU-bound verifiers always run in the calling thread (see BaseVerifier).
    A malformed reference raises InvalidReference naming the row index.
    """
    if len(completions) != len(references):
        raise ValueError(f"{len(completions)} completions but {len(references)} references")
    verifier = _resolve(name_or_verifier)
    texts = [completion_text(c) for c in completions]

    def one(i: int) -> VerificationResult:
        try:
            return verifier(texts[i], references[i])
        except InvalidReference as exc:
            raise InvalidReference(f"row {i}: {exc}") from None

    if workers > 1 and getattr(verifier, "parallel_in_threads", False) and len(texts) > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(texts))) as pool:
            return list(pool.map(one, range(len(texts))))
    return [one(i) for i in range(len(texts))]
