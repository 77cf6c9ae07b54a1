"""Ingest: formats, quarantine of malformed rows, Hub path offline, real LLaMA-Factory files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nebula_utils.data.ingest import IngestError, ingest_file
from nebula_utils.data.schema import FEATURES
from tests.conftest import SHARED

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} absent (optional real data)")


def write_lines(path: Path, lines: list[bytes | str | dict]) -> Path:
    raw = [
        line if isinstance(line, bytes) else (json.dumps(line) if isinstance(line, dict) else line).encode()
        for line in lines
    ]
    path.write_bytes(b"\n".join(raw) + b"\n")
    return path


def read_quarantine(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_malformed_rows_go_to_quarantine_with_file_line_and_reason(tmp_path):
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path = write_lines(
        tmp_path / "chat.jsonl",
        [
            good,  # 1 kept
            '{"messages": [',  # 2 bad JSON
            {"text": "no messages here"},  # 3 missing field
            {"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "x"}]},  # 4 role
            {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "x"}]},  # 5 empty
            b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',  # 6 not UTF-8
            {"messages": [{"role": "user", "content": "x" * 2500}, {"role": "assistant", "content": "y"}]},  # 7 size
            "[1, 2]",  # 8 not an object
            {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]},  # 9 order
            good | {"id": "dup"},  # 10 kept
            good | {"id": "dup"},  # 11 duplicate id
        ],
    )
    quarantine = tmp_path / "q" / "chat.jsonl"
    ds, report = ingest_file(str(path), quarantine_path=str(quarantine), max_row_chars=400, license="CC0")
    assert report.fmt == "messages" and report.schema == "sft"
    assert (report.count_in, report.kept, report.quarantined) == (11, 2, 9)
    assert report.count_in == report.kept + report.quarantined + report.filtered
    entries = read_quarantine(quarantine)
    assert [(e["line"], e["reason"].split(":")[0]) for e in entries] == [
        (2, "invalid_json"),
        (3, "missing_field"),
        (4, "bad_role"),
        (5, "empty_turn"),
        (6, "non_utf8"),
        (7, "oversized"),
        (8, "not_an_object"),
        (9, "bad_turn_order"),
        (11, "duplicate_id"),
    ]
    assert all(e["file"] == str(path) for e in entries)
    assert entries[5]["raw_truncated_from"] > len(entries[5]["raw"]) == 2000  # raw kept to 2000 chars
    assert "caf" in entries[4]["raw"]
    step = report.to_step()
    assert step["count_in"] == 11 and step["count_out"] == 2 and step["quarantined"] == 9
    assert sum(step["drop_reasons"].values()) == 9
    assert ds["id"] == ["chat:1", "dup"] and ds[0]["license"] == "CC0"
    source = report.to_source()
    assert source["path"] == str(path) and source["revision"].startswith("sha256:") and source["license"] == "CC0"


@pytest.mark.parametrize(
    ("record", "fmt", "schema", "check"),
    [
        (
            {
                "instruction": "Translate",
                "input": "bonjour",
                "output": "hello",
                "system": "Be brief.",
                "history": [["hi", "hey"]],
            },
            "alpaca",
            "sft",
            lambda r: (
                [m["role"] for m in r["messages"]] == ["system", "user", "assistant", "user", "assistant"]
                and r["messages"][3]["content"] == "Translate\n\nbonjour"
            ),
        ),
        (
            {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
            "sharegpt",
            "sft",
            lambda r: r["messages"] == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        ),
        (
            {
                "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                "id": 7,
                "task": "code",
            },
            "messages",
            "sft",
            lambda r: r["id"] == "7" and r["task"] == "code",
        ),
        (
            {
                "prompt": "q",
                "chosen": "good",
                "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad"}],
            },
            "preference",
            "preference",
            lambda r: (
                [c["content"] for c in r["candidates"]] == ["good", "bad"] and (r["chosen"], r["rejected"]) == (0, 1)
            ),
        ),
        (
            {
                "conversations": [{"from": "human", "value": "q"}],
                "chosen": {"from": "gpt", "value": "good"},
                "rejected": {"from": "gpt", "value": "bad"},
            },
            "sharegpt_preference",
            "preference",
            lambda r: r["prompt"] == [{"role": "user", "content": "q"}] and r["candidates"][1]["content"] == "bad",
        ),
        (
            {"prompt": "q", "completion": "a", "label": False},
            "kto",
            "preference",
            lambda r: (
                r["candidates"]
                == [{"content": "a", "generator": "dataset", "sampling_params": "{}", "scores": "{}", "label": False}]
                and r["chosen"] is None
            ),
        ),
        (
            {"prompt": "2+2?", "verifier": "math", "reference": '{"answer": "4"}', "task": "math_reasoning"},
            "rl",
            "rl",
            lambda r: json.loads(r["reference"]) == {"answer": "4"} and r["messages"][0]["content"] == "2+2?",
        ),
    ],
)
def test_each_format_is_detected_and_mapped(tmp_path, record, fmt, schema, check):
    path = write_lines(tmp_path / "data.jsonl", [record])
    ds, report = ingest_file(str(path))
    assert (report.fmt, report.schema, report.kept) == (fmt, schema, 1)
    assert ds.features == FEATURES[schema]
    assert check(ds[0])


def test_csv_parquet_json_and_column_map(tmp_path):
    csv_path = tmp_path / "qa.csv"
    csv_path.write_bytes(b'question,answer\n"What is 2+2?",4\n"multi\nline?",yes\nbad \xff byte,x\n,empty\n')
    ds, report = ingest_file(str(csv_path), fmt="alpaca", column_map={"question": "instruction", "answer": "output"})
    assert ds["id"] == ["qa:2", "qa:4"]  # ids carry the physical line where each record ends
    assert [(q["line"], q["reason"]) for q in report.quarantine_rows] == [(5, "non_utf8"), (6, "empty_turn")]
    ds.to_parquet(str(tmp_path / "sft.parquet"))
    again, rep2 = ingest_file(str(tmp_path / "sft.parquet"))
    assert rep2.fmt == "messages" and again["messages"] == ds["messages"] and again["id"] == ds["id"]
    (tmp_path / "arr.json").write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c"}]))
    ds, report = ingest_file(str(tmp_path / "arr.json"))
    assert report.kept == 1 and report.quarantine_rows[0]["line"] == 2


def test_whole_file_errors_are_clear(tmp_path):
    (tmp_path / "broken.json").write_text('[{"instruction": "a",\n "output": }]')
    with pytest.raises(IngestError, match=r"broken.json:2: invalid JSON"):
        ingest_file(str(tmp_path / "broken.json"))
    write_lines(tmp_path / "odd.jsonl", [{"foo": 1}])
    with pytest.raises(IngestError, match="cannot detect the format"):
        ingest_file(str(tmp_path / "odd.jsonl"))
    with pytest.raises(IngestError, match="unknown format 'yaml'"):
        ingest_file(str(tmp_path / "odd.jsonl"), fmt="yaml")
    with pytest.raises(IngestError, match="no such file"):
        ingest_file(str(tmp_path / "missing.jsonl"))


def test_hub_ids_go_through_load_dataset_and_fail_clearly_offline(monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(IngestError, match="cannot load Hub dataset 'nebula-test/no-such-set'.*local"):
        ingest_file("nebula-test/no-such-set", fmt="alpaca")


@needs_shared
@pytest.mark.shared
def test_llamafactory_demo_files_ingest_cleanly():
    demo = SHARED / "llamafactory_demo"
    expected = {
        "alpaca_en_demo": ("alpaca", 999),
        "dpo_en_demo": ("sharegpt_preference", 300),
        "kto_en_demo": ("kto", 300),
    }
    for name, (fmt, n) in expected.items():
        ds, report = ingest_file(str(demo / f"{name}.json"), source_name=name)
        assert (report.fmt, report.count_in, report.kept) == (fmt, n, n), report.reasons
    labels = [c[0]["label"] for c in ds["candidates"]]
    assert 0 < sum(labels) < len(labels)  # KTO demo has both desirable and undesirable answers
