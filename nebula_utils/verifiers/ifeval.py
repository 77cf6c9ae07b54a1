"""Instruction-following verifier: lm-eval's IFEval checkers, driven by IFEval rows.

The checking itself is lm-eval's (`lm_eval.tasks.ifeval.utils.test_instruction_following_strict`
/ `_loose`), so our numbers are the official IFEval numbers. Both modes are computed on every
call and kept in `details` ("follow_strict", "follow_loose": one boolean per instruction), so
`ifeval_scores` can report the four standard metrics from any list of results whatever mode the
verifier was built with.

`score` is the reward: the fraction of instructions followed in the chosen mode (partial credit
gives GRPO a denser signal than all-or-nothing), `passed` is "all followed". Two hacking rules
set the score to 0 while leaving the official booleans untouched: the shared guards of
`base.hacking_guard` (empty, echo of the prompt, degenerate repetition, too long), and keyword
stuffing: when a keyword instruction is present and the answer has fewer than
MIN_CONTENT_WORDS words once the required keywords are removed, it follows the letter of the
instruction with no content at all.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .base import MAX_COMPLETION_CHARS, BaseVerifier, InvalidReference, VerificationResult, hacking_guard

_KEYWORD_INSTRUCTIONS = {"keywords:existence": "keywords", "keywords:frequency": "keyword"}
# "Write a haiku with the word X" needs at least a few words besides X; 5 is below every answer
# that IFEval's prompts (essays, emails, poems, lists) could reasonably accept.
MIN_CONTENT_WORDS = 5
CHECKER_SEED = 0


def _ifeval_utils():
    # NLTK must find punkt_tab before lm-eval's module import runs its download check.
    from .offline_data import ensure_punkt_tab

    ensure_punkt_tab()
    import langdetect
    from lm_eval.tasks.ifeval import instructions_registry, utils

    # langdetect samples n-grams at random: unseeded, the same answer can be judged "en" on one
    # call and not on the next (response_language, english_capital/lowercase). A reward must be
    # a function of the text, so fix its seed (lm-eval leaves it unset).
    langdetect.DetectorFactory.seed = 0

    return utils, instructions_registry.INSTRUCTION_DICT


def _clean_kwargs(kwargs: Any, n: int) -> list[dict]:
    if not isinstance(kwargs, list) or len(kwargs) != n:
        raise InvalidReference(f"ifeval 'kwargs' must be a list with one dict per instruction ({n})")
    return [{k: v for k, v in (kw or {}).items() if v is not None} for kw in kwargs]


def _stuffed_keywords(completion: str, ids: list[str], kwargs: list[dict]) -> bool:
    keywords = []
    for instruction_id, kw in zip(ids, kwargs):
        value = kw.get(_KEYWORD_INSTRUCTIONS.get(instruction_id, ""), [])
        keywords += [value] if isinstance(value, str) else list(value)
    if not any(re.search(re.escape(k), completion, re.IGNORECASE) for k in keywords):
        return False  # a short answer without the keywords is judged by the checkers, not called stuffing
    rest = completion
    for keyword in keywords:
        rest = re.sub(re.escape(keyword), " ", rest, flags=re.IGNORECASE)
    return len(re.findall(r"\w+", rest)) < MIN_CONTENT_WORDS


class IFEvalVerifier(BaseVerifier):
    name = "ifeval"
    version = "2"  # 2: short answers quoted in the prompt are no echo; seeded checkers; stuffing needs a keyword

    def __init__(self, strict: bool = True, max_chars: int = MAX_COMPLETION_CHARS):
        self.strict = strict
        self.max_chars = max_chars
        self._utils, self._registry = _ifeval_utils()

    def __call__(self, completion: str, reference: Mapping[str, Any]) -> VerificationResult:
        ids = reference.get("instruction_id_list")
        if not isinstance(ids, list) or not ids:
            raise InvalidReference("ifeval reference needs a non-empty 'instruction_id_list'")
        unknown = [i for i in ids if i not in self._registry]
        if unknown:
            raise InvalidReference(f"unknown IFEval instruction ids {unknown}")
        kwargs = _clean_kwargs(reference.get("kwargs"), len(ids))
        prompt = str(reference.get("prompt") or "")
        example = self._utils.InputExample(
            key=reference.get("key", 0), instruction_id_list=ids, prompt=prompt, kwargs=kwargs
        )
        # lm-eval's checkers draw a random parameter when a kwarg is invalid (one real IFEval row
        # asks for the "letter" '#', so its letter is drawn from Python's global `random`): seed it
        # for the call, restore it after, so that the same answer always gets the same reward.
        state = random.getstate()
        random.seed(CHECKER_SEED)
        try:
            strict = self._utils.test_instruction_following_strict(example, completion).follow_instruction_list
            loose = self._utils.test_instruction_following_loose(example, completion).follow_instruction_list
        except Exception as exc:  # a checker crashing on odd text (e.g. langdetect) = not followed
            return self.fail(
                f"IFEval checker error: {type(exc).__name__}: {exc}",
                instruction_id_list=ids,
                follow_strict=[False] * len(ids),
                follow_loose=[False] * len(ids),
            )
        finally:
            random.setstate(state)
        details = {
            "instruction_id_list": ids,
            "follow_strict": strict,
            "follow_loose": loose,
            "mode": "strict" if self.strict else "loose",
        }
        guard = hacking_guard(completion, prompt, self.max_chars)
        if guard is None and _stuffed_keywords(completion, ids, kwargs):
            guard = f"keywords stuffed without content (< {MIN_CONTENT_WORDS} other words)"
        if guard:
            return self.fail(guard, **details)
        follow = strict if self.strict else loose
        failed = [i for i, ok in zip(ids, follow) if not ok]
        reason = "all instructions followed" if not failed else f"not followed: {', '.join(failed)}"
        return self.result(sum(follow) / len(follow), reason, passed=all(follow), **details)


def ifeval_scores(results: Iterable[VerificationResult]) -> dict[str, float]:
    """The four official IFEval metrics (lm-eval's definitions) from verifier results."""
    results = list(results)
    if not results:
        raise ValueError("ifeval_scores needs at least one result")
    out: dict[str, float] = {"n_prompts": len(results)}
    for mode in ("strict", "loose"):
        lists = [r.details[f"follow_{mode}"] for r in results]
        flat = [ok for follow in lists for ok in follow]
        out[f"prompt_level_{mode}"] = sum(all(f) for f in lists) / len(lists)
        out[f"inst_level_{mode}"] = sum(flat) / len(flat)
    out["n_instructions"] = sum(len(r.details["follow_strict"]) for r in results)
    return out
