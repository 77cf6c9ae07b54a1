"""data.patch: category pass rates with CIs, weak categories, and the failed prompts they patch."""

from __future__ import annotations

import pytest

from nebula_utils.data import patch as P


def _prompt(i: int, task: str, rate: float, verified: bool = True) -> dict:
    return {
        "id": f"{task}-{i}",
        "task": task,
        "pass_rate": rate,
        "passes": round(rate * 4),
        "samples": 4,
        "truncated": 0,
        "answer_verified": verified,
    }


def _scored() -> list[dict]:
    # code: fails most (0, 0, .25, 1); math: mostly passes (.75, 1, 1, 1); IF: middling (.5, .5, 0, 1)
    rates = {
        "code": [0.0, 0.0, 0.25, 1.0],
        "math_reasoning": [0.75, 1.0, 1.0, 1.0],
        "complex_if": [0.5, 0.5, 0.0, 1.0],
    }
    out = [_prompt(i, t, r) for t, rs in rates.items() for i, r in enumerate(rs)]
    out[2]["answer_verified"] = False  # code-2: its own answer fails its verifier -> never a patch row
    return out


def test_rates_are_sorted_worst_first_with_n_and_a_ci():
    rates = P.category_rates(_scored(), seed=0)
    assert [r["task"] for r in rates] == ["code", "complex_if", "math_reasoning"]
    code = rates[0]
    assert code["n"] == 4 and code["samples"] == 16 and code["pass_rate"] == pytest.approx(0.3125)
    low, high = code["ci95"]
    assert 0.0 <= low < code["pass_rate"] < high <= 1.0
    assert rates[2]["failed_prompts"] == 1 and code["ci_method"] == "bootstrap over prompts"


def test_a_category_every_prompt_fails_gets_a_wilson_interval_not_a_point():
    rates = P.category_rates([_prompt(i, "code", 0.0) for i in range(6)], seed=0)
    assert rates[0]["pass_rate"] == 0.0 and rates[0]["ci_method"].startswith("wilson")
    assert rates[0]["ci95"][0] == 0.0 and rates[0]["ci95"][1] == pytest.approx(0.390, abs=0.001)


def test_weak_categories_and_the_patch_targets_balance():
    scored = _scored()
    rates = P.category_rates(scored, seed=0)
    assert P.weak_categories(rates, 0, 0.95) == ["code", "complex_if", "math_reasoning"]
    weak = P.weak_categories(rates, 2, 0.9)
    assert weak == ["code", "complex_if"] and P.weak_categories(rates, 0, 0.2) == []
    targets, drops = P.select_patch(scored, rates, weak, fail_at_most=0.5)
    # worst prompt first; code-2 (0.25) is failed but unverified; IF 0.5 is <= 0.5 so patched
    assert [t["id"] for t in targets] == ["code-0", "code-1", "complex_if-2", "complex_if-0", "complex_if-1"]
    assert drops == {"category_not_weak": 4, "model_passes": 2, "answer_not_verified": 1}
    assert len(targets) + sum(drops.values()) == len(scored)
    assert (
        targets[0]["weakness"].startswith("code: model passes 0.31 [")
        and "n=4 prompts; this prompt 0/4" in (targets[0]["weakness"])
    )


def test_prompt_rows_split_off_the_answer_and_skip_unverifiable_rows():
    rows = [
        {
            "id": "a",
            "task": "math_reasoning",
            "verifier": "math",
            "reference": '{"answer": "2"}',
            "messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "$\\boxed{2}$"}],
        },
        {
            "id": "b",
            "task": "general_chat",
            "verifier": None,
            "reference": None,
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        },
    ]
    out, skipped = P.prompt_rows(rows)
    assert skipped == {"no_verifier": 1} and len(out) == 1
    assert out[0]["messages"] == [{"role": "user", "content": "1+1?"}] and out[0]["prompt"] == "1+1?"
    assert P.answer_verified(out) == [True]
    assert P.answer_verified([out[0] | {"answer": "$\\boxed{3}$"}]) == [False]


def test_per_category_takes_the_same_seeded_n_of_each_task():
    rows = [{"id": f"m{i}", "task": "math_reasoning"} for i in range(10)] + [{"id": "c0", "task": "code"}]
    chosen, drops = P.per_category(rows, 3, seed=0)
    assert [r["task"] for r in chosen].count("math_reasoning") == 3 and chosen[0]["id"] == "c0"
    assert drops == {"over_per_category": 7}
    assert P.per_category(rows, 3, seed=0)[0] == chosen and P.per_category(rows, 3, seed=1)[0] != chosen
    assert len(P.per_category(rows, 0)[0]) == 11
