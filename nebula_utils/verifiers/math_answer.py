"""Math final-answer verifier: extract the model's final answer, compare it with math-verify.

Extraction (our own, because math-verify's `parse` happily takes *any* number it finds, which
is exactly what answer spraying exploits) looks only at prose, never inside code blocks, and
picks the first of these that exists:
  1. the last `\\boxed{...}` / `\\fbox{...}` (balanced braces);
  2. the last `<answer>...</answer>` tag (reasoning-gym's and the R1-style GRPO format);
  3. the last GSM8K-style `#### answer` line;
  4. the last "the (final) answer is ..." / "final answer: ..." phrase, up to the end of the line,
     then cut to its leading math span or number ("42 because 6 * 7 = 42." -> "42");
  5. the last number in the text.
Equivalence: plain numbers (with thousands separators, units, `$`, `%` stripped) are compared
exactly as fractions, which is fast and covers GSM8K; everything else goes to math-verify
(LaTeX, fractions, expressions, sets), which owns symbolic equivalence.

Hacking rules (each returns score 0 with its reason): the shared guards of `base.hacking_guard`,
several *different* boxed answers, an answer span that hedges between several values
("40 or 41 or 42"), and a last-number fallback on text that is mostly numbers (spraying).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from .base import (
    MAX_COMPLETION_CHARS,
    BaseVerifier,
    InvalidReference,
    VerificationResult,
    hacking_guard,
    in_main_thread,
)

_FENCED = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_TAG = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL | re.IGNORECASE)
_GSM8K = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS = re.compile(r"\b(?:final answer|the answer|answer)\s*(?:is|:|=)\s*:?\s*([^\n]+)", re.IGNORECASE)
# The answer phrase runs to the end of the line; its answer is the leading math span, or the
# leading number when prose or a unit follows it ("42 because ...", "18 dollars."), or else the
# text up to the first sentence end.
_LEAD_MATH = re.compile(r"(\$\$?)(.+?)\1|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_LEAD_NUMBER = re.compile(r"\\?\$?\s*(-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?)(?=\s*(?:$|[A-Za-z%\\]|[.,;:!?)](?:\s|$)))")
_SENTENCE_END = re.compile(r"\.\s+(?=[A-Z])")
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:\s*/\s*\d+)?")
_THOUSANDS = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+)(?![\d,])")
_PLAIN_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?$")
# Several values offered as the answer: "3, 4 or 5", "2; 7", "40 or 41". Checked after thousands
# separators are removed, so "1,000" is one value.
_HEDGE = re.compile(r"\d\s*(?:,|;|\bor\b|\band\b)\s*[-$\\(]*\d")
# Spraying on the last-number fallback: at least 20 numbers making up at least half of the
# tokens. Worked GSM8K solutions are ~22% numbers (test split: median 0.22, p99 0.39, n=1319),
# and none of them is flagged once its "####" line is removed.
SPRAY_MIN_NUMBERS = 20
SPRAY_MIN_FRACTION = 0.5


def strip_code(text: str) -> str:
    """Prose only: fenced blocks (even an unterminated last one) and inline code removed."""
    return _INLINE_CODE.sub(" ", _FENCED.sub(" ", text))


def boxed_contents(text: str) -> list[str]:
    """Contents of every \\boxed{...} / \\fbox{...}, with nested braces balanced."""
    found = []
    for match in _BOX_START.finditer(text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                found.append(text[start:i].strip())
                break
    return found


def extract_answer(text: str) -> tuple[str | None, str]:
    """(answer span, method) from a completion's prose; (None, "none") when there is no answer."""
    prose = strip_code(text)
    boxed = boxed_contents(prose)
    if boxed:
        return boxed[-1], "boxed"
    for method, pattern in (("answer_tag", _ANSWER_TAG), ("gsm8k", _GSM8K), ("answer_is", _ANSWER_IS)):
        matches = pattern.findall(prose)
        if matches:
            return matches[-1].strip(), method
    numbers = _NUMBER.findall(prose)
    if numbers:
        return numbers[-1], "last_number"
    return None, "none"


def answer_core(span: str) -> str:
    """The answer itself from an "answer is ..." span: its leading math span or number."""
    s = span.strip()
    if math := _LEAD_MATH.match(s):
        return next(g for g in math.groups()[1:] if g is not None).strip()
    if number := _LEAD_NUMBER.match(s):
        return number.group(1)
    return _SENTENCE_END.split(s, 1)[0]


def gold_answer(answer: str) -> str:
    """The final answer inside a reference: after '####' (GSM8K), inside \\boxed{}, or all of it."""
    if "####" in answer:
        return answer.split("####")[-1].strip()
    boxed = boxed_contents(answer)
    return boxed[-1] if boxed else answer.strip()


