"""Verifiers as TRL reward functions (GRPOTrainer `reward_funcs` + `reward_weights`).

RL rows carry a `verifier` column (a registered verifier name) and a `reference` column (the
reference dict as a JSON string). `make_reward_funcs` builds one reward function per verifier,
named `reward_<name>` so that TRL logs `rewards/reward_<name>/mean|std` separately: a run shows
which signal moved. Each returns a float for the rows routed to it and None for the others;
TRL 1.16 turns None into NaN and leaves that function out of those rows' weighted sum
(`GRPOTrainer._calculate_rewards`, then `nansum` in `_generate_and_score_completions`).

Each function also logs `verifiers/<name>/pass_rate` through TRL's `log_metric` hook and the
verifiers' reasons as a `<name>_reason` column of the completions table (`log_extra`), so a
collapse can be read (e.g. "timeout", "answer hedges between several values").

Code rewards run their sandboxes in a bounded thread pool of `workers`; math and IFEval are
pure-Python and run in the calling thread (see verifiers.base.BaseVerifier).

When a reference has no "prompt"/"question", the trainer's prompt (its last user message) is
filled in, so the echo guard also works on RL rows that only carry the answer. The reward
objects pickle by (name, options): TRL's async GRPO rollout worker sends reward functions to a
spawned process (see trl/rewards/accuracy_rewards.py).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .base import completion_text, get_verifier, hacking_guard, verify_batch
from .code import build_program
from .math_answer import extract_answer


def parse_reference(value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    try:
        ref = json.loads(value)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"reference column must be a JSON object string: {exc}") from None
    if not isinstance(ref, Mapping):
        raise ValueError(f"reference column must decode to an object, got {type(ref).__name__}")
    return ref


def _routes(verifier: Sequence[str] | None, n: int, known: set[str]) -> list[str]:
    if verifier is None:
        raise ValueError("reward functions need a 'verifier' column in the training dataset")
    if len(verifier) != n:
        raise ValueError(f"{len(verifier)} verifier names for {n} completions")
    unknown = sorted(set(verifier) - known)
    if unknown:
        raise ValueError(f"rows name verifiers {unknown} that have no reward function (configured: {sorted(known)})")
    return list(verifier)


def prompt_text(prompt: Any) -> str:
    """The question a prompt asks: the string itself, or the last user message's content."""
    if prompt is None or isinstance(prompt, str):
        return prompt or ""
    users = [m for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
    content = users[-1].get("content") if users else ""
    if isinstance(content, list):  # content blocks: [{"type": "text", "text": ...}, ...]
        content = " ".join(str(b.get("text", "")) for b in content if isinstance(b, Mapping))
    return str(content or "")


class VerifierReward:
    """TRL reward function for the rows whose `verifier` column equals `name`."""

    def __init__(self, name: str, known: set[str], workers: int = 1, **options: Any):
        self.name = name
        self.__name__ = f"reward_{name}"
        self.options = options
        self.verifier = get_verifier(name, **options)
        self.known = known
        self.workers = workers

    def __getstate__(self) -> dict:
        return {"name": self.name, "known": self.known, "workers": self.workers, "options": self.options}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["name"], state["known"], state["workers"], **state["options"])

    def _reference(self, value: Any, prompt: Any) -> Mapping[str, Any]:
        ref = parse_reference(value)
        if getattr(self.verifier, "prompt_is_question", False) and not ({"prompt", "question"} & set(ref)):
            ref = {**ref, "prompt": prompt_text(prompt)}
        return ref

    def __call__(
        self,
        prompts: list | None,
        completions: list,
        verifier: list[str] | None = None,
        reference: list | None = None,
        log_metric: Callable | None = None,
        log_extra: Callable | None = None,
        **_: Any,
    ) -> list[float | None]:
        routes = _routes(verifier, len(completions), self.known)
        mine = [i for i, v in enumerate(routes) if v == self.name]
        rewards: list[float | None] = [None] * len(completions)
        if not mine:
            return rewards
        if reference is None or len(reference) != len(completions):
            raise ValueError("reward functions need a 'reference' column with one value per completion")
        prompts = prompts if prompts is not None else [None] * len(completions)
        refs = [self._reference(reference[i], prompts[i]) for i in mine]
        results = verify_batch(self.verifier, [completions[i] for i in mine], refs, workers=self.workers)
        reasons: list[str | None] = [None] * len(completions)
        for i, res in zip(mine, results):
            rewards[i], reasons[i] = res.score, res.reason
        if log_metric is not None:
            log_metric(f"verifiers/{self.name}/pass_rate", sum(r.passed for r in results) / len(results))
        if log_extra is not None:
            log_extra(f"{self.name}_reason", reasons)
        return rewards


