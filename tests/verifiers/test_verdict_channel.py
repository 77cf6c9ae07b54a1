"""run_tests: the trusted test process calls the sandboxed candidate through the plain-data channel.

What HumanEval-style tests do with the candidate must behave as if the candidate were in-process:
floats, tuples vs lists, sets, None, nested data, many calls, exceptions the test expects, helpers
from the prompt, the entry point called by name. What the candidate does in its own process must
not: in-place mutation of arguments, returning objects, crashing between calls.
"""

import pytest

from nebula_utils.verifiers.sandbox import SandboxLimits, run_tests

LIMITS = SandboxLimits(wall_seconds=5.0, cpu_seconds=3, memory_bytes=512 << 20)


def verdict(program: str, test: str, prelude: str = "", entry: str = "f"):
    return run_tests(program, entry, test, prelude=prelude, limits=LIMITS)


@pytest.mark.parametrize(
    "body, test",
    [
        ("return 0.1 + 0.2", "assert candidate() == 0.1 + 0.2 and abs(candidate() - 0.3) < 1e-9"),
        ("return float('nan')", "import math\n    assert math.isnan(candidate())"),
        ("return (1, [2, 3])", "assert candidate() == (1, [2, 3]) and candidate() != [1, [2, 3]]"),
        ("return {3, 1}", "assert candidate() == {1, 3} and isinstance(candidate(), set)"),
        ("return None", "assert candidate() is None"),
        ("return x > 2", "assert candidate(3) is True and candidate(1) is False"),
        ("return {1: [x], 'k': (None,)}", "assert candidate(7) == {1: [7], 'k': (None,)}"),
        ("return sorted(x)", "assert candidate((3, 1, 2)) == [1, 2, 3]"),
        ("return x * 2", "for i in range(300):\n        assert candidate(i) == 2 * i"),
        ("return kw", "def f2(**kw): pass\n    assert candidate(1, kw={'a': (1,)}) == {'a': (1,)}"),
        ("return map(str, x)", "assert tuple(candidate([1, 2])) == ('1', '2') and candidate([1]) != ['1']"),
        (
            "raise ValueError('bad ' + str(x))",
            "try:\n        candidate(1)\n    except ValueError as e:\n        assert str(e) == 'bad 1'\n    else:\n        assert False",
        ),
    ],
)
def test_values_behave_as_in_process(body, test):
    signature = "def f(x=None, kw=None):\n    " if "kw" in body else "def f(x=None):\n    "
    res = verdict(f"{signature}{body}\n", f"def check(candidate):\n    {test}\n")
    assert res.ok, res


def test_prompt_helpers_and_the_entry_point_by_name_are_trusted_copies():
    prelude = "def helper(x):\n    return x + 1\n\ndef f(x):\n    pass\n"
    # the candidate redefines the helper and `check`; the tests still use the prompt's
    program = "def helper(x):\n    return 0\n\ndef f(x):\n    return x + 1\n\ndef check(candidate):\n    pass\n"
    test = "def check(candidate):\n    assert candidate(1) == helper(1)\n    assert f(2) == helper(2)\n"
    res = verdict(program, test, prelude)
    assert res.ok and res.calls == 2, res
    wrong = verdict("def helper(x):\n    return 0\n\ndef f(x):\n    return helper(x)\n", test, prelude)
    assert not wrong.ok and "AssertionError" in wrong.reason, wrong


def test_in_place_mutation_is_not_seen_by_the_test():
    res = verdict(
        "def f(x):\n    x.append(9)\n", "def check(candidate):\n    a = [1]\n    candidate(a)\n    assert a == [1]\n"
    )
    assert res.ok, res


def test_swallowed_sandbox_death_still_fails():
    """A test that catches every Exception cannot turn a dead sandbox into a pass."""
    program = "import os\ndef f(x):\n    os._exit(0)\n"
    test = "def check(candidate):\n    try:\n        candidate(1)\n    except Exception:\n        pass\n"
    res = verdict(program, test)
    assert not res.ok and res.status == "early_exit", res


def test_reasons_name_the_failing_line_and_the_candidate_line():
    res = verdict("def f(x):\n    return [][x]\n", "def check(candidate):\n    assert candidate(0) == 1\n")
    assert res.status == "error" and "IndexError" in res.reason and "test line 2" in res.reason, res
    assert "raised by the candidate at line 2: return [][x]" in res.reason
    res = verdict("def f(:\n", "def check(candidate):\n    assert candidate(0) == 1\n")
    assert res.status == "error" and "SyntaxError" in res.reason, res
    res = verdict("def g(x):\n    return x\n", "def check(candidate):\n    assert candidate(0) == 0\n")
    assert res.status == "error" and "defines no function 'f'" in res.reason, res


def test_broken_references_are_setup_errors_not_candidate_failures():
    res = verdict("def f(x):\n    return x\n", "def chek(candidate):\n    pass\n")
    assert res.status == "setup_error" and "defines no check" in res.reason, res
    res = verdict(
        "def f(x):\n    return x\n", "def check(candidate):\n    pass\n", prelude="import not_a_module_xyz\n"
    )
    assert res.status == "setup_error" and "ModuleNotFoundError" in res.reason, res


def test_reply_over_the_channel_cap_fails():
    limits = SandboxLimits(wall_seconds=5.0, cpu_seconds=3, channel_bytes=1000)
    res = run_tests(
        "def f():\n    return 'x' * 5000\n", "f", "def check(candidate):\n    candidate()\n", limits=limits
    )
    assert not res.ok and "exceeds the channel cap" in res.reason, res
