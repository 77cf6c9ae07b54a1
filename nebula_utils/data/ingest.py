"""Ingest: local files or Hub dataset ids -> validated schema rows, malformed rows quarantined.

Input formats (`fmt`), each mapped to one schema:
  alpaca               instruction, input, output [, system, history]          -> sft
  sharegpt             conversations [{from, value}] [, system]                -> sft
  messages             messages [{role, content}] (also native sft rows)       -> sft
  preference           prompt, chosen, rejected (strings, turns or turn lists) -> preference
  sharegpt_preference  conversations + chosen/rejected {from, value}           -> preference
  kto                  prompt, completion, label  |  messages, label           -> preference
  rl                   prompt, verifier, reference                             -> rl
`auto` picks the format from the keys of the first record that parses. `column_map` renames
raw keys first (e.g. {"question": "instruction", "answer": "output"}).

Files: .jsonl/.jsonl.gz (a record per line; `line` is the physical line), .json (an array;
`line` is the 1-based record index), .parquet and .csv (`line` is the physical line for csv, the
1-based row for parquet). Anything else that is not a file but looks like `owner/name` goes
through `datasets.load_dataset` (the Hub path kept for users; offline it raises IngestError).

No single row can fail an ingest. Each malformed row goes to the quarantine jsonl as
{file, line, reason, raw} (`raw` is the row's text, at most 2000 characters, undecodable bytes and
lone surrogates shown as backslash escapes); the report counts it by reason code, and
count_in = kept + filtered + quarantined always holds (ingest filters nothing: filtered is 0).
Reason codes (`code:detail`):
  reading     non_utf8 (bad byte and offset), invalid_json (message, column), too_deep (nesting past
              64 levels, which Python's recursive parsers cannot follow safely), bad_number (an
              integer past Python's 4300-digit int string limit), oversized
  mapping     not_an_object, missing_field, bad_field, bad_turn_order, bad_json_field
  schema      bad_role, empty_turn, bad_messages, bad_task, bad_verifier, bad_reference, bad_index,
              bad_candidates (see schema.row_problems), duplicate_id
  storing     lone_surrogate (a string UTF-8 cannot encode, found where Arrow refuses it, by the
              conversion to_dataset uses; the row is quarantined, never repaired), unencodable
  otherwise   unexpected_error: a converter raised; the row is quarantined with the exception so
              that the ingest completes, and the fuzz test fails on it (it is a bug to fix)
A leading UTF-8 BOM is dropped (jsonl, json, csv). Blank jsonl lines are not records.

Whole-file problems raise IngestError with one line naming the file: no such file, a directory,
an unsupported suffix, unreadable bytes (permissions, a broken .gz, a file that is not Parquet),
a .json that is not one valid JSON array (it is parsed whole: use .jsonl to quarantine row by row),
an unknown or undetectable format. The quarantine file is written (atomically) only once the
dataset is built, so a failed ingest leaves no new quarantine file.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import re
import reprlib
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset

from ..io import (
    MAX_JSON_DEPTH,
    JsonLineError,
    atomic_write_jsonl,
    decode_json_line,
    int_limit_reason,
    iter_raw_lines,
)
from .manifests import processing_step, source_entry
from .schema import FEATURES, normalize_row, row_problems, to_dataset_with_rejects

FORMAT_SCHEMA = {
    "alpaca": "sft",
    "sharegpt": "sft",
    "messages": "sft",
    "preference": "preference",
    "sharegpt_preference": "preference",
    "kto": "preference",
    "rl": "rl",
}
# A record over 200k characters is ~50k tokens: beyond any context we train with, and in practice
# a concatenation bug or a base64 blob.
MAX_ROW_CHARS = 200_000
MAX_RAW_CHARS = 2_000  # raw text kept per quarantined row
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
# Metadata a raw row may carry for itself (e.g. re-ingesting an exported version).
ROW_METADATA = (
    "id",
    "task",
    "difficulty",
    "quality",
    "verifier",
    "verifier_version",
    "reference",
    "pass_rate",
    "parents",
)
MAX_REASON_CHARS = 300
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_FILE_SUFFIXES = (".jsonl", ".json", ".gz", ".parquet", ".csv")
# Bytes that were not UTF-8, as decoded with errors="surrogateescape" (csv, and .json files that fail
# a strict decode).
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_REPR = reprlib.Repr()  # bounded repr for reasons (keyword arguments only from Python 3.12)
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 4, 200, 200


class IngestError(ValueError):
    """The input as a whole cannot be read (missing file, unknown format, unreachable Hub id)."""


class _Bad(Exception):
    """One record is malformed; args[0] is the reason code."""


@dataclass
class IngestReport:
    file: str
    fmt: str
    schema: str
    source_name: str
    license: str
    count_in: int = 0
    kept: int = 0
    quarantined: int = 0
    filtered: int = 0
    reasons: Counter = field(default_factory=Counter)
    quarantine_path: str | None = None
    revision: str | None = None  # the Hub revision asked for (local files are pinned by digest)
    quarantine_rows: list[dict] = field(default_factory=list)

    def to_step(self) -> dict[str, Any]:
        """This ingest as a processing step (balanced by construction)."""
        return processing_step(
            f"ingest:{self.source_name}",
            count_in=self.count_in,
            count_out=self.kept,
            quarantined=self.quarantined,
            drop_reasons=self.reasons,
            params={"file": self.file, "fmt": self.fmt, "quarantine_path": self.quarantine_path},
        )

    def to_source(self, **extra: Any) -> dict[str, Any]:
        """The source entry; a local file's revision is the SHA-256 of its bytes."""
        path = Path(self.file)
        revision = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else self.revision
        return source_entry(
            self.source_name,
            path=self.file,
            revision=revision,
            license=self.license,
            filters={"fmt": self.fmt},
            **extra,
        )


