"""Cross-verification: every gate on hand-made rows, the keep rule, funnel and count balance."""

from __future__ import annotations

import json

import pytest

from nebula_utils.data import crossverify as C
from nebula_utils.data.distillation import group_dataset
from nebula_utils.verifiers import get_verifier

USER = [{"role": "user", "content": "What is 17 + 25?"}]
HE_REF = {
    "prompt": 'def add(a, b):\n    """Add two numbers."""\n',
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
    "entry_point": "add",
}
ENGLISH = "The answer follows from adding the two numbers together carefully, which gives the result we need here."
GERMAN = "Die Antwort ergibt sich, wenn man die beiden Zahlen sorgfältig zusammenzählt, und das ist das Ergebnis hier."


def rules(**kw):
    base = {
        "keep_rules": {
            "math_reasoning": ["format", "verifier", "agreement", "heuristics"],
            "default": ["format", "heuristics"],
        },
        "min_words": 2,
        "max_words": 50,
    }
    return C.FilterRules(**(base | kw))


@pytest.mark.parametrize(
    "prompt, text, finish, task, verifier, ref, expected",
    [
        (USER, "42", "stop", "math_reasoning", "math", {"answer": "42"}, (True, "ok")),
        ([{"role": "assistant", "content": "x"}], "42", "stop", "math_reasoning", None, None, (False, "bad_roles")),
        (USER, "   ", "stop", "general_chat", None, None, (False, "empty")),
        (USER, "The sum is", "length", "general_chat", None, None, (False, "truncated")),
        (
            USER,
            "```python\ndef add(a, b)\n    return a + b\n```",
            "stop",
            "code",
            "code",
            HE_REF,
            (False, "unparseable_code"),
        ),
        (USER, "```python\ndef add(a, b):\n    return a + b\n```", "stop", "code", "code", HE_REF, (True, "ok")),
        (USER, "    return a + b\n", "stop", "code", "code", HE_REF, (True, "ok")),  # body continuation
        (USER, '{"a": 1,', "stop", "general_chat", "format", {"json": True}, (False, "unparseable_json")),
        (USER, '```json\n{"a": 1}\n```', "stop", "general_chat", "format", {"json": True}, (True, "ok")),
        (
            USER,
            "not json",
            "stop",
            "complex_if",
            "ifeval",
            {"instruction_id_list": ["detectable_format:json_format"], "kwargs": [{}], "prompt": "x"},
            (False, "unparseable_json"),
        ),
    ],
)
def test_format_gate(prompt, text, finish, task, verifier, ref, expected):
    dim = C.format_gate(prompt, text, finish, task, verifier, ref)
    assert (dim.passed, dim.reason) == expected


@pytest.mark.parametrize(
    "text, prompt, expected",
    [
        (ENGLISH, "Add them.", (True, "ok")),
        ("Yes", "Add them.", (False, "too_short")),
        (" ".join(["word"] * 60), "Add them.", (False, "too_long")),
        ("", "Add them.", (False, "empty")),
        ("What is 17 + 25?", "What is 17 + 25?", (False, "echo")),
        ("the same phrase again " * 40, "Add them.", (False, "repetition")),
        (GERMAN, "Add them.", (False, "language_de")),
    ],
)
def test_heuristics_gate(text, prompt, expected):
    r = rules(max_words=50)
    if expected[1] == "repetition":
        r = rules(max_words=10_000)
    dim = C.heuristics_gate(text, prompt, "general_chat", r)
    assert (dim.passed, dim.reason) == expected
    assert (dim.score == 1.0) == dim.passed


def test_language_check_can_be_switched_off():
    assert C.heuristics_gate(GERMAN, "x", "general_chat", rules(language="")).passed


@pytest.mark.parametrize(
    "texts, teacher, task, expected",
    [
        # three of four teacher samples agree (42 == 42.0 == \boxed{42}); the odd one disagrees
        (
            ["so \\boxed{42}", "It is 42.0", "The answer is 42", "\\boxed{41}"],
            [True] * 4,
            "math_reasoning",
            [(0.75, True), (0.75, True), (0.75, True), (0.25, False)],
        ),
        (["\\boxed{1}", "\\boxed{2}"], [True, True], "math_reasoning", [(0.5, False), (0.5, False)]),
        (
            ["no number here", "\\boxed{3}", "\\boxed{3}"],
            [True, True, False],
            "math_reasoning",
            [(0.0, False), (0.5, False), (None, None)],
        ),  # the dataset answer is not a teacher sample
        (
            ["\\boxed{7}", "\\boxed{7}", "\\boxed{7}"],
            [True, True, False],
            "math_reasoning",
            [(1.0, True)] * 2 + [(None, None)],
        ),
        (["a", "b"], [True, True], "general_chat", [(None, None)] * 2),  # not a math task: n/a
        (["\\boxed{7}", "\\boxed{7}"], [True, False], "math_reasoning", [(None, None)] * 2),  # one teacher sample
    ],
)
def test_self_consistency_agreement(texts, teacher, task, expected):
    dims = C.agreement_dims(texts, teacher, task, "math" if task == "math_reasoning" else None, min_agreement=0.6)
    assert [(d.score, d.passed) for d in dims] == expected


