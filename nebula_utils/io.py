"""Atomic file writes and line-numbered readers.

Every result file is written to a temporary sibling and renamed into place, so a run killed
mid-write never leaves a half-written metrics.json that a later resume would trust.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_default) + "\n")


def atomic_write_yaml(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, yaml.safe_dump(obj, sort_keys=True, allow_unicode=True))


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    text = "".join(json.dumps(r, ensure_ascii=False, default=_default) + "\n" for r in rows)
    return atomic_write_text(path, text)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


class JsonLineError(ValueError):
    """One jsonl line cannot be read; str() is a reason code and its detail, e.g. `non_utf8:byte 0xE9 at 12`."""


# Nesting deeper than this is refused before Python's recursive parsers (json, canonical JSON,
# Arrow conversion) can hit the recursion limit (~1000 frames). The deepest real record we read is
# an IFEval reference (record > reference > kwargs list > kwargs dict: depth 4); 64 leaves room.
MAX_JSON_DEPTH = 64
_BOM = b"\xef\xbb\xbf"


def iter_raw_lines(path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """(physical line number, bytes) of each non-blank line; .gz is decompressed, a UTF-8 BOM dropped.

    Bytes, not text, so that one undecodable line is reported on its own instead of failing the file.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(_BOM):  # what utf-8-sig strips; json.loads refuses it
                raw = raw[len(_BOM) :]
            if raw.strip():
                yield lineno, raw


def json_depth_problem(value: Any, limit: int = MAX_JSON_DEPTH) -> str | None:
    """`too_deep:...` when containers nest deeper than `limit` (checked without recursion), else None."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        if depth > limit:
            return f"too_deep:containers nested deeper than {limit} levels"
        stack.extend((child, depth + 1) for child in children)
    return None


def decode_json_line(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """One jsonl line -> its value; raises JsonLineError whose text starts with a reason code.

    Codes: non_utf8 (with the first bad byte and its offset), invalid_json (json's message and column),
    too_deep (nesting past `max_depth`, or past what the parser can recurse), bad_number (an integer
    longer than Python's int string-size limit, 4300 digits by default).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonLineError(f"non_utf8:byte 0x{raw[exc.start]:02X} at offset {exc.start} is not UTF-8") from None
    try:
        value = json.loads(text, parse_int=_int_or_raise)
    except JsonLineError:
        raise
    except json.JSONDecodeError as exc:
        raise JsonLineError(f"invalid_json:{exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise JsonLineError("too_deep:containers nested deeper than the JSON parser can follow") from None
    problem = json_depth_problem(value, max_depth)
    if problem:
        raise JsonLineError(problem)
    return value


def int_limit_reason(digits: str) -> str:
    """The bad_number reason for an integer literal Python refuses to convert."""
    return (
        f"bad_number:integer of {len(digits.lstrip('-'))} digits is past Python's int string limit "
        f"({sys.get_int_max_str_digits()} digits)"
    )


def _int_or_raise(digits: str) -> int:
    try:
        return int(digits)
    except ValueError:  # longer than sys.get_int_max_str_digits()
        raise JsonLineError(int_limit_reason(digits)) from None


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Yield (line_number, value) per non-blank line; a bad line raises ValueError naming file and line.

    A leading UTF-8 BOM is skipped; undecodable bytes, invalid JSON, nesting past MAX_JSON_DEPTH and
    over-long integers are each reported as `path:line: reason`.
    """
    for lineno, raw in iter_raw_lines(path):
        try:
            yield lineno, decode_json_line(raw)
        except JsonLineError as exc:
            raise ValueError(f"{path}:{lineno}: {exc}") from None