def _reason_code(reason: str) -> str:
    return reason.split(":", 1)[0]


def _printable(text: str) -> str:
    """`text` as valid UTF-8: lone surrogates (and escaped bytes) become visible backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _show_bytes(text: str) -> str:
    """Undecodable bytes (kept by surrogateescape as U+DC80..U+DCFF) written as \\xNN, as in a jsonl raw."""
    return _ESCAPED_BYTE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class _BigInt:
    """An integer literal of a .json array longer than Python converts; its row is quarantined."""

    def __init__(self, digits: str) -> None:
        self.digits = digits

    def __str__(self) -> str:
        return self.digits[:40] + f"...({len(self.digits)} digits)"


def _int_or_marker(digits: str) -> int | _BigInt:
    try:
        return int(digits)
    except ValueError:  # longer than sys.get_int_max_str_digits(): refuse this row, not the file
        return _BigInt(digits)


def _shape_problem(record: Any, escaped_bytes: bool = False) -> str | None:
    """too_deep / bad_number / non_utf8 for a parsed record, found without recursion."""
    stack = [(record, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, _BigInt):
            return int_limit_reason(node.digits)
        if isinstance(node, str):
            if escaped_bytes and _ESCAPED_BYTE.search(node):
                return "non_utf8:the record holds bytes that are not UTF-8"
            continue
        if isinstance(node, Mapping):
            children = [*node.keys(), *node.values()]
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            return f"too_deep:containers nested deeper than {MAX_JSON_DEPTH} levels"
        stack.extend((child, depth + 1) for child in children)
    return None


def _shown(record: Any, escaped_bytes: bool = False) -> str:
    """A record's text for the quarantine and the size check (JSON where it can be written)."""
    text = None
    if _shape_problem(record) is None:
        with contextlib.suppress(TypeError, ValueError):  # e.g. a dict mixing str and None keys
            text = json.dumps(record, ensure_ascii=False, default=str)
    text = _REPR.repr(record) if text is None else text
    return _printable(_show_bytes(text) if escaped_bytes else text)


Records = Iterator[tuple[int, Any, str]]  # (line, record or _Bad, the record's text)


def _guarded(path: Path, records: Records) -> Records:
    """Turn an I/O failure while reading into one IngestError naming the file and the last line read."""
    line = 0
    try:
        for item in records:
            line = item[0]
            yield item
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        where = f"after line {line}" if line else "from the start"
        raise IngestError(f"{path}: cannot read {where} ({_first_line(exc)})") from None


def _iter_jsonl(path: Path) -> Records:
    for lineno, raw in iter_raw_lines(path):
        shown = raw.rstrip(b"\r\n").decode("utf-8", "backslashreplace")
        try:
            yield lineno, decode_json_line(raw), shown
        except JsonLineError as exc:
            yield lineno, _Bad(str(exc)), shown