@pytest.mark.parametrize(
    "dims, required, expected",
    [
        (
            {"format": C.Dim(1, True, "ok"), "verifier": C.Dim(1, True, "pass"), "heuristics": C.Dim(1, True, "ok")},
            ["format", "verifier"],
            (True, "kept"),
        ),
        (
            {"format": C.Dim(1, True, "ok"), "heuristics": C.Dim(1, True, "ok")},
            ["format", "verifier"],
            (False, "no_signal:verifier"),
        ),
        (
            {
                "format": C.Dim(1, True, "ok"),
                "agreement": C.Dim(0.5, False, "disagrees"),
                "heuristics": C.Dim(1, True, "ok"),
            },
            ["format"],
            (False, "agreement:disagrees"),
        ),  # an applicable signal that disagrees drops it
        (
            {"format": C.Dim(0, False, "truncated"), "verifier": C.Dim(0, False, "wrong")},
            [],
            (False, "format:truncated"),
        ),
        ({"format": C.Dim(1, True, "ok"), "judge": C.Dim(0.1, False, "low_rating")}, [], (False, "judge:low_rating")),
    ],
)
def test_keep_rule(dims, required, expected):
    kept, reason, _ = C.decide(dims, required)
    assert (kept, reason) == expected


def test_rules_reject_unknown_dimensions_and_need_a_default():
    with pytest.raises(ValueError, match="unknown dimension"):
        rules(keep_rules={"default": ["format", "vibes"]})
    with pytest.raises(ValueError, match="default"):
        rules(keep_rules={"code": ["format"]})


def group(gid, task, verifier, ref, answers, finishes=None, original=None):
    cands = [{"content": a, "generator": "teacher", "sampling_params": "{}", "scores": "{}"} for a in answers]
    meta = [{"finish_reason": f, "num_tokens": 5} for f in (finishes or ["stop"] * len(answers))]
    if original:
        cands.append({"content": original, "generator": "dataset", "sampling_params": "{}", "scores": "{}"})
        meta.append({"finish_reason": "dataset", "num_tokens": None})
    return {
        "id": gid,
        "source": "test",
        "license": "MIT",
        "task": task,
        "prompt": USER,
        "candidates": cands,
        "chosen": 0,
        "rejected": 1,
        "preference_reason": "test",
        "parents": [],
        "verifier": verifier,
        "reference": json.dumps(ref) if ref else None,
        "candidate_meta": json.dumps(meta),
    }


MATH_OK = "Adding the two numbers: 17 + 25 = 42. The final answer is \\boxed{42}."
MATH_BAD = "Adding the two numbers: 17 + 25 = 43. The final answer is \\boxed{43}."


def hand_groups():
    return [
        group("g-correct", "math_reasoning", "math", {"answer": "42"}, [MATH_OK, MATH_OK]),
        group("g-wrong", "math_reasoning", "math", {"answer": "42"}, [MATH_BAD, MATH_BAD], original=MATH_OK),
        group("g-split", "math_reasoning", "math", {"answer": "42"}, [MATH_OK, MATH_BAD]),
        group("g-trunc", "general_chat", None, None, [ENGLISH, ENGLISH], finishes=["length", "length"]),
        group("g-chat", "general_chat", None, None, [ENGLISH, "ok"]),
        group(
            "g-code",
            "code",
            "code",
            HE_REF,
            ["```python\ndef add(a, b):\n    return a + b\n```", "```python\ndef add(a, b):\n    return a - b\n```"],
        ),
    ]