# Extraction methods that mark a final answer explicitly; the bare last-number fallback does not.
EXPLICIT_ANSWER = ("boxed", "answer_tag", "gsm8k", "answer_is")


def format_ok(name: str, completion: str, reference: Mapping[str, Any], prompt: str = "") -> bool | None:
    """Is the answer in the shape its verifier needs? None for rows with no format notion."""
    if name == "math":
        guard = hacking_guard(completion, reference.get("prompt") or reference.get("question") or prompt)
        return guard is None and extract_answer(completion)[1] in EXPLICIT_ANSWER
    if name == "code":
        if not all(isinstance(reference.get(k), str) for k in ("prompt", "test", "entry_point")):
            raise ValueError("code rows need a HumanEval-style reference (prompt, test, entry_point)")
        try:
            ast.parse(build_program(completion, reference)[0])
        except (SyntaxError, ValueError):
            return False
        return True
    if name == "ifeval":
        return hacking_guard(completion, reference.get("prompt") or prompt) is None
    return None  # "format" rows: the format verifier is itself the format signal


def reward_answer_format(
    prompts: list | None, completions: list, verifier: list[str] | None = None, reference: list | None = None, **_: Any
) -> list[float | None]:
    """1.0 when the answer is in its verifier's expected shape (explicit final answer for math,
    a program that parses for code, a non-degenerate answer for IFEval), else 0.0."""
    n = len(completions)
    routes = _routes(verifier, n, set(verifier or ()))
    refs = reference if reference is not None else [None] * n
    prompts = prompts if prompts is not None else [None] * n
    out: list[float | None] = []
    for name, completion, ref, prompt in zip(routes, completions, refs, prompts):
        ok = format_ok(
            name, completion_text(completion), parse_reference(ref) if ref is not None else {}, prompt_text(prompt)
        )
        out.append(None if ok is None else float(ok))
    return out


def make_reward_funcs(
    weights: Mapping[str, float],
    format_weight: float = 0.0,
    workers: int = 4,
    verifier_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[list[Callable], list[float]]:
    """(reward_funcs, reward_weights) for GRPOTrainer / GRPOConfig(reward_weights=...).

    weights: verifier name -> weight, e.g. {"math": 1.0, "code": 1.0, "ifeval": 0.5}.
    format_weight > 0 adds `reward_answer_format` (see its docstring) with that weight.
    workers: sandboxes alive at once when scoring code rows (default 4: the sandbox is I/O- and
    startup-bound, 4 workers were ~2x faster than 1 on the 2-core CPU box, see benchmarks).
    verifier_options: per-verifier constructor options, e.g. {"ifeval": {"strict": False}}.
    """
    if not weights:
        raise ValueError("make_reward_funcs needs at least one verifier weight")
    options = verifier_options or {}
    known = set(weights)
    funcs: list[Callable] = [VerifierReward(n, known, workers, **dict(options.get(n, {}))) for n in weights]
    reward_weights = [float(w) for w in weights.values()]
    if format_weight:
        funcs.append(reward_answer_format)
        reward_weights.append(float(format_weight))
    return funcs, reward_weights