def _iter_json(path: Path) -> Records:
    data = path.read_bytes()
    try:
        text, escaped = data.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        # Undecodable bytes inside strings only spoil their records (quarantined as non_utf8).
        text, escaped = data.decode("utf-8-sig", "surrogateescape"), True
    try:
        records = json.loads(text, parse_int=_int_or_marker)
    except json.JSONDecodeError as exc:
        raise IngestError(
            f"{path}:{exc.lineno}: invalid JSON ({exc.msg}, column {exc.colno}); "
            "a .json array is parsed whole: use .jsonl to quarantine bad rows"
        ) from None
    except RecursionError:
        raise IngestError(
            f"{path}: JSON nested deeper than the parser can follow; "
            "a .json array is parsed whole: use .jsonl to quarantine such rows"
        ) from None
    if not isinstance(records, list):
        raise IngestError(f"{path}: expected a JSON array of records, got {type(records).__name__}")
    yield from _checked(records, escaped)


def _checked(records: Iterable[Any], escaped_bytes: bool = False) -> Records:
    """Number already parsed records from 1 and refuse the too deep, over-long integers, escaped bytes."""
    for index, record in enumerate(records, start=1):
        problem = _shape_problem(record, escaped_bytes)
        yield index, _Bad(problem) if problem else record, _shown(record, escaped_bytes)


# csv refuses a field over 131072 characters by default (a csv.Error that ends the reader). Lifted to
# 2**31 - 1 (the most a 32-bit C long holds) while reading, a long field is judged by max_row_chars.
_CSV_FIELD_LIMIT = 2**31 - 1


@contextlib.contextmanager
def _csv_field_limit() -> Iterator[None]:
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, _CSV_FIELD_LIMIT))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _iter_csv(path: Path) -> Records:
    # surrogateescape keeps undecodable bytes as lone surrogates so that the bad row, not the
    # whole file, is rejected; utf-8-sig drops a BOM that would otherwise rename the first column.
    with (
        open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh,
        _csv_field_limit(),
    ):
        reader = csv.DictReader(fh)
        try:
            for record in reader:
                shown = json.dumps(record, ensure_ascii=False, default=str)
                if _ESCAPED_BYTE.search(shown):
                    yield reader.line_num, _Bad("non_utf8"), _show_bytes(shown)
                else:
                    yield reader.line_num, record, shown
        except csv.Error as exc:
            raise IngestError(f"{path}:{reader.line_num}: cannot parse as CSV ({exc})") from None


def _iter_parquet(path: Path) -> Records:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except pa.ArrowException as exc:
        raise IngestError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    try:
        records = table.to_pylist()
    except (pa.ArrowException, UnicodeDecodeError) as exc:
        raise IngestError(f"{path}: Parquet values cannot be read ({_first_line(exc)})") from None
    yield from _checked(records)


def _iter_hub(dataset_id: str, split: str, revision: str | None, config: str | None) -> Records:
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, config, split=split, revision=revision)
    except (ConnectionError, FileNotFoundError, OSError) as exc:
        raise IngestError(
            f"cannot load Hub dataset '{dataset_id}' (split {split}): {type(exc).__name__}: {exc}. "
            "Offline, pass a local .jsonl/.json/.parquet/.csv file instead."
        ) from None
    yield from _checked(ds)


def _records(path: str, split: str, revision: str | None, config: str | None) -> Records:
    p = Path(path).expanduser()
    if p.is_dir():
        raise IngestError(f"{path}: is a directory, not a data file")
    if p.is_file():
        name = p.name.lower()
        _refuse_misnamed(p, name)
        if name.endswith((".jsonl", ".jsonl.gz")):
            return _guarded(p, _iter_jsonl(p))
        if name.endswith(".csv"):
            return _guarded(p, _iter_csv(p))
        readers = {".json": _iter_json, ".parquet": _iter_parquet}
        if p.suffix.lower() not in readers:
            raise IngestError(f"{p}: unsupported file type (use .jsonl, .jsonl.gz, .json, .parquet or .csv)")
        return _guarded(p, readers[p.suffix.lower()](p))
    if p.exists() or path.lower().endswith(_FILE_SUFFIXES) or not _HUB_ID.match(path):
        raise IngestError(f"{path}: no such file (and not a Hub dataset id)")
    return _iter_hub(path, split, revision, config)


