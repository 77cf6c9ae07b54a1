"""Row schemas for SFT samples, preference groups and RL prompts, and their validation.

Three schemas, each an Arrow `datasets.Features` plus a row validator:

- ``sft``: a chat (`messages`, ending with an assistant turn) with its metadata. A row with a
  verifier reference may instead end with its user turn: a prompt-only row, whose answer a teacher
  writes downstream (11_distill) and the verifier gates (12_filter); SFT training leaves it out.
- ``preference``: a prompt and the WHOLE candidate group (every candidate with its generator,
  sampling params and scores), the chosen/rejected indices and the reason; a KTO row is a group
  of one candidate carrying a `label`.
- ``rl``: a prompt (text and chat form) with the verifier that scores answers and its reference.

Nested free-form dicts (`quality`, `reference`, `sampling_params`, `scores`) are stored as
canonical JSON strings: Arrow needs one struct type per column, and their keys differ from row
to row (a math reference has `answer`, an IFEval one `instruction_id_list`/`kwargs`).

Validation returns reason codes (`missing_field:messages`, `bad_role:gpt`, `empty_turn`...) so
that ingest can write them to its quarantine file and count them by code. Scalar fields are checked
against their Arrow type (`bad_field:difficulty must be a string`): given a dict, a string column
would otherwise store its Python repr without complaint.

Strings Arrow cannot store: a lone surrogate (e.g. the JSON escape "\\ud800" without its pair) has no
UTF-8 encoding. Such a row is refused where Arrow refuses it, by the same conversion `to_dataset`
uses, and named by field (`lone_surrogate:messages[0].content holds U+D800 ...`); it is never
repaired (replacing or dropping the character would silently change the text).
`to_dataset_with_rejects` returns the other rows and the refused ones with their reasons; `to_dataset`
raises SchemaError naming the first.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Iterable, Mapping
from typing import Any

from datasets import Dataset, Features, List, Value

_REPR = reprlib.Repr()  # bounded repr for reasons (keyword arguments only from Python 3.12)
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 2, 80, 80
# Python types each Arrow scalar type accepts (bool is an int in Python: refused for numbers).
_SCALAR_TYPES = {"string": (str,), "int32": (int,), "float64": (int, float), "bool": (bool,)}
_TYPE_WORDS = {"string": "a string", "int32": "an integer", "float64": "a number", "bool": "true or false"}

# The shared task vocabulary: every row's `task` is one of these.
TASKS = ("general_chat", "knowledge_qa", "complex_if", "code", "math_reasoning", "safety")
# Verifier names the verifiers package (`nebula_utils.verifiers`) implements.
VERIFIERS = ("math", "ifeval", "code", "format")
ROLES = ("system", "user", "assistant")
# Keys a verifier's reference dict must have (the `format` verifier takes its spec as given).
REFERENCE_KEYS = {
    "math": ("answer",),
    "ifeval": ("instruction_id_list", "kwargs", "prompt"),
    "code": ("prompt", "test", "entry_point"),
    "format": (),
}
SCHEMAS = ("sft", "preference", "rl")

_STR = Value("string")
MESSAGES = List({"role": _STR, "content": _STR})
_COMMON = {"id": _STR, "source": _STR, "license": _STR, "task": _STR}

FEATURES: dict[str, Features] = {
    "sft": Features(
        _COMMON
        | {
            "messages": MESSAGES,
            "difficulty": _STR,
            "quality": _STR,  # JSON object {dimension: score}
            "verifier": _STR,
            "verifier_version": _STR,
            "reference": _STR,  # JSON object, set when the sample is verifiable
            "parents": List(_STR),
        }
    ),
    "preference": Features(
        _COMMON
        | {
            "prompt": MESSAGES,  # the conversation the candidates answer
            "candidates": List(
                {
                    "content": _STR,
                    "generator": _STR,  # model that wrote it ("human", "dataset" when unknown)
                    "sampling_params": _STR,  # JSON object
                    "scores": _STR,  # JSON object {scorer: score}
                    "label": Value("bool"),  # KTO desirable/undesirable; null for pairwise data
                }
            ),
            "chosen": Value("int32"),  # index into candidates; null for KTO groups
            "rejected": Value("int32"),
            "preference_reason": _STR,
            "parents": List(_STR),
        }
    ),
    "rl": Features(
        _COMMON
        | {
            "prompt": _STR,
            "messages": MESSAGES,  # the prompt as chat (ends with the user turn)
            "verifier": _STR,
            "reference": _STR,  # JSON object, keys per REFERENCE_KEYS[verifier]
            "pass_rate": Value("float64"),
            "difficulty": _STR,
            "parents": List(_STR),
        }
    ),
}

# Optional fields and the value a row gets when it omits them.
OPTIONAL_DEFAULTS: dict[str, dict[str, Any]] = {
    "sft": {
        "difficulty": None,
        "quality": "{}",
        "verifier": None,
        "verifier_version": None,
        "reference": None,
        "parents": [],
    },
    "preference": {"chosen": None, "rejected": None, "preference_reason": "", "parents": []},
    "rl": {"pass_rate": None, "difficulty": None, "parents": []},
}
_JSON_FIELDS = {"sft": ("quality", "reference"), "preference": (), "rl": ("reference",)}
_CANDIDATE_DEFAULTS = {"generator": "dataset", "sampling_params": "{}", "scores": "{}", "label": None}


class SchemaError(ValueError):
    """A row does not fit its schema; str() names the row and the reason."""


def canonical_json(obj: Any) -> str:
    """One spelling per value (sorted keys, no spaces): the basis of ids and content hashes."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def check_schema(schema: str) -> None:
    if schema not in FEATURES:
        raise SchemaError(f"unknown schema '{schema}' (known: {', '.join(SCHEMAS)})")


