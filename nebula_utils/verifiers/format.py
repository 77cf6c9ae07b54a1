"""Format verifier: JSON validity / JSON Schema, a regex, required sections, word-count bounds.

Reference keys (all optional, at least one check): `json` (bool: the answer must be one JSON
document, optionally in a single ```json fence), `json_schema` (validated with `jsonschema`,
implies `json`), `regex` (re.search, MULTILINE|DOTALL; `regex_fullmatch: true` to anchor it),
`required_sections` (headings: `# Name`, `**Name**` or `Name:` at a line start, each followed
by some content before the next heading), `min_words` / `max_words`.
`score` is the fraction of checks that pass; `passed` means all of them. Empty answers and
echoes of `prompt` get 0; when a word bound is set (the check padding would game) degenerate
repetition gets 0 as well.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .base import MAX_COMPLETION_CHARS, BaseVerifier, InvalidReference, VerificationResult, hacking_guard, is_echo

_JSON_FENCE = re.compile(r"^```(?:json)?[ \t]*\n(.*?)\n?```$", re.DOTALL | re.IGNORECASE)
_KNOWN = {"json", "json_schema", "regex", "regex_fullmatch", "required_sections", "min_words", "max_words", "prompt"}


def parse_json_answer(text: str) -> Any:
    """The JSON document an answer consists of; raises ValueError when it is not exactly one."""
    s = text.strip()
    fenced = _JSON_FENCE.match(s)
    return json.loads(fenced.group(1) if fenced else s)


def _heading(name: str) -> re.Pattern:
    return re.compile(
        rf"^[ \t]*(?:#{{1,6}}[ \t]*|\*\*)?{re.escape(name)}(?:\*\*)?[ \t]*:?", re.IGNORECASE | re.MULTILINE
    )


def sections_present(text: str, names: list[str]) -> dict[str, bool]:
    """name -> heading found and followed by at least one word before the next required heading."""
    starts = {}
    for name in names:
        match = _heading(name).search(text)
        starts[name] = match
    bounds = sorted(m.start() for m in starts.values() if m)
    present = {}
    for name, match in starts.items():
        if not match:
            present[name] = False
            continue
        end = next((b for b in bounds if b > match.start()), len(text))
        present[name] = bool(re.search(r"\w", text[match.end() : end]))
    return present


class FormatVerifier(BaseVerifier):
    name = "format"
    version = "2"  # 2: a short answer quoted in the prompt is no longer an echo

    def __init__(self, max_chars: int = MAX_COMPLETION_CHARS):
        self.max_chars = max_chars

    def _checks(self, text: str, ref: Mapping[str, Any]) -> dict[str, bool]:
        checks: dict[str, bool] = {}
        if ref.get("json") or ref.get("json_schema"):
            try:
                doc, checks["json"] = parse_json_answer(text), True
            except ValueError:
                doc, checks["json"] = None, False
            if ref.get("json_schema"):
                import jsonschema

                checks["json_schema"] = checks["json"] and jsonschema.Draft202012Validator(
                    ref["json_schema"]
                ).is_valid(doc)
        if ref.get("regex"):
            flags = re.MULTILINE | re.DOTALL
            found = (
                re.fullmatch(ref["regex"], text.strip(), flags)
                if ref.get("regex_fullmatch")
                else re.search(ref["regex"], text, flags)
            )
            checks["regex"] = found is not None
        for name, ok in sections_present(text, list(ref.get("required_sections") or [])).items():
            checks[f"section:{name}"] = ok
        words = len(re.findall(r"\w+", text))
        if ref.get("min_words") is not None:
            checks["min_words"] = words >= int(ref["min_words"])
        if ref.get("max_words") is not None:
            checks["max_words"] = words <= int(ref["max_words"])
        return checks

    def __call__(self, completion: str, reference: Mapping[str, Any]) -> VerificationResult:
        unknown = set(reference) - _KNOWN
        if unknown:
            raise InvalidReference(f"format reference has unknown keys {sorted(unknown)} (known: {sorted(_KNOWN)})")
        if reference.get("json_schema"):
            import jsonschema

            try:
                jsonschema.Draft202012Validator.check_schema(reference["json_schema"])
            except jsonschema.SchemaError as exc:
                raise InvalidReference(f"invalid json_schema: {exc.message}") from None
        checks = self._checks(completion, reference)
        if not checks:
            raise InvalidReference(
                "format reference sets no check (json, json_schema, regex, required_sections, min/max_words)"
            )
        prompt = reference.get("prompt")
        if not completion.strip() or len(completion) > self.max_chars or is_echo(completion, prompt):
            return self.fail(hacking_guard(completion, prompt, self.max_chars) or "empty answer", checks=checks)
        if "min_words" in checks or "max_words" in checks:
            if guard := hacking_guard(completion, prompt, self.max_chars):
                return self.fail(guard, checks=checks)
        failed = [name for name, ok in checks.items() if not ok]
        reason = "all format checks passed" if not failed else f"failed: {', '.join(failed)}"
        return self.result(sum(checks.values()) / len(checks), reason, passed=not failed, checks=checks)
