"""Ingest never fails on a row: the cases found on main, every input format, and seeded byte and value fuzz.

Each ingest here goes through the real readers and the real Arrow conversion (`to_dataset_with_rejects`
-> `datasets.Dataset.from_dict`), so an unstorable string is caught where it really fails. Base rows
are the LLaMA-Factory demo files from ../shared/data when present, generated rows otherwise.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from nebula_utils.data.ingest import FORMAT_SCHEMA, IngestError, ingest_file
from nebula_utils.data.schema import FEATURES, SchemaError, to_dataset, validate_rows
from nebula_utils.io import iter_jsonl

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BOM = b"\xef\xbb\xbf"
GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
REASON_CODES = {
    "non_utf8",
    "invalid_json",
    "too_deep",
    "bad_number",
    "oversized",
    "not_an_object",
    "missing_field",
    "bad_field",
    "bad_turn_order",
    "bad_json_field",
    "bad_role",
    "empty_turn",
    "bad_messages",
    "bad_task",
    "bad_verifier",
    "bad_reference",
    "bad_index",
    "bad_candidates",
    "duplicate_id",
    "lone_surrogate",
    "unencodable",
}  # unexpected_error is deliberately absent: it means a converter bug


def jsonl(path: Path, lines: list) -> Path:
    raw = [x if isinstance(x, bytes) else (x if isinstance(x, str) else json.dumps(x)).encode() for x in lines]
    path.write_bytes(b"\n".join(raw) + b"\n")
    return path


def check_ingest(path: Path, fmt: str = "auto", **kw):
    """Ingest with a quarantine file and assert what must hold for ANY input; returns (ds, report, entries)."""
    quarantine = path.with_name(path.name + ".quarantine.jsonl")
    ds, report = ingest_file(str(path), fmt=fmt, quarantine_path=str(quarantine), **kw)
    assert report.count_in == report.kept + report.filtered + report.quarantined
    step = report.to_step()  # manifests.check_step raises unless in = out + filtered + quarantined
    assert (step["count_in"], step["count_out"], step["quarantined"]) == (
        report.count_in,
        report.kept,
        report.quarantined,
    )
    assert sum(step["drop_reasons"].values()) == step["filtered"] + step["quarantined"]
    assert sum(report.reasons.values()) == report.quarantined
    assert set(report.reasons) <= REASON_CODES, report.reasons
    entries = [json.loads(line) for line in quarantine.read_bytes().decode("utf-8").splitlines()]
    assert len(entries) == report.quarantined
    for entry in entries:
        assert entry["file"] == str(path)
        assert isinstance(entry["line"], int) and entry["line"] >= 1
        assert entry["reason"].split(":")[0] in REASON_CODES and len(entry["reason"]) <= 303
    assert [e["line"] for e in entries] == sorted(e["line"] for e in entries)
    assert len(ds) == report.kept and ds.features == FEATURES[report.schema]
    assert validate_rows(report.schema, ds) == report.kept
    assert not list(quarantine.parent.glob(".*.tmp")), "atomic write left a temporary file"
    return ds, report, entries


def reasons_by_line(entries: list[dict]) -> dict[int, str]:
    return {e["line"]: e["reason"] for e in entries}


# ---------------------------------------------------------------- the cases found on main


def test_cases_from_the_issue_are_quarantined_in_jsonl(tmp_path):
    path = jsonl(
        tmp_path / "chat.jsonl",
        [
            BOM + json.dumps(GOOD).encode(),  # 1 kept: the BOM is dropped, not invalid_json
            '{"messages": [{"role": "user", "content": "\\ud800"}, {"role": "assistant", "content": "x"}]}',
            "[" * 200_000 + "]" * 200_000,  # 3
            '{"messages": [], "n": ' + "7" * 5000 + "}",  # 4
            GOOD | {"id": "last"},  # 5 kept
        ],
    )
    ds, report, entries = check_ingest(path, fmt="messages", max_row_chars=1_000_000)
    assert ds["id"] == ["chat:1", "last"]
    got = reasons_by_line(entries)
    assert got[2] == "lone_surrogate:messages[0].content holds U+D800, which UTF-8 cannot encode"
    assert got[3].startswith("too_deep:")
    assert got[4] == "bad_number:integer of 5000 digits is past Python's int string limit (4300 digits)"
    assert entries[0]["raw"].startswith('{"messages": [{"role": "user", "content": "\\ud800"}')  # the row as written


def test_preference_without_prompt_is_a_missing_field(tmp_path):
    path = jsonl(
        tmp_path / "pref.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"chosen": "a", "rejected": "b"}]
    )
    ds, report, entries = check_ingest(path, fmt="preference")
    assert report.kept == 1 and reasons_by_line(entries) == {2: "missing_field:prompt"}


@pytest.mark.parametrize("surrogate", ["\\ud800", "\\udfff", "x\\udbff", "\\ude00\\ud83d"])
def test_lone_surrogates_are_quarantined_never_mangled(tmp_path, surrogate):
    paired = {"instruction": "smile \ud83d\ude00", "output": "ok"}  # a proper pair is kept as is
    path = jsonl(
        tmp_path / "a.jsonl",
        [paired, '{"instruction": "' + surrogate + '", "output": "y"}', {"instruction": "x", "output": "z"}],
    )
    ds, report, entries = check_ingest(path, fmt="alpaca")
    assert ds["messages"][0][0]["content"] == "smile \U0001f600"
    assert [e["reason"].split(":")[1].split(" ")[0] for e in entries] == ["messages[0].content"]
    assert report.reasons == {"lone_surrogate": 1} and ds["id"] == ["a:1", "a:3"]


def test_to_dataset_names_the_row_and_field_arrow_refuses():
    row = {"id": "r", "source": "s", "license": "l", "task": "general_chat"}
    row["messages"] = [{"role": "user", "content": "q\ud800"}, {"role": "assistant", "content": "a"}]
    with pytest.raises(
        SchemaError, match=r"sft row 0 \(id='r'\): lone_surrogate:messages\[0\]\.content holds U\+D800"
    ):
        to_dataset("sft", [row])


# ---------------------------------------------------------------- every input format


def test_json_array_rows_fail_alone(tmp_path):
    path = tmp_path / "arr.json"
    path.write_bytes(
        BOM
        + b'[{"instruction": "a", "output": "b"},\n'
        + b' {"instruction": "\\ud800", "output": "b"},\n'
        + b' {"instruction": "a", "output": "b", "n": '
        + b"9" * 5000
        + b"},\n"
        + b' {"instruction": "a", "output": "b", "deep": '
        + b"[" * 100
        + b"]" * 100
        + b"},\n"
        + b' {"output": "no instruction"},\n'
        + b' {"instruction": "caf\xc3\xa9 \xff", "output": "b"}]'
    )
    ds, report, entries = check_ingest(path)
    assert report.fmt == "alpaca" and ds["id"] == ["arr:1"]
    assert {line: reason.split(":")[0] for line, reason in reasons_by_line(entries).items()} == {
        2: "lone_surrogate",
        3: "bad_number",
        4: "too_deep",
        5: "missing_field",
        6: "non_utf8",
    }
    assert "\\xff" in entries[-1]["raw"]  # the undecodable byte is shown, not dropped


def test_csv_bom_bad_bytes_and_long_fields(tmp_path):
    long_ok, too_long = "x" * 150_000, "y" * 250_000  # csv's own field limit is 131072
    path = tmp_path / "qa.csv"
    path.write_bytes(
        BOM
        + b"question,answer\n"
        + b'"What is 2+2?",4\n'
        + b"bad \xff byte,x\n"
        + b"cesu \xed\xa0\x80 surrogate,x\n"
        + f"{long_ok},long\n{too_long},longer\n".encode()
        + b",empty\n"
    )
    limit_before = csv.field_size_limit()
    ds, report, entries = check_ingest(path, fmt="alpaca", column_map={"question": "instruction", "answer": "output"})
    assert csv.field_size_limit() == limit_before  # the raised limit is restored
    assert ds["id"] == ["qa:2", "qa:5"]  # the BOM did not rename the first column
    assert [(e["line"], e["reason"].split(":")[0]) for e in entries] == [
        (3, "non_utf8"),
        (4, "non_utf8"),
        (6, "oversized"),
        (7, "empty_turn"),
    ]
    assert "\\xff" in entries[0]["raw"] and "\\xed\\xa0\\x80" in entries[1]["raw"]


def test_parquet_rows_with_wrong_types_are_quarantined(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    turn = lambda role, text: {"role": role, "content": text}  # noqa: E731
    table = pa.table(
        {
            "messages": [[turn("user", "q"), turn("assistant", "a")]] * 3 + [[turn("user", "only a question")]],
            "difficulty": ["easy", "hard", "easy", "easy"],
            "parents": [["p"], None, ["q"], ["r"]],
            "quality": ['{"x": 1}', '{"x": 1}', '{"x": ' + "9" * 5000 + "}", '{"x": 1}'],
        }
    )
    pq.write_table(table, tmp_path / "sft.parquet")
    ds, report, entries = check_ingest(tmp_path / "sft.parquet")
    assert report.fmt == "messages" and ds["id"] == ["sft:1", "sft:2"] and ds["parents"] == [["p"], []]
    assert reasons_by_line(entries) == {
        3: "bad_json_field:quality",  # its 5000-digit integer is past Python's limit
        4: "bad_turn_order:last turn must be assistant",
    }
    pq.write_table(
        pa.table({"messages": [[turn("user", "q"), turn("assistant", "a")]], "difficulty": [3]}),
        tmp_path / "d.parquet",
    )
    _, report, entries = check_ingest(tmp_path / "d.parquet")
    assert entries[0]["reason"] == "bad_field:difficulty must be a string, got int"  # was stored as "3" before


@pytest.mark.parametrize(
    ("fmt", "record", "reason"),
    [
        ("alpaca", {"instruction": "a", "output": "b", "history": 5}, "bad_field:history must be a list"),
        (
            "alpaca",
            {"instruction": "a", "output": "b", "parents": "abc"},
            "bad_field:parents must be a list of strings",
        ),
        (
            "alpaca",
            {"instruction": "a", "output": "b", "difficulty": {"a": 1}},
            "bad_field:difficulty must be a string",
        ),
        ("alpaca", {"instruction": 7, "output": "b"}, "bad_field:instruction must be str"),
        ("sharegpt", {"conversations": [{"from": {"x": 1}, "value": "q"}]}, "bad_role:conversations turn's 'from'"),
        (
            "sharegpt",
            {"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]},
            "bad_role:bot",
        ),
        (
            "messages",
            {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}]},
            "bad_field",
        ),
        ("messages", {"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}, "missing_field"),
        ("messages", {"messages": [{"role": ["user"], "content": "q"}]}, "bad_role:['user']"),
        ("messages", {"messages": "hello"}, "bad_field:messages must be list"),
        ("preference", {"prompt": 3, "chosen": "a", "rejected": "b"}, "bad_field:prompt must be a list of turns"),
        ("preference", {"prompt": "q", "chosen": "a"}, "missing_field:rejected"),
        ("sharegpt_preference", {"conversations": [{"from": "human", "value": "q"}], "chosen": "a"}, "missing_field"),
        ("kto", {"prompt": "q", "completion": "a", "label": "yes"}, "bad_field:label must be bool"),
        ("kto", {"messages": [{"role": "user", "content": "q"}], "label": True}, "bad_turn_order:kto messages"),
        (
            "rl",
            {"prompt": "1+1?", "verifier": "math", "reference": '{"answer": ' + "1" * 5000 + "}"},
            "bad_json_field:reference",
        ),
        (
            "rl",
            {"prompt": "1+1?", "verifier": "math", "reference": "[" * 5000 + "]" * 5000},
            "bad_json_field:reference",
        ),
        (
            "rl",
            {"prompt": "1+1?", "verifier": "math", "reference": {"answer": "2"}, "pass_rate": True},
            "bad_field:pass_rate",
        ),
    ],
)
def test_each_mapping_quarantines_malformed_records_with_a_clear_reason(tmp_path, fmt, record, reason):
    path = jsonl(tmp_path / "x.jsonl", [record])
    _, report, entries = check_ingest(path, fmt=fmt)
    assert report.kept == 0 and entries[0]["reason"].startswith(reason), entries[0]["reason"]


# ---------------------------------------------------------------- whole-file failures


def test_whole_file_failures_are_one_line_errors_naming_the_file(tmp_path):
    def fails(path: Path | str, match: str, **kw) -> None:
        with pytest.raises(IngestError) as info:
            ingest_file(str(path), **kw)
        message = str(info.value)
        assert "\n" not in message and str(path) in message and re.search(match, message), message

    fails(tmp_path / "missing.jsonl", "no such file")
    fails(tmp_path, "is a directory")
    (tmp_path / "data.txt").write_text("x")
    fails(tmp_path / "data.txt", "unsupported file type")
    (tmp_path / "fake.parquet").write_bytes(b"PAR1 not really")
    fails(tmp_path / "fake.parquet", "not a readable Parquet file")
    rows = b"\n".join(json.dumps(GOOD | {"id": str(i)}).encode() for i in range(2000)) + b"\n"
    blob = gzip.compress(rows)
    (tmp_path / "cut.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    fails(tmp_path / "cut.jsonl.gz", r"cannot read after line \d+ \(EOFError")
    (tmp_path / "zipped.jsonl").write_bytes(blob)
    fails(tmp_path / "zipped.jsonl", r"holds gzip-compressed data, not text; name it \*\.jsonl\.gz")
    (tmp_path / "deep.json").write_text("[" + "[" * 200_000 + "]" * 200_000 + "]")
    fails(tmp_path / "deep.json", "nested deeper than the parser can follow.*use .jsonl")
    (tmp_path / "obj.json").write_text('{"instruction": "a"}')
    fails(tmp_path / "obj.json", "expected a JSON array")
    (tmp_path / "bad.json").write_bytes(b'[{"instruction": "a", \xff "output": "b"}]')
    fails(tmp_path / "bad.json", r"bad.json:1: invalid JSON")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    fails(tmp_path / "empty.jsonl", "cannot detect the format.*no records")
    jsonl(tmp_path / "garbage.jsonl", [b"\xff\xfe", "not json"])
    fails(tmp_path / "garbage.jsonl", r"cannot detect the format.*line 1: non_utf8:byte 0xFF")
    if os.geteuid() != 0:  # root reads anything
        locked = jsonl(tmp_path / "locked.jsonl", [GOOD])
        locked.chmod(0)
        fails(locked, r"cannot read from the start \(PermissionError")


def test_quarantine_file_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    import nebula_utils.io as io

    path = jsonl(tmp_path / "c.jsonl", [GOOD, "{broken"])
    quarantine = tmp_path / "q" / "c.jsonl"
    quarantine.parent.mkdir()
    quarantine.write_text("previous run\n")
    with pytest.raises(IngestError):
        ingest_file(str(tmp_path / "gone.jsonl"), quarantine_path=str(quarantine))
    assert quarantine.read_text() == "previous run\n"  # a failed ingest writes nothing
    monkeypatch.setattr(io.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        ingest_file(str(path), quarantine_path=str(quarantine))
    assert quarantine.read_text() == "previous run\n" and sorted(p.name for p in quarantine.parent.iterdir()) == [
        "c.jsonl"
    ]
    monkeypatch.undo()
    ingest_file(str(path), quarantine_path=str(quarantine))
    assert [json.loads(x)["line"] for x in quarantine.read_text().splitlines()] == [2]


def test_iter_jsonl_names_file_and_line_for_every_bad_line(tmp_path):
    path = jsonl(tmp_path / "s.jsonl", [BOM + b'{"a": 1}', "", '{"b": 2}'])
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (3, {"b": 2})]
    for line, match in [
        (b'{"a": "caf\xe9"}', r"s.jsonl:2: non_utf8:byte 0xE9 at offset 10"),
        (b"[" * 200_000, r"s.jsonl:2: too_deep"),
        (b"[" * 70 + b"]" * 70, r"s.jsonl:2: too_deep:containers nested deeper than 64"),
        (b"1" * 5000, r"s.jsonl:2: bad_number:integer of 5000 digits"),
        (b"{x", r"s.jsonl:2: invalid_json:Expecting property name"),
    ]:
        jsonl(path, [{"ok": 1}, line])
        with pytest.raises(ValueError, match=match):
            list(iter_jsonl(path))


# ---------------------------------------------------------------- seeded fuzz


def _real_records() -> dict[str, list[dict]]:
    demo = SHARED / "llamafactory_demo"
    if not demo.is_dir():
        return {}
    alpaca = json.loads((demo / "alpaca_en_demo.json").read_text())[:12]
    dpo = json.loads((demo / "dpo_en_demo.json").read_text())[:12]
    kto = json.loads((demo / "kto_en_demo.json").read_text())
    return {"alpaca": alpaca, "sharegpt_preference": dpo, "kto": kto[:6] + [r for r in kto if not r["label"]][:6]}


def _generated_records() -> dict[str, list[dict]]:
    rng = random.Random(0)
    words = ["alpha", "beta", "café", "naïve", "数据", "😀", "line\nbreak", 'quote "q"', "tab\there", "back\\slash"]
    text = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))  # noqa: E731
    alpaca = [{"instruction": text(), "input": rng.choice(["", text()]), "output": text()} for _ in range(12)]
    pairs = [
        {"conversations": [{"from": "human", "value": text()}], "chosen": {"from": "gpt", "value": text()}}
        | {"rejected": {"from": "gpt", "value": text()}}
        for _ in range(12)
    ]
    kto = [
        {
            "messages": [{"role": "user", "content": text()}, {"role": "assistant", "content": text()}],
            "label": i % 2 == 0,
        }
        for i in range(12)
    ]
    return {"alpaca": alpaca, "sharegpt_preference": pairs, "kto": kto}


def base_records() -> dict[str, list[dict]]:
    """12 raw records per format: real LLaMA-Factory rows where available, mapped to the other formats."""
    base = _real_records() or _generated_records()
    alpaca, pairs = base["alpaca"], base["sharegpt_preference"]
    base["sharegpt"] = [
        {"conversations": [{"from": "human", "value": r["instruction"]}, {"from": "gpt", "value": r["output"]}]}
        for r in alpaca
    ]
    base["messages"] = [
        {"messages": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}]}
        for r in alpaca
    ]
    base["preference"] = [
        {"prompt": r["conversations"][0]["value"], "chosen": r["chosen"]["value"], "rejected": r["rejected"]["value"]}
        for r in pairs
    ]
    base["rl"] = [
        {"prompt": r["instruction"], "verifier": "math", "reference": {"answer": str(i)}, "task": "math_reasoning"}
        for i, r in enumerate(alpaca)
    ]
    return base


BASE = base_records()
# Raw JSON text spliced in place of a value: each a failure found on main or a neighbour of one.
NASTY_VALUES = [
    '"\\ud800"',
    '"tail \\udfff"',
    '"\\udbff\\udbff"',
    '"\\ud83d\\ude00 paired"',
    "[" * 80 + "]" * 80,
    "[" * 3000 + "]" * 3000,
    "1" * 5000,
    "-" + "9" * 4400,
    "12345678901234567890",
    "null",
    "true",
    "0",
    "-1.5e308",
    "NaN",
    "Infinity",
    "{}",
    "[]",
    '""',
    '"   "',
    '{"role": "user"}',
    '[{"from": "gpt", "value": 5}]',
    '"café ✓ 😀"',
    '"' + "z" * 5000 + '"',
]
NASTY_BYTES = [b"\xff", b"\xed\xa0\x80", b"\xc3", BOM, b"\x00", b"\n", b"\r\n", b'"', b"\\", b"{", b"]", b",", b":"]
KEY_SWAPS = [
    (b'"prompt"', b'"prompx"'),
    (b'"role"', b'"rolex"'),
    (b'"user"', b'"human"'),
    (b'"assistant"', b'"gpt"'),
    (b'"output"', b'"id"'),
    (b'"label": true', b'"label": "true"'),
    (b'"chosen"', b'"id"'),
    (b"}", b', "task": "poetry"}'),
    (b"}", b', "parents": "p"}'),
    (b"}", b', "id": "same"}'),
]


def _value_mutation(rng: random.Random, line: bytes) -> bytes:
    """Replace one value of a row (any depth) with a nasty JSON text; keys and the rest stay valid JSON."""
    record = json.loads(line)
    slots = []
    stack = [record]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            slots.append((node, key))
            stack.append(value)
    if not slots:
        return line
    node, key = rng.choice(slots)
    node[key] = "\u0000NASTY\u0000"
    return json.dumps(record).replace('"\\u0000NASTY\\u0000"', rng.choice(NASTY_VALUES)).encode()


def mutate(rng: random.Random, data: bytes) -> tuple[bytes, list[str]]:
    """1-4 seeded mutations of a jsonl/json/csv file's bytes; returns the bytes and what was done."""
    done = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["flip", "insert", "delete", "value", "swap", "lines", "bom", "truncate"])
        pos = rng.randrange(len(data) + 1)
        if kind == "flip" and data:
            pos = min(pos, len(data) - 1)
            data = data[:pos] + bytes([data[pos] ^ (1 << rng.randrange(8))]) + data[pos + 1 :]
        elif kind == "insert":
            data = data[:pos] + rng.choice(NASTY_BYTES + [bytes([rng.randrange(256)])]) + data[pos:]
        elif kind == "delete":
            data = data[:pos] + data[pos + rng.randint(1, 8) :]
        elif kind == "value":
            lines = data.split(b"\n")
            index = rng.randrange(len(lines))
            try:
                lines[index] = _value_mutation(rng, lines[index])
            except (ValueError, RecursionError):  # that line is no longer JSON (an earlier mutation)
                continue
            data = b"\n".join(lines)
        elif kind == "swap":
            old, new = rng.choice(KEY_SWAPS)
            hits = [m.start() for m in re.finditer(re.escape(old), data)]
            if hits:
                at = rng.choice(hits)
                data = data[:at] + new + data[at + len(old) :]
        elif kind == "lines":
            lines = data.split(b"\n")
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines.insert(j, lines[i])  # a duplicated line (same content, its own line number)
            data = b"\n".join(lines)
        elif kind == "bom":
            data = BOM + data
        else:  # a file cut short while being written: its last line or two are partial
            pos = rng.randrange(len(data) * 4 // 5, len(data) + 1)
            data = data[:pos]
        done.append(f"{kind}@{pos}")
    return data, done


def _jsonl_bytes(records: list[dict]) -> bytes:
    """One record a line, alternately as raw UTF-8 and as \\u escapes (both spellings get corrupted)."""
    return b"".join(json.dumps(r, ensure_ascii=i % 2 == 1).encode() + b"\n" for i, r in enumerate(records))


def _check_jsonl_case(path: Path, data: bytes, base_lines: set[bytes], fmt: str, label: str) -> Counter:
    """Ingest one corrupted file and check it line by line; returns its reason counts (+ kept, quarantined)."""
    path.write_bytes(data)
    try:
        ds, report, entries = check_ingest(path, fmt=fmt)
    except IngestError as exc:  # only possible with fmt=auto and no record left to detect from
        assert fmt == "auto" and "cannot detect the format" in str(exc), (label, exc)
        return Counter({"file_error": 1})
    lines = data.split(b"\n")
    if lines[0].startswith(BOM):
        lines[0] = lines[0][len(BOM) :]
    records = {n for n, line in enumerate(lines, start=1) if line.strip()}
    quarantined = [e["line"] for e in entries]
    kept = [int(i.rsplit(":", 1)[1]) for i in ds["id"] if re.fullmatch(rf"{path.stem}:\d+", i)]
    assert report.count_in == len(records), label  # every non-blank line is one record
    assert len(set(quarantined)) == len(quarantined) and not set(quarantined) & set(kept), label
    if len(kept) == report.kept:  # every id is line-derived: each line is either kept or quarantined
        assert set(kept) | set(quarantined) == records, label
    if fmt != "auto":  # an untouched base row (or a copy of one) is never quarantined
        untouched = {n for n, line in enumerate(lines, start=1) if line.rstrip(b"\r") in base_lines}
        wrongly = {n: r for n, r in reasons_by_line(entries).items() if n in untouched}
        assert not {n: r for n, r in wrongly.items() if not r.startswith("duplicate_id")}, (label, wrongly)
    return report.reasons + Counter(kept=report.kept, quarantined=report.quarantined)


def test_fuzz_jsonl(tmp_path):
    """40 seeded corruptions for each of the 7 formats (280 ingests): no exception, balance, file and line
    on every quarantined row, untouched rows kept, and the failures of the issue among the reasons seen."""
    seen = Counter()
    for fmt in sorted(FORMAT_SCHEMA):
        base = _jsonl_bytes(BASE[fmt])
        base_lines = set(base.split(b"\n")) - {b""}
        for seed in range(40):
            rng = random.Random(f"{fmt}:{seed}")
            data, done = mutate(rng, base)
            use = "auto" if seed % 5 == 0 else fmt
            seen += _check_jsonl_case(
                tmp_path / f"{fmt}.jsonl", data, base_lines, use, f"{fmt} seed={seed} {use} {done}"
            )
    # The seeds reach every kind of failure found on main (counts are fixed by the seeds).
    assert {"invalid_json", "non_utf8", "lone_surrogate", "too_deep", "bad_number", "missing_field"} <= set(seen), seen
    assert seen["kept"] > 5 * seen["quarantined"] > 0, seen


def test_fuzz_json_and_csv(tmp_path):
    """Byte corruption of a .json array and a .csv file: a row-level quarantine or one clear IngestError."""
    rows = BASE["alpaca"]
    json_bytes = json.dumps(rows, ensure_ascii=False, indent=1).encode()
    lines = ["instruction,input,output"] + [
        ",".join('"' + r[k].replace('"', '""') + '"' for k in ("instruction", "input", "output")) for r in rows
    ]
    csv_bytes = ("\n".join(lines) + "\n").encode()
    outcomes = {"ingested": 0, "file_error": 0}
    for seed in range(60):
        rng = random.Random(f"json-csv:{seed}")
        for name, base in (("a.json", json_bytes), ("a.csv", csv_bytes)):
            data, done = mutate(rng, base)
            path = tmp_path / name
            path.write_bytes(data)
            try:
                _, report, entries = check_ingest(path, fmt="alpaca")
            except IngestError as exc:
                # a .json array is parsed whole: broken syntax is a file error, one line naming the file
                assert name == "a.json" and "\n" not in str(exc) and str(path) in str(exc), (seed, done, exc)
                outcomes["file_error"] += 1
                continue
            outcomes["ingested"] += 1
            if name == "a.csv":
                assert all(e["line"] <= data.count(b"\n") + 1 for e in entries), (seed, done)
    assert outcomes["ingested"] >= 60 and outcomes["file_error"] > 0, outcomes
