"""Math verifier: extraction and equivalence tables, real GSM8K rows, reasoning-gym agreement."""

import json
import random
from decimal import Decimal

import pytest

from nebula_utils.verifiers import InvalidReference, VerificationResult, get_verifier, verify_batch
from nebula_utils.verifiers.math_answer import answers_equal, extract_answer, gold_answer


@pytest.fixture(scope="module")
def math():
    return get_verifier("math")


@pytest.mark.parametrize(
    "text, span, method",
    [
        ("so x = 3 and \\boxed{\\frac{1}{2}} is it", "\\frac{1}{2}", "boxed"),
        ("\\boxed{1} then \\boxed{\\sqrt{x^{2}}}", "\\sqrt{x^{2}}", "boxed"),  # nested braces, last one
        ("\\fbox{7}", "7", "boxed"),
        ("<think>2+2</think><answer> 4 </answer>", "4", "answer_tag"),
        ("She pays 3*6 = <<3*6=18>>18 dollars.\n#### 18", "18", "gsm8k"),
        ("Therefore, the final answer is: 12 apples", "12 apples", "answer_is"),
        ("ANSWER = -3.5", "-3.5", "answer_is"),
        ("first 3, then 4, finally 1,250.", "1,250", "last_number"),
        ("no numbers here", None, "none"),
        ("```python\nprint('\\\\boxed{42}')\n```\nI ran it.", None, "none"),  # code is not prose
        ("`\\boxed{9}` and 8", "8", "last_number"),
    ],
)
def test_extraction_table(text, span, method):
    assert extract_answer(text) == (span, method)


@pytest.mark.parametrize(
    "gold, pred, equal",
    [
        ("1000", "1,000", True),
        ("18", "$18.00", True),
        ("18", "18 dollars", True),
        ("50", "50\\%", True),
        ("0.5", "\\frac{1}{2}", True),
        ("\\frac{1}{2}", "1/2", True),
        ("\\frac{1}{3}", "0.33", False),
        ("3", "3\\text{ cm}", True),
        ("\\sqrt{2}", "2^{1/2}", True),
        ("x^2+2x+1", "(x+1)^2", True),
        ("\\{1,2\\}", "\\{2,1\\}", True),
        ("42", "41", False),
        ("-4", "4", False),
    ],
)
def test_equivalence_table(gold, pred, equal):
    assert answers_equal(gold, pred)[0] is equal


def test_gold_answer_formats():
    assert gold_answer("work...\n#### 1,200") == "1,200"
    assert gold_answer("so \\boxed{\\frac{3}{4}}.") == "\\frac{3}{4}"
    assert gold_answer(" 7 ") == "7"


def test_result_records_name_version_and_reason(math):
    res = math("The answer is 42 because 6 * 7 = 42.", {"answer": "#### 42"})
    assert isinstance(res, VerificationResult)
    assert (res.score, res.passed, res.verifier, res.version) == (1.0, True, "math", math.version)
    assert "correct answer via answer_is" in res.reason and res.details["extracted"].startswith("42")
    wrong = math("The answer is 41.", {"answer": "#### 42"})
    assert (wrong.score, wrong.passed) == (0.0, False) and "wrong answer" in wrong.reason
    assert wrong.to_dict()["version"] == math.version


@pytest.mark.parametrize("ref", [{}, {"answer": ""}, {"answer": None}, {"question": "q"}])
def test_malformed_reference_is_a_data_error(math, ref):
    with pytest.raises(InvalidReference):
        math("\\boxed{1}", ref)
    with pytest.raises(InvalidReference, match="row 1"):
        verify_batch(math, ["1", "2"], [{"answer": "1"}, ref])


def test_score_bounds_enforced():
    with pytest.raises(ValueError, match="outside"):
        VerificationResult(1.5, True, "x", "math", "1")


def _gsm8k(shared_data, split="test"):
    with open(shared_data / "gsm8k" / f"{split}.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_gsm8k_real_rows(shared_data, math):
    """Every test row: the reference solution, the bare answer and re-formatted answers pass;
    the same solution with a wrong final answer fails; a bare answer that happens to occur in
    the question is not mistaken for an echo."""
    rows = _gsm8k(shared_data)
    assert len(rows) == 1319
    failures = []
    for r in rows:
        gold = r["answer"].split("####")[-1].strip()
        ref = {"answer": r["answer"], "question": r["question"]}
        wrong = str(int(gold.replace(",", "")) + 1)
        body = r["answer"].split("####")[0]
        cases = [
            (r["answer"], True),
            (gold, True),
            (f"{body}The answer is {gold}.", True),
            (f"{body}So the total is \\boxed{{{gold}}}.", True),
            (f"<think>{body}</think><answer>{gold}</answer>", True),
            (f"{body}#### {wrong}", False),
            (f"{body}The answer is {wrong}.", False),
        ]
        for completion, expected in cases:
            res = math(completion, ref)
            if res.passed is not expected:
                failures.append((r["question"][:60], completion[-40:], res.reason))
    assert not failures, failures[:5]


def test_gsm8k_train_sample_agrees_with_gold(shared_data):
    rows = random.Random(0).sample(_gsm8k(shared_data, "train"), 300)
    results = verify_batch("math", [r["answer"] for r in rows], [{"answer": r["answer"]} for r in rows])
    assert all(r.passed for r in results)


# reasoning-gym: its own scorer is `score_answer(extract_answer(completion), entry)`; "passed"
# there means a reward of exactly 1.0. Tasks with a single numeric (or fraction) answer.
RG_TASKS = ["basic_arithmetic", "chain_sum", "gsm_symbolic", "products", "leg_counting", "gcd", "lcm"]


def _shifted(answer: str, by: int) -> str:
    return str(Decimal(answer) + by)


@pytest.mark.parametrize("task", RG_TASKS)
def test_reasoning_gym_agreement(task, math):
    import reasoning_gym
    from reasoning_gym.utils import extract_answer as rg_extract

    ds = reasoning_gym.create_dataset(task, size=20, seed=7)
    disagreements, n = [], 0
    for entry in ds:
        gold = str(entry["answer"])
        ref = {"answer": gold, "question": entry["question"]}
        for completion in (
            f"Let me work it out.\n<answer>{gold}</answer>",
            f"<answer>{_shifted(gold, 1)}</answer>",
            f"Step by step... so <answer>{_shifted(gold, -2)}</answer>",
        ):
            theirs = ds.score_answer(rg_extract(completion), entry) == 1.0
            ours = math(completion, ref).passed
            n += 1
            if theirs != ours:
                disagreements.append((entry["question"][:60], completion, theirs, ours))
    assert n == 60 and not disagreements, disagreements[:5]


def test_reasoning_gym_fraction_agreement(math):
    """fraction_simplification: LaTeX gold answers ($\\dfrac{a}{b}$, $a/b$); its scorer wants lowest
    terms, so the candidates are the gold, the same fraction written plainly, and wrong ones."""
    import reasoning_gym

    ds = reasoning_gym.create_dataset("fraction_simplification", size=20, seed=3)
    for entry in ds:
        a, b = entry["metadata"]["simplified_numerator"], entry["metadata"]["simplified_denominator"]
        for answer in (entry["answer"], f"{a}/{b}", f"{a + 1}/{b}", f"$\\frac{{{a}}}{{{b + 1}}}$"):
            theirs = ds.score_answer(answer, entry) == 1.0
            ours = math(f"<answer>{answer}</answer>", {"answer": entry["answer"]}).passed
            assert ours is theirs, (entry["answer"], answer, theirs)