# Leading bytes of binary formats a text file (.jsonl, .json, .csv) must not hold: read as text, each
# line would be quarantined as non_utf8, which hides the real mistake (the file's name).
_MAGIC = {b"\x1f\x8b": ("gzip-compressed", ".jsonl.gz"), b"PAR1": ("Parquet", ".parquet")}


def _refuse_misnamed(path: Path, name: str) -> None:
    if name.endswith((".gz", ".parquet")):
        return
    with contextlib.suppress(OSError):  # unreadable: reported by the reader with its line
        with open(path, "rb") as fh:
            head = fh.read(4)
        for magic, (kind, suffix) in _MAGIC.items():
            if head.startswith(magic):
                raise IngestError(f"{path}: holds {kind} data, not text; name it *{suffix}")


def detect_format(record: Mapping[str, Any]) -> str | None:
    keys = set(record)
    rules = [
        ({"conversations", "chosen", "rejected"}, "sharegpt_preference"),
        ({"conversations"}, "sharegpt"),
        ({"messages", "label"}, "kto"),
        ({"prompt", "completion", "label"}, "kto"),
        ({"prompt", "chosen", "rejected"}, "preference"),
        ({"instruction", "output"}, "alpaca"),
        ({"messages"}, "messages"),
        ({"prompt", "verifier", "reference"}, "rl"),
    ]
    return next((fmt for needed, fmt in rules if needed <= keys), None)


def _req(record: Mapping[str, Any], key: str, kind: type = str) -> Any:
    if key not in record or record[key] is None:
        raise _Bad(f"missing_field:{key}")
    if not isinstance(record[key], kind):
        raise _Bad(f"bad_field:{key} must be {kind.__name__}")
    return record[key]


def _turns(turns: Any, key: str) -> list[dict[str, str]]:
    """Chat turns from [{role, content}] or ShareGPT [{from, value}] (roles mapped, unknown kept)."""
    if not isinstance(turns, list):
        raise _Bad(f"bad_field:{key} must be a list of turns")
    out = []
    for turn in turns:
        if not isinstance(turn, Mapping):
            raise _Bad(f"bad_field:{key} turn is not an object")
        if "from" in turn:
            role = turn["from"]
            if not isinstance(role, str):
                raise _Bad(f"bad_role:{key} turn's 'from' must be a string")
            out.append({"role": SHAREGPT_ROLES.get(role, role), "content": turn.get("value")})
        else:
            out.append({"role": turn.get("role"), "content": turn.get("content")})
        content = out[-1]["content"]
        if content is None:
            raise _Bad(f"missing_field:{key} turn content")
        if not isinstance(content, str):
            raise _Bad(f"bad_field:{key} turn content must be a string, got {type(content).__name__}")
    return out


def _with_system(record: Mapping[str, Any], turns: list[dict]) -> list[dict]:
    system = record.get("system")
    return ([{"role": "system", "content": system}] if isinstance(system, str) and system else []) + turns