def test_cross_verify_end_to_end_on_hand_rows(tmp_path):
    groups = hand_groups()
    result = C.cross_verify(groups, rules())
    decisions = {g["id"]: (g["kept"], g["reason"]) for g in result.groups}
    assert decisions == {
        "g-correct": (True, "kept"),
        "g-wrong": (False, "verifier:wrong_answer"),  # teacher wrong; the dataset answer cannot be the SFT answer
        "g-split": (False, "agreement:disagrees"),  # right answer, but only 1 of 2 samples agree
        "g-trunc": (False, "format:truncated"),
        "g-chat": (True, "kept"),
        "g-code": (True, "kept"),
    }
    by = {(c["group"], c["index"]): c for c in result.candidates}
    assert by[("g-wrong", 2)]["kept"] and by[("g-wrong", 0)]["reason"] == "verifier:wrong_answer"
    assert by[("g-chat", 1)]["reason"] == "heuristics:too_short"
    assert by[("g-code", 1)]["reason"].startswith("verifier:")
    sft = C.sft_rows(groups, result)
    assert [r["id"] for r in sft] == ["g-correct", "g-chat", "g-code"]
    assert (
        sft[2]["messages"][-1]["content"].count("a + b") == 1
        and sft[0]["verifier_version"] == get_verifier("math").version
    )
    assert set(sft[0]["quality"]) == {"format", "verifier", "agreement", "heuristics"}
    pairs, pair_drops = C.preference_rows(groups, result)
    assert {p["id"] for p in pairs} == {"g-wrong", "g-chat", "g-code"}
    wrong = next(p for p in pairs if p["id"] == "g-wrong")
    assert wrong["chosen"] == 2 and "verifier:wrong_answer" in wrong["preference_reason"]
    assert sum(pair_drops.values()) + len(pairs) == len(groups)
    group_dataset(pairs)  # valid preference rows
    funnel = C.funnel(result)
    rates = [r["rate"] for r in funnel]
    assert (
        rates[0] == 1.0
        and rates == sorted(rates, reverse=True)
        and funnel[-1]["candidates"] == sum(c["kept"] for c in result.candidates)
    )
    dropped = C.dropped_rows(result)
    assert len(dropped) + len(sft) == len(groups) and all(d["reason"] and d["candidates"] for d in dropped)


def test_stored_verifier_scores_are_reused():
    g = group("g", "math_reasoning", "math", {"answer": "42"}, [MATH_BAD, MATH_BAD])
    for cand in g["candidates"]:  # a stored score under the same verifier version wins over recomputing
        cand["scores"] = json.dumps({f"verifier:math@{get_verifier('math').version}": 1.0})
    result = C.cross_verify([g], rules())
    assert result.candidates[0]["dims"]["verifier"].reason == "pass"


def test_judge_dimension_with_a_judge_function_and_the_rating_parser():
    groups = [group("g", "general_chat", None, None, [ENGLISH, ENGLISH + " Indeed."])]
    result = C.cross_verify(
        groups, rules(), judge=lambda prompts, answers: [0.9 if a.endswith("Indeed.") else 0.2 for a in answers]
    )
    assert [c["reason"] for c in result.candidates] == ["judge:low_rating", "kept"]
    result = C.cross_verify(groups, rules(), judge=lambda p, a: [None, 1.0])
    assert result.candidates[0]["reason"] == "judge:unparsed"
    assert [C.LLMJudge.parse(s) for s in ("7", "Rating: 10/10", "I think 1.", "great")] == [6 / 9, 1.0, 0.0, None]


def test_filter_stage_writes_balanced_versions(tmp_path):
    from nebula_utils.data.distillation import group_dataset as gd
    from nebula_utils.data.manifests import processing_step
    from nebula_utils.data.versions import read_manifests, save_version
    from nebula_utils.stages.filter import FilterConfig, write_outputs

    groups = hand_groups()
    save_version(
        gd(groups),
        tmp_path / "distill",
        "preference",
        {"name": "t", "path": "x", "license": "MIT"},
        [processing_step("distill", count_in=len(groups), count_out=len(groups))],
    )
    cfg = FilterConfig(
        seed=0,
        device="cpu",
        num_threads=1,
        run_dir="",
        run_id="",
        data=str(tmp_path / "distill"),
        keep_rules=rules().keep_rules,
        min_verifier_score=1.0,
        min_agreement=0.6,
        min_words=2,
        max_words=50,
        language="en",
        min_language_prob=0.5,
        judge_model="",
        min_judge_score=0.5,
        teacher_only=True,
        verifier_workers=1,
    )
    infos = write_outputs(cfg, groups, C.cross_verify(groups, cfg.rules()), tmp_path)
    step = read_manifests(infos["sft"].path)["processing"]["steps"][-1]
    assert (step["count_in"], step["count_out"], step["filtered"]) == (6, 3, 3)
    assert step["drop_reasons"] == {"agreement:disagrees": 1, "format:truncated": 1, "verifier:wrong_answer": 1}
    assert step["candidate_funnel"][0]["candidates"] == 13
    assert infos["preference"].num_rows == 3
    assert len((tmp_path / "dropped.jsonl").read_text().splitlines()) == 3
