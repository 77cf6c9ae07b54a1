"""Format verifier (JSON / schema / regex / sections / length) and the reward-hacking audit set."""

import pytest

from nebula_utils.verifiers import InvalidReference, get_verifier
from nebula_utils.verifiers.audit import load_audit_cases, run_audit

SCHEMA = {
    "type": "object",
    "required": ["name", "age"],
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
}
REPORT = "# Introduction\nWe study rivers.\n\n# Method\nWe measured flow.\n\n# Results\nFlow doubled in spring."


@pytest.fixture(scope="module")
def fmt():
    return get_verifier("format")


@pytest.mark.parametrize(
    "completion, reference, score, failed",
    [
        ('{"a": [1, 2]}', {"json": True}, 1.0, []),
        ('```json\n{"a": 1}\n```', {"json": True}, 1.0, []),
        ('{"a": 1', {"json": True}, 0.0, ["json"]),
        ('Here: {"a": 1}', {"json": True}, 0.0, ["json"]),
        ('{"name": "Ada", "age": 36}', {"json_schema": SCHEMA}, 1.0, []),
        ('{"name": "Ada", "age": -1}', {"json_schema": SCHEMA}, 0.5, ["json_schema"]),  # valid JSON, bad schema
        ('{"name": "Ada"}', {"json_schema": SCHEMA}, 0.5, ["json_schema"]),
        ("not json", {"json_schema": SCHEMA}, 0.0, ["json", "json_schema"]),
        ("Order 12345 shipped", {"regex": r"\b\d{5}\b"}, 1.0, []),
        ("Order 1234 shipped", {"regex": r"\b\d{5}\b"}, 0.0, ["regex"]),
        ("2024-05-01", {"regex": r"\d{4}-\d{2}-\d{2}", "regex_fullmatch": True}, 1.0, []),
        ("on 2024-05-01", {"regex": r"\d{4}-\d{2}-\d{2}", "regex_fullmatch": True}, 0.0, ["regex"]),
        (REPORT, {"required_sections": ["Introduction", "Method", "Results"]}, 1.0, []),
        (
            "**Introduction**\nRivers.\nMethod: flow meters.\n",
            {"required_sections": ["Introduction", "Method"]},
            1.0,
            [],
        ),
        (
            REPORT.replace("# Method\nWe measured flow.\n\n", ""),
            {"required_sections": ["Method", "Results"]},
            0.5,
            ["section:Method"],
        ),
        ("one two three four five", {"min_words": 3, "max_words": 5}, 1.0, []),
        ("one two", {"min_words": 3, "max_words": 5}, 0.5, ["min_words"]),
        ("one two three four five six", {"min_words": 3, "max_words": 5}, 0.5, ["max_words"]),
        ('{"a": 1}', {"json": True, "regex": "b", "max_words": 10}, 2 / 3, ["regex"]),
    ],
)
def test_format_table(fmt, completion, reference, score, failed):
    res = fmt(completion, reference)
    assert res.score == pytest.approx(score)
    assert res.passed is (not failed)
    assert [name for name, ok in res.details["checks"].items() if not ok] == failed
    assert res.verifier == "format" and res.version == fmt.version


@pytest.mark.parametrize(
    "reference, match",
    [
        ({}, "sets no check"),
        ({"jsn": True}, "unknown keys"),
        ({"json_schema": {"type": "not-a-type"}}, "invalid json_schema"),
    ],
)
def test_malformed_reference(fmt, reference, match):
    with pytest.raises(InvalidReference, match=match):
        fmt("x", reference)


def test_echo_and_empty_get_nothing(fmt):
    prompt = "Answer in JSON with the keys name and age for the person described below please."
    assert fmt(prompt, {"regex": "JSON", "prompt": prompt}).reason == "answer only echoes the prompt"
    assert fmt("   ", {"regex": ".*"}).reason == "empty answer"


# ---------------------------------------------------------------------------------------------
# Reward-hacking audit set (all verifiers)

ATTACK_KINDS = {
    "answer spraying": "math",
    "echo": "math",
    "empty answer": "math",
    "long useless": "math",
    "\\boxed{} inside": "math",
    "keywords stuffed": "ifeval",
}


def test_audit_set_is_complete():
    cases = list(load_audit_cases())
    assert len({c["id"] for c in cases}) == len(cases)
    for kind, verifier in ATTACK_KINDS.items():
        assert any(kind in c["attack"] and c["verifier"] == verifier for c in cases), kind
    for name in ("math", "ifeval", "code", "format"):  # attacks and positive controls for each
        mine = [c for c in cases if c["verifier"] == name]
        assert any(c["expected_passed"] for c in mine) and any(not c["expected_passed"] for c in mine), name
    assert max(len(c["completion"]) for c in cases) > 100_000  # the over-long cases really are long


@pytest.fixture(scope="module")
def audit_rows():
    return {r["id"]: r for r in run_audit()}


@pytest.mark.parametrize("case_id", [c["id"] for c in load_audit_cases()])
def test_audit_case(audit_rows, case_id):
    row = audit_rows[case_id]
    assert row["ok"], row
