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

A row that is not valid JSON, not UTF-8, oversized, lacks a field, has an unknown role, an empty
turn or a bad turn order goes to the quarantine jsonl as {file, line, reason, raw}; the report
counts it, and count_in = kept + quarantined always holds.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset

from ..io import atomic_write_jsonl
from .manifests import processing_step, source_entry
from .schema import FEATURES, normalize_row, row_problems, to_dataset

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
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_FILE_SUFFIXES = (".jsonl", ".json", ".gz", ".parquet", ".csv")


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


def _decode_line(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad("non_utf8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Bad(f"invalid_json:{exc.msg}") from None


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            shown = raw.decode("utf-8", errors="replace").rstrip("\n")
            try:
                yield lineno, _decode_line(raw), shown
            except _Bad as bad:
                yield lineno, bad, shown


def _iter_json(path: Path) -> Iterator[tuple[int, Any, str]]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path}: byte {exc.start} is not UTF-8; a .json array cannot be read row by row") from None
    except json.JSONDecodeError as exc:
        raise IngestError(
            f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); use .jsonl to quarantine bad rows"
        ) from None
    if not isinstance(data, list):
        raise IngestError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
    for index, record in enumerate(data, start=1):
        yield index, record, json.dumps(record, ensure_ascii=False)


def _iter_csv(path: Path) -> Iterator[tuple[int, Any, str]]:
    # surrogateescape keeps undecodable bytes as lone surrogates so that the bad row, not the
    # whole file, is rejected.
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.DictReader(fh)
        for record in reader:
            shown = json.dumps(record, ensure_ascii=False, default=str)
            if any(re.search(r"[\udc80-\udcff]", str(v)) for v in record.values()):
                yield reader.line_num, _Bad("non_utf8"), shown.encode("utf-8", "replace").decode("utf-8")
            else:
                yield reader.line_num, record, shown


def _iter_parquet(path: Path) -> Iterator[tuple[int, Any, str]]:
    import pyarrow.parquet as pq

    for index, record in enumerate(pq.read_table(path).to_pylist(), start=1):
        yield index, record, json.dumps(record, ensure_ascii=False, default=str)


def _iter_hub(dataset_id: str, split: str, revision: str | None, config: str | None) -> Iterator[tuple[int, Any, str]]:
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, config, split=split, revision=revision)
    except (ConnectionError, FileNotFoundError, OSError) as exc:
        raise IngestError(
            f"cannot load Hub dataset '{dataset_id}' (split {split}): {type(exc).__name__}: {exc}. "
            "Offline, pass a local .jsonl/.json/.parquet/.csv file instead."
        ) from None
    for index, record in enumerate(ds, start=1):
        yield index, record, json.dumps(record, ensure_ascii=False, default=str)


def _records(path: str, split: str, revision: str | None, config: str | None) -> Iterator[tuple[int, Any, str]]:
    p = Path(path).expanduser()
    if p.is_file():
        name = p.name.lower()
        if name.endswith((".jsonl", ".jsonl.gz")):
            return _iter_jsonl(p)
        readers = {".json": _iter_json, ".csv": _iter_csv, ".parquet": _iter_parquet}
        if p.suffix.lower() not in readers:
            raise IngestError(f"{p}: unsupported file type (use .jsonl, .jsonl.gz, .json, .parquet or .csv)")
        return readers[p.suffix.lower()](p)
    if p.exists() or path.lower().endswith(_FILE_SUFFIXES) or not _HUB_ID.match(path):
        raise IngestError(f"{path}: no such file (and not a Hub dataset id)")
    return _iter_hub(path, split, revision, config)


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
            out.append({"role": SHAREGPT_ROLES.get(role, role), "content": turn.get("value")})
        else:
            out.append({"role": turn.get("role"), "content": turn.get("content")})
        if not isinstance(out[-1]["content"], str):
            raise _Bad(f"missing_field:{key} turn content")
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
    for pair in r.get("history") or []:
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
    return _pair(r, _prompt_turns(r["prompt"]))


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
        except json.JSONDecodeError:
            raise _Bad("bad_json_field:reference") from None
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
    raise IngestError(f"{path}: cannot detect the format from the record keys; pass fmt= ({', '.join(FORMAT_SCHEMA)})")


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
    as oversized, `split`/`revision`/`config` apply to Hub ids only.
    """
    records = _records(str(path), split, revision, config)
    if limit is not None:
        records = (r for _, r in zip(range(limit), records))
    records = [(line, _rename(rec, column_map), shown) for line, rec, shown in records]
    fmt = _resolve_format(fmt, records, str(path))
    schema = FORMAT_SCHEMA[fmt]
    name = source_name or Path(str(path)).name.split(".")[0]
    report = IngestReport(str(path), fmt, schema, name, license, quarantine_path=quarantine_path, revision=revision)
    defaults = {"source": name, "license": license, "task": task}
    rows, seen = [], set()
    for line, record, shown in records:
        report.count_in += 1
        try:
            if isinstance(record, _Bad):
                raise record
            if len(shown) > max_row_chars:
                raise _Bad(f"oversized:{len(shown)} chars > {max_row_chars}")
            row = convert_record(record, fmt, schema, defaults | {"id": f"{name}:{line}"})
            if row["id"] in seen:
                raise _Bad(f"duplicate_id:{row['id']}")
        except _Bad as bad:
            _quarantine(report, line, bad.args[0], shown)
            continue
        seen.add(row["id"])
        rows.append(row)
    report.kept = len(rows)
    if quarantine_path:
        atomic_write_jsonl(quarantine_path, report.quarantine_rows)
    return to_dataset(schema, rows), report


def _rename(record: Any, column_map: Mapping[str, str] | None) -> Any:
    if not column_map or not isinstance(record, Mapping):
        return record
    return {column_map.get(k, k): v for k, v in record.items()}


def _quarantine(report: IngestReport, line: int, reason: str, shown: str) -> None:
    report.quarantined += 1
    report.reasons[_reason_code(reason)] += 1
    entry = {"file": report.file, "line": line, "reason": reason, "raw": shown[:MAX_RAW_CHARS]}
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
