"""Offline sources: reasoning-gym, IFEval registry prompts, HumanEval, ../shared/data loaders."""

from __future__ import annotations

import json
import random
import re

import pytest

from nebula_utils.data import sources as S
from nebula_utils.data.schema import FEATURES
from tests.conftest import SHARED

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} absent (optional real data)")
BOXED = re.compile(r"The final answer is \$\\boxed\{(.+)\}\$\.$")


def boxed_answer(text: str) -> str:
    match = BOXED.search(text)
    assert match, f"no final answer line in {text[-120:]!r}"
    return match.group(1)


@pytest.mark.parametrize("task", sorted(S.WORKED_ANSWERS))
def test_worked_answers_end_with_a_final_answer_the_task_scorer_and_math_verify_accept(task):
    import reasoning_gym
    from math_verify import parse, verify

    ds, source, step = S.reasoning_gym_sft(task, 25, seed=7)
    scorer = reasoning_gym.create_dataset(task, size=25, seed=7, **S.WORKED_CONFIG.get(task, {}))
    assert ds.features == FEATURES["sft"] and source["license"] == "Apache-2.0" and source["revision"]
    assert step["count_in"] == 25 and step["count_out"] == len(ds) >= 24
    for row in ds:
        entry = scorer[int(row["id"].rsplit(":", 1)[1])]
        final = boxed_answer(row["messages"][-1]["content"])
        assert final == entry["answer"] == json.loads(row["reference"])["answer"]
        assert scorer.score_answer(final, entry) == 1.0
        assert verify(parse(f"${final}$"), parse(row["messages"][-1]["content"]))
        assert len(row["messages"][-1]["content"]) > len(row["messages"][-1]["content"].splitlines()[-1])


def test_items_failing_their_own_scorer_are_dropped_and_counted():
    # gsm_symbolic, seed 3, item 196 has the answer "-1" ("-1 years old"), which its scorer rejects.
    ds, _, step = S.reasoning_gym_sft("gsm_symbolic", 200, seed=3)
    assert step["drop_reasons"] == {"fails_own_scorer": 1} and len(ds) == 199
    assert "reasoning_gym/gsm_symbolic:3:196" not in ds["id"]


def test_reasoning_gym_rl_rows_are_seeded():
    ds, _, step = S.reasoning_gym_rl("simple_equations", 8, seed=1)
    same, _, _ = S.reasoning_gym_rl("simple_equations", 8, seed=1)
    other, _, _ = S.reasoning_gym_rl("simple_equations", 8, seed=2)
    assert ds.features == FEATURES["rl"] and step["count_out"] == 8
    assert ds["prompt"] == same["prompt"] != other["prompt"]
    assert all(r["messages"] == [{"role": "user", "content": r["prompt"]}] and r["verifier"] == "math" for r in ds)
    with pytest.raises(ValueError, match="no worked-answer renderer"):
        S.reasoning_gym_sft("simple_equations", 2, seed=0)


def test_ifeval_prompts_carry_the_kwargs_that_rebuild_their_instructions():
    from lm_eval.tasks.ifeval import instructions_registry as registry

    state = random.getstate()
    ds, _, _ = S.ifeval_constraint_prompts(60, seed=5, max_instructions=3)
    assert random.getstate() == state  # the caller's random stream is untouched
    assert ds["prompt"] == S.ifeval_constraint_prompts(60, seed=5, max_instructions=3).dataset["prompt"]
    seen = set()
    for row in ds:
        ref = json.loads(row["reference"])
        assert ref["prompt"] == row["prompt"] and row["verifier"] == "ifeval" and row["task"] == "complex_if"
        assert 1 <= len(ref["instruction_id_list"]) <= 3 and len(ref["kwargs"]) == len(ref["instruction_id_list"])
        for iid, kwargs in zip(ref["instruction_id_list"], ref["kwargs"]):
            seen.add(iid)
            assert iid not in S.IFEVAL_EXCLUDED
            checker = registry.INSTRUCTION_DICT[iid](iid)
            # As lm-eval's IFEval scoring does: falsy kwargs dropped, then build and check.
            description = checker.build_description(**{k: v for k, v in kwargs.items() if v})
            assert description in row["prompt"]
            try:
                assert checker.check_following("A plain short answer.") in (True, False)
            except LookupError:  # these two checkers need NLTK's punkt data, absent offline
                assert iid in {"length_constraints:number_sentences", "change_case:capital_word_frequency"}
    assert len(seen) >= 15  # the composition reaches most of the registry


def test_humaneval_split_is_fixed_disjoint_and_complete():
    train, held_out = S.humaneval_split_ids("train"), S.humaneval_split_ids("eval")
    assert len(train) + len(held_out) == 164 and not set(train) & set(held_out)
    assert 60 <= len(held_out) <= 104
    sft, _, _ = S.humaneval_sft(5)
    rl, _, _ = S.humaneval_rl(5, start=5)
    assert [p[0] for p in sft["parents"]] == train[:5] and [p[0] for p in rl["parents"]] == train[5:10]
    assert json.loads(rl[0]["reference"]).keys() == {"prompt", "test", "entry_point"}


def test_humaneval_sft_answers_pass_the_humaneval_tests():
    ds, _, _ = S.humaneval_sft(4)
    for row in ds:
        ref = json.loads(row["reference"])
        code = row["messages"][-1]["content"].removeprefix("```python\n").removesuffix("```")
        namespace: dict = {}
        exec(code + "\n" + ref["test"], namespace)  # canonical HumanEval code and tests
        namespace["check"](namespace[ref["entry_point"]])


@needs_shared
@pytest.mark.shared
def test_shared_gsm8k_worked_answers_keep_the_gsm8k_final_answer():
    from math_verify import parse, verify

    ds, source, _ = S.shared_gsm8k(SHARED, "train", n=20)
    lines = (SHARED / "gsm8k" / "train.jsonl").read_text().splitlines()[:20]
    for row, line in zip(ds, lines):
        gold = json.loads(line)["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        assert boxed_answer(row["messages"][-1]["content"]) == gold
        assert "<<" not in row["messages"][-1]["content"]
        assert verify(parse(f"${gold}$"), parse(row["messages"][-1]["content"]))
    rl, _, _ = S.shared_gsm8k(SHARED, "train", n=5, kind="rl", start=20)
    assert rl[0]["id"] == "gsm8k/train:21" and source["license"] == "MIT"
    assert source["revision"].startswith("sha256:") and source["path"].endswith("gsm8k/train.jsonl")


@needs_shared
@pytest.mark.shared
def test_shared_ifeval_mmlu_and_hh_rlhf_loaders():
    ifeval, _, _ = S.shared_ifeval(SHARED)
    assert len(ifeval) == 541 and json.loads(ifeval[0]["reference"])["instruction_id_list"]
    mmlu, _, _ = S.shared_mmlu(SHARED, "dev")
    assert len(mmlu) == 57 * 5 and re.match(r"The answer is [ABCD]\. ", mmlu[0]["messages"][1]["content"])
    hh, _, step = S.shared_hh_rlhf(SHARED)
    assert step["count_in"] == 2312 == len(hh) + sum(step["drop_reasons"].values())
    assert all(r["prompt"][-1]["role"] == "user" for r in hh.select(range(50)))