def _from_alpaca(r: Mapping[str, Any]) -> dict:
    instruction, output = _req(r, "instruction"), _req(r, "output")
    prompt = (
        f"{instruction}\n\n{r['input']}" if isinstance(r.get("input"), str) and r["input"].strip() else instruction
    )
    history = []
    history_pairs = r.get("history") or []
    if not isinstance(history_pairs, list):
        raise _Bad("bad_field:history must be a list of [user, assistant] pairs")
    for pair in history_pairs:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise _Bad("bad_field:history must be [user, assistant] pairs")
        history += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    turns = history + [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    return {"messages": _with_system(r, turns)}


def _from_sharegpt(r: Mapping[str, Any]) -> dict:
    return {"messages": _with_system(r, _turns(_req(r, "conversations", list), "conversations"))}


def _from_messages(r: Mapping[str, Any]) -> dict:
    return {"messages": _turns(_req(r, "messages", list), "messages")}


def _answer_text(value: Any, key: str) -> str:
    """A candidate's text from a string, one turn, or a turn list ending with the assistant."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return _turns([value], key)[0]["content"]
    if isinstance(value, list) and value:
        last = _turns(value, key)[-1]
        if last["role"] != "assistant":
            raise _Bad(f"bad_turn_order:{key} must end with an assistant turn")
        return last["content"]
    raise _Bad(f"missing_field:{key}")


def _prompt_turns(value: Any) -> list[dict]:
    if value is None:
        raise _Bad("missing_field:prompt")
    return [{"role": "user", "content": value}] if isinstance(value, str) else _turns(value, "prompt")


def _pair(r: Mapping[str, Any], prompt: list[dict]) -> dict:
    chosen, rejected = (_answer_text(r.get(k), k) for k in ("chosen", "rejected"))
    reason = r.get("preference_reason") or "label from the source dataset"
    return {
        "prompt": prompt,
        "candidates": [{"content": chosen}, {"content": rejected}],
        "chosen": 0,
        "rejected": 1,
        "preference_reason": reason,
    }


def _from_preference(r: Mapping[str, Any]) -> dict:
    return _pair(r, _prompt_turns(r.get("prompt")))


def _from_sharegpt_preference(r: Mapping[str, Any]) -> dict:
    return _pair(r, _with_system(r, _turns(_req(r, "conversations", list), "conversations")))


def _from_kto(r: Mapping[str, Any]) -> dict:
    label = _req(r, "label", bool)
    if "messages" in r:
        turns = _turns(_req(r, "messages", list), "messages")
        if len(turns) < 2 or turns[-1]["role"] != "assistant":
            raise _Bad("bad_turn_order:kto messages must end with the assistant answer")
        prompt, completion = turns[:-1], turns[-1]["content"]
    else:
        prompt, completion = _prompt_turns(r.get("prompt")), _answer_text(r.get("completion"), "completion")
    return {
        "prompt": prompt,
        "candidates": [{"content": completion, "label": label}],
        "preference_reason": "unary desirable/undesirable label from the source dataset",
    }


def _from_rl(r: Mapping[str, Any]) -> dict:
    prompt = _req(r, "prompt")
    reference = r.get("reference")
    if isinstance(reference, str):
        try:
            reference = json.loads(reference)
        except (ValueError, RecursionError):  # invalid JSON, an over-long integer, too deep
            raise _Bad("bad_json_field:reference is not valid JSON") from None
    return {
        "prompt": prompt,
        "messages": r.get("messages") or [{"role": "user", "content": prompt}],
        "verifier": _req(r, "verifier"),
        "reference": reference,
    }


_CONVERTERS = {
    "alpaca": _from_alpaca,
    "sharegpt": _from_sharegpt,
    "messages": _from_messages,
    "preference": _from_preference,
    "sharegpt_preference": _from_sharegpt_preference,
    "kto": _from_kto,
    "rl": _from_rl,
}


def convert_record(record: Any, fmt: str, schema: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """One raw record -> a normalised schema row; raises _Bad(reason) when malformed."""
    if not isinstance(record, Mapping):
        raise _Bad("not_an_object")
    row = dict(defaults) | _CONVERTERS[fmt](record)
    for key in ROW_METADATA:
        if key in FEATURES[schema] and record.get(key) is not None:
            row[key] = str(record[key]) if key == "id" else record[key]
    row = normalize_row(schema, row)
    problems = row_problems(schema, row)
    if problems:
        raise _Bad(problems[0])
    return row


def _resolve_format(fmt: str, records: list[tuple[int, Any, str]], path: str) -> str:
    if fmt != "auto":
        if fmt not in FORMAT_SCHEMA:
            raise IngestError(f"{path}: unknown format '{fmt}' (known: auto, {', '.join(FORMAT_SCHEMA)})")
        return fmt
    for _, record, _ in records:
        if isinstance(record, Mapping) and (found := detect_format(record)):
            return found
    if not records:
        seen = "the file holds no records"
    else:
        line, record, _ = records[0]
        first = record.args[0] if isinstance(record, _Bad) else f"keys {_short(sorted(map(str, record)))}"
        first = first if isinstance(record, (_Bad, Mapping)) else f"a JSON {type(record).__name__}"
        seen = f"none of {len(records)} records matches one (line {line}: {first})"
    raise IngestError(
        f"{path}: cannot detect the format from the record keys: {seen}; pass fmt= ({', '.join(FORMAT_SCHEMA)})"
    )


def _short(text: str, limit: int = 120) -> str:
    text = _printable(str(text))
    return text if len(text) <= limit else text[:limit] + "..."


def ingest_file(
    path: str,
    fmt: str = "auto",
    source_name: str | None = None,
    license: str = "unknown",
    quarantine_path: str | None = None,
    task: str = "general_chat",
    column_map: Mapping[str, str] | None = None,
    limit: int | None = None,
    max_row_chars: int = MAX_ROW_CHARS,
    split: str = "train",
    revision: str | None = None,
    config: str | None = None,
) -> tuple[Dataset, IngestReport]:
    """Read `path` (file or Hub id) as `fmt` into a schema Dataset; quarantine malformed rows.

    `limit` stops after that many rows have been read (malformed ones included), `task` is the
    label for rows that carry none, a record longer than `max_row_chars` (as text) is quarantined
    as oversized, `split`/`revision`/`config` apply to Hub ids only. Raises IngestError (one line,
    naming the file) only for whole-file problems; see the module docstring.
    """
    records: Iterable[tuple[int, Any, str]] = _records(str(path), split, revision, config)
    if limit is not None:
        records = (r for _, r in zip(range(limit), records))
    records = [(line, _rename(rec, column_map), shown) for line, rec, shown in records]
    fmt = _resolve_format(fmt, records, str(path))
    schema = FORMAT_SCHEMA[fmt]
    # A file name that is not UTF-8 would make every id unstorable: escape it once here.
    name = _printable(source_name or Path(str(path)).name.split(".")[0])
    report = IngestReport(str(path), fmt, schema, name, license, quarantine_path=quarantine_path, revision=revision)
    defaults = {"source": name, "license": license, "task": task}
    rows, origins, seen = [], [], set()
    for line, record, shown in records:
        report.count_in += 1
        try:
            row = _convert(record, shown, fmt, schema, defaults | {"id": f"{name}:{line}"}, max_row_chars)
            if row["id"] in seen:
                raise _Bad(f"duplicate_id:{row['id']}")
        except _Bad as bad:
            _quarantine(report, line, bad.args[0], shown)
            continue
        except Exception as exc:  # a converter bug costs its row, not the ingest (the fuzz test fails on it)
            _quarantine(report, line, f"unexpected_error:{_first_line(exc)}", shown)
            continue
        seen.add(row["id"])
        rows.append(row)
        origins.append((line, shown))
    ds, refused = to_dataset_with_rejects(schema, rows)
    for index, reason in refused:
        _quarantine(report, origins[index][0], reason, origins[index][1])
    report.quarantine_rows.sort(key=lambda entry: entry["line"])
    report.kept = len(ds)
    if report.count_in != report.kept + report.filtered + report.quarantined:
        raise AssertionError(f"ingest of {path} does not balance: {quarantine_summary(report)}")
    if quarantine_path:
        atomic_write_jsonl(quarantine_path, report.quarantine_rows)
    return ds, report


def _convert(
    record: Any, shown: str, fmt: str, schema: str, defaults: Mapping[str, Any], max_row_chars: int
) -> dict[str, Any]:
    if isinstance(record, _Bad):
        raise record
    if len(shown) > max_row_chars:
        raise _Bad(f"oversized:{len(shown)} chars > {max_row_chars}")
    return convert_record(record, fmt, schema, defaults)


def _rename(record: Any, column_map: Mapping[str, str] | None) -> Any:
    if not column_map or not isinstance(record, Mapping):
        return record
    return {column_map.get(k, k): v for k, v in record.items()}


def _quarantine(report: IngestReport, line: int, reason: str, shown: str) -> None:
    """Count one refused row and keep its entry; every string is made valid UTF-8 for the file."""
    report.quarantined += 1
    report.reasons[_reason_code(reason)] += 1
    reason = _printable(reason)
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[:MAX_REASON_CHARS] + "..."
    shown = _printable(shown)
    entry = {"file": _printable(report.file), "line": line, "reason": reason, "raw": shown[:MAX_RAW_CHARS]}
    if len(shown) > MAX_RAW_CHARS:
        entry["raw_truncated_from"] = len(shown)
    report.quarantine_rows.append(entry)


def quarantine_summary(report: IngestReport) -> dict[str, Any]:
    """Counts for a table: in / kept / quarantined and quarantined per reason code."""
    return {
        "source": report.source_name,
        "fmt": report.fmt,
        "in": report.count_in,
        "kept": report.kept,
        "quarantined": report.quarantined,
        **{f"q:{k}": v for k, v in sorted(report.reasons.items())},
    }