def normalize(span: str) -> str:
    """Strip presentation: math delimiters, \\text{}, dollar and percent signs, units, commas."""
    s = span.strip()
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\$", "").replace("\\%", "").replace("%", "").replace("\\!", "").replace("\\,", "")
    s = re.sub(r"^\\[(\[]|\\[)\]]$", "", s).strip("$ ").rstrip(".")
    s = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), s)
    unit = re.fullmatch(r"\s*=?\s*([-+]?[\d.]+(?:\s*/\s*\d+)?)\s*[A-Za-z][A-Za-z .]*", s)  # "18 dollars"
    if unit:
        s = unit.group(1)
    return s.lstrip("=").strip().replace(" ", "") if _PLAIN_NUMBER.match(s.replace(" ", "")) else s.strip()


def _as_fraction(s: str) -> Fraction | None:
    if not _PLAIN_NUMBER.match(s):
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def _math_verify_equal(gold: str, pred: str) -> bool:
    from math_verify import parse, verify

    # math-verify's timeouts use SIGALRM, which only the main thread may set.
    timeout = 5 if in_main_thread() else None

    def parsed(s: str) -> list:
        return parse(f"${s}$", parsing_timeout=timeout) or parse(s, parsing_timeout=timeout)

    g, p = parsed(gold), parsed(pred)
    return bool(g and p and verify(g, p, timeout_seconds=timeout))


def answers_equal(gold: str, pred: str) -> tuple[bool, str]:
    """(equal, method): exact fraction comparison for plain numbers, else math-verify."""
    g, p = normalize(gold), normalize(pred)
    fg, fp = _as_fraction(g), _as_fraction(p)
    if fg is not None and fp is not None:
        return fg == fp, "numeric"
    if g == p:
        return True, "string"
    return _math_verify_equal(g, p), "math-verify"


class MathVerifier(BaseVerifier):
    name = "math"
    version = "2"  # 2: <answer> tags, "answer is" span cut to its answer, partial-echo rule

    def __init__(self, max_chars: int = MAX_COMPLETION_CHARS):
        self.max_chars = max_chars

    def __call__(self, completion: str, reference: Mapping[str, Any]) -> VerificationResult:
        if "answer" not in reference or reference["answer"] is None or not str(reference["answer"]).strip():
            raise InvalidReference("math reference needs a non-empty 'answer'")
        gold = gold_answer(str(reference["answer"]))
        prompt = reference.get("prompt") or reference.get("question")
        if reason := hacking_guard(completion, prompt, self.max_chars):
            return self.fail(reason, gold=gold)
        if prompt and _squash_in(prompt, completion):  # do not credit numbers copied from the prompt
            completion = _remove(prompt, completion)
        boxed = {normalize(b) for b in boxed_contents(strip_code(completion))}
        if len(boxed) > 1:
            return self.fail(f"{len(boxed)} different boxed answers (answer spraying)", gold=gold, boxed=sorted(boxed))
        span, method = extract_answer(completion)
        if span is None:
            return self.fail("no final answer found", gold=gold, extraction=method)
        norm_span = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), span)
        if _HEDGE.search(norm_span) and not _HEDGE.search(_THOUSANDS.sub("0", gold)):
            return self.fail("answer hedges between several values", gold=gold, extracted=span, extraction=method)
        if method == "last_number" and _is_spray(strip_code(completion)):
            return self.fail("mostly numbers with no marked answer (answer spraying)", gold=gold, extraction=method)
        equal, how = answers_equal(gold, answer_core(span) if method == "answer_is" else span)
        reason = f"{'correct' if equal else 'wrong'} answer via {method} ({how})"
        return self.result(1.0 if equal else 0.0, reason, gold=gold, extracted=span, extraction=method, match=how)


def _prompt_pattern(prompt: str) -> re.Pattern:
    return re.compile(r"\s+".join(re.escape(w) for w in prompt.split()))


def _squash_in(prompt: str, completion: str) -> bool:
    return bool(prompt.split()) and _prompt_pattern(prompt).search(completion) is not None


def _remove(prompt: str, completion: str) -> str:
    """The completion without verbatim copies of the prompt (line structure kept)."""
    return _prompt_pattern(prompt).sub(" ", completion)


def _is_spray(prose: str) -> bool:
    tokens = prose.split()
    numbers = [t for t in tokens if _NUMBER.search(t)]
    return len(numbers) >= SPRAY_MIN_NUMBERS and len(numbers) >= SPRAY_MIN_FRACTION * len(tokens)