def normalize_row(schema: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """Fill omitted optional fields and serialise dict-valued JSON fields canonically."""
    check_schema(schema)
    out = dict(OPTIONAL_DEFAULTS[schema]) | dict(row)
    if out["parents"] is None or isinstance(out["parents"], tuple):
        out["parents"] = list(out["parents"] or [])  # anything else is left for row_problems to name
    for key in _JSON_FIELDS[schema]:
        if isinstance(out.get(key), Mapping):
            out[key] = canonical_json(dict(out[key]))
    if schema == "preference" and isinstance(out.get("candidates"), list):
        out["candidates"] = [_normalize_candidate(c) for c in out["candidates"]]
    return out


def _normalize_candidate(candidate: Any) -> Any:
    if not isinstance(candidate, Mapping):
        return candidate
    cand = dict(_CANDIDATE_DEFAULTS) | dict(candidate)
    for key in ("sampling_params", "scores"):
        if isinstance(cand[key], Mapping):
            cand[key] = canonical_json(dict(cand[key]))
    return cand


def message_problems(messages: Any, final_role: str) -> list[str]:
    """Reason codes for a chat: roles from ROLES, no empty turn, user first, `final_role` last."""
    if not isinstance(messages, list) or not messages:
        return ["bad_messages:not a non-empty list"]
    for turn in messages:
        if not isinstance(turn, Mapping) or "role" not in turn or "content" not in turn:
            return ["bad_messages:turn without role/content"]
        if not isinstance(turn["role"], str) or turn["role"] not in ROLES:
            return [f"bad_role:{_short(turn['role'])}"]
        if not isinstance(turn["content"], str):
            return [f"bad_messages:content must be a string, got {type(turn['content']).__name__}"]
        if not turn["content"].strip():
            return ["empty_turn"]
    roles = [t["role"] for t in messages]
    body = roles[1:] if roles[0] == "system" else roles
    if not body or body[0] != "user" or "system" in body:
        return ["bad_turn_order:must be [system] then user first"]
    if any(a == b for a, b in zip(body, body[1:])):
        return ["bad_turn_order:user and assistant must alternate"]
    if body[-1] != final_role:
        return [f"bad_turn_order:last turn must be {final_role}"]
    return []


def _short(value: Any, limit: int = 80) -> str:
    """A value for a reason string, at most `limit` characters (reprlib bounds depth and size)."""
    text = value if isinstance(value, str) else _REPR.repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _json_object_problem(value: Any, field: str) -> str | None:
    try:
        obj = json.loads(value)
    # ValueError: an integer past Python's 4300-digit limit; RecursionError: nesting past the parser's
    except (TypeError, ValueError, RecursionError):
        return f"bad_json_field:{field}"
    return None if isinstance(obj, dict) else f"bad_json_field:{field} is not an object"


def _reference_problems(verifier: Any, reference: Any) -> list[str]:
    if verifier not in VERIFIERS:
        return [f"bad_verifier:{verifier}"]
    problem = _json_object_problem(reference, "reference")
    if problem:
        return [problem]
    missing = [k for k in REFERENCE_KEYS[verifier] if k not in json.loads(reference)]
    return [f"bad_reference:{verifier} reference lacks {', '.join(missing)}"] if missing else []


def _common_problems(schema: str, row: Mapping[str, Any]) -> list[str]:
    missing = [k for k in FEATURES[schema] if k not in row or (row[k] is None and k not in OPTIONAL_DEFAULTS[schema])]
    if missing:
        return [f"missing_field:{missing[0]}"]
    for key in _COMMON:
        if not isinstance(row[key], str) or not row[key]:
            return [f"bad_field:{key} must be a non-empty string"]
    if row["task"] not in TASKS:
        return [f"bad_task:{_short(row['task'])}"]
    if not isinstance(row["parents"], list) or not all(isinstance(p, str) for p in row["parents"]):
        return ["bad_field:parents must be a list of strings"]
    for key, feature in FEATURES[schema].items():
        value = row[key]
        if isinstance(feature, Value) and value is not None and not _fits(feature.dtype, value):
            return [f"bad_field:{key} must be {_TYPE_WORDS[feature.dtype]}, got {type(value).__name__}"]
    return []


def _fits(dtype: str, value: Any) -> bool:
    if isinstance(value, bool) and dtype != "bool":
        return False
    if dtype == "int32" and isinstance(value, int):
        return -(2**31) <= value < 2**31
    return isinstance(value, _SCALAR_TYPES[dtype])


def _prompt_only(messages: Any) -> bool:
    """True when a chat ends with a user turn (an sft row with no answer yet)."""
    last = messages[-1] if isinstance(messages, list) and messages else None
    return isinstance(last, Mapping) and last.get("role") == "user"


def _sft_problems(row: Mapping[str, Any]) -> list[str]:
    # Prompt-only rows need the reference a verifier gates their future answer with.
    prompt_only = _prompt_only(row["messages"]) and row["reference"] is not None
    problems = message_problems(row["messages"], final_role="user" if prompt_only else "assistant")
    problem = _json_object_problem(row["quality"], "quality")
    if problem:
        problems.append(problem)
    elif not all(isinstance(v, (int, float)) for v in json.loads(row["quality"]).values()):
        problems.append("bad_json_field:quality scores must be numbers")
    if row["reference"] is not None:
        problems += _reference_problems(row["verifier"], row["reference"])
    elif row["verifier"] is not None and row["verifier"] not in VERIFIERS:
        problems.append(f"bad_verifier:{row['verifier']}")
    return problems


def _preference_problems(row: Mapping[str, Any]) -> list[str]:
    problems = message_problems(row["prompt"], final_role="user")
    cands = row["candidates"]
    if not isinstance(cands, list) or not cands:
        return problems + ["bad_candidates:need at least one candidate"]
    for cand in cands:
        if not isinstance(cand, Mapping) or not isinstance(cand.get("content"), str):
            return problems + ["bad_candidates:candidate without content"]
        if not cand["content"].strip():
            return problems + ["empty_turn"]
        for key in ("generator", "sampling_params", "scores", "label"):
            kind = bool if key == "label" else str
            if cand.get(key) is not None and not isinstance(cand[key], kind):
                return problems + [f"bad_candidates:{key} must be {_TYPE_WORDS['bool' if kind is bool else 'string']}"]
    for key in ("chosen", "rejected"):
        idx = row[key]
        if idx is not None and not (isinstance(idx, int) and 0 <= idx < len(cands)):
            problems.append(f"bad_index:{key}={idx} for {len(cands)} candidates")
    if (row["chosen"] is None) != (row["rejected"] is None):
        problems.append("bad_index:chosen and rejected are set together")
    if row["chosen"] is None and any(c.get("label") is None for c in cands):
        problems.append("bad_candidates:a group without chosen/rejected needs a label per candidate")
    return problems


def _rl_problems(row: Mapping[str, Any]) -> list[str]:
    problems = message_problems(row["messages"], final_role="user")
    if not isinstance(row["prompt"], str) or not row["prompt"].strip():
        problems.append("empty_turn")
    problems += _reference_problems(row["verifier"], row["reference"])
    rate = row["pass_rate"]
    if rate is not None and not (isinstance(rate, (int, float)) and 0.0 <= rate <= 1.0):
        problems.append(f"bad_field:pass_rate={rate!r} outside [0, 1]")
    return problems


_ROW_CHECKS = {"sft": _sft_problems, "preference": _preference_problems, "rl": _rl_problems}


def row_problems(schema: str, row: Mapping[str, Any]) -> list[str]:
    """All reason codes for one (normalised) row; empty when the row is valid."""
    check_schema(schema)
    if not isinstance(row, Mapping):
        return ["not_an_object"]
    problems = _common_problems(schema, row)
    return problems or _ROW_CHECKS[schema](row)


def validate_rows(schema: str, rows: Iterable[Mapping[str, Any]]) -> int:
    """Raise SchemaError at the first invalid row or repeated id; return the row count."""
    seen: set[str] = set()
    count = 0
    for index, row in enumerate(rows):
        problems = row_problems(schema, row)
        if problems:
            raise SchemaError(f"{schema} row {index} (id={row.get('id')!r}): {problems[0]}")
        if row["id"] in seen:
            raise SchemaError(f"{schema} row {index}: duplicate id {row['id']!r}")
        seen.add(row["id"])
        count += 1
    return count


def to_dataset(schema: str, rows: Iterable[Mapping[str, Any]]) -> Dataset:
    """Normalise, validate and type rows as a `datasets.Dataset` of the schema's features.

    Raises SchemaError naming the first invalid row, or the first row Arrow cannot store.
    """
    rows = list(rows)
    ds, rejects = to_dataset_with_rejects(schema, rows)
    if rejects:
        index, reason = rejects[0]
        raise SchemaError(f"{schema} row {index} (id={_short(rows[index].get('id'))!r}): {reason}")
    return ds


def to_dataset_with_rejects(schema: str, rows: Iterable[Mapping[str, Any]]) -> tuple[Dataset, list[tuple[int, str]]]:
    """Like to_dataset, but rows Arrow refuses come back as (index, reason) instead of failing all.

    The rows must pass row_problems (SchemaError otherwise). The common case costs one conversion;
    after a failure, halving with pyarrow's converter (about 0.2 ms a call against ~12 ms for
    Dataset.from_dict) finds the refused rows in O(refused * log n) calls, and the dataset is built
    from the rest by Dataset.from_dict, the path every consumer takes.
    """
    normalized = [normalize_row(schema, r) for r in rows]
    validate_rows(schema, normalized)
    ds, error = _attempt(_build_dataset, schema, normalized)
    if error is None:
        return ds, []
    rejects: dict[int, str] = {}
    _find_refused(_build_table, schema, normalized, list(range(len(normalized))), error, rejects)
    kept = [i for i in range(len(normalized)) if i not in rejects]
    ds, error = _attempt(_build_dataset, schema, [normalized[i] for i in kept])
    if error is not None:  # datasets refused what pyarrow alone accepted: search again on its own path
        _find_refused(_build_dataset, schema, normalized, kept, error, rejects)
        kept = [i for i in kept if i not in rejects]
        ds = _build_dataset(schema, [normalized[i] for i in kept])  # raises if no single row is to blame
    return ds, sorted(rejects.items())


def _build_dataset(schema: str, rows: list[dict[str, Any]]) -> Dataset:
    features = FEATURES[schema]
    return Dataset.from_dict({key: [r[key] for r in rows] for key in features}, features=features)


def _build_table(schema: str, rows: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=FEATURES[schema].arrow_schema)


def _attempt(build: Any, schema: str, rows: list[dict[str, Any]]) -> tuple[Any, Exception | None]:
    """(built, None), or (None, the error) when Arrow refuses some value of `rows`."""
    import pyarrow as pa

    try:
        return build(schema, rows), None
    # UnicodeEncodeError (a lone surrogate) is a ValueError; pa.ArrowException covers ArrowTypeError.
    except (ValueError, TypeError, OverflowError, pa.ArrowException) as exc:
        return None, exc


def _find_refused(
    build: Any, schema: str, rows: list[dict], indices: list[int], error: Exception, out: dict[int, str]
) -> None:
    """Record in `out` each row of `indices` (which together fail with `error`) that fails alone."""
    if len(indices) == 1:
        out[indices[0]] = _refusal_reason(rows[indices[0]], error)
        return
    mid = len(indices) // 2
    for half in (indices[:mid], indices[mid:]):
        _, half_error = _attempt(build, schema, [rows[i] for i in half])
        if half_error is not None:
            _find_refused(build, schema, rows, half, half_error, out)


def _refusal_reason(row: Mapping[str, Any], error: Exception) -> str:
    found = _lone_surrogate(row)
    if found:
        where, char = found
        return f"lone_surrogate:{where} holds U+{ord(char):04X}, which UTF-8 cannot encode"
    return f"unencodable:{type(error).__name__}: {_short(str(error).splitlines()[0] if str(error) else '', 200)}"


def _lone_surrogate(row: Mapping[str, Any]) -> tuple[str, str] | None:
    """(field path, character) of the first string (key or value) UTF-8 cannot encode."""
    stack: list[tuple[str, Any]] = [(key, value) for key, value in reversed(list(row.items()))]
    while stack:
        where, node = stack.pop()
        if isinstance(node, Mapping):
            stack.extend((f"{where}.{k}", v) for k, v in reversed(list(node.items())))
            stack.extend((f"{where} key", k) for k in node if isinstance(k, str))
        elif isinstance(node, (list, tuple)):
            stack.extend((f"{where}[{i}]", v) for i, v in reversed(list(enumerate(node))))
        elif isinstance(node, str) and not node.isascii():
            try:
                node.encode("utf-8")
            except UnicodeEncodeError as exc:
                return where, node[exc.start]
    return None
