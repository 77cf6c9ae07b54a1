"""Distillation candidate groups and the three synthesis schools (on tiny-random)."""

from __future__ import annotations

import json

import pytest

from nebula_utils.data import synthesis as S
from nebula_utils.data.distillation import build_groups, distill, group_dataset, rank
from nebula_utils.data.schema import message_problems
from nebula_utils.inference.generation import Completion, SamplingParams, make_generator
from nebula_utils.verifiers import get_verifier

MATH_VERSION = get_verifier("math").version  # scores are keyed verifier:<name>@<version>

MATH = {
    "id": "m1",
    "source": "t",
    "license": "MIT",
    "task": "math_reasoning",
    "verifier": "math",
    "reference": json.dumps({"answer": "42"}),
    "prompt": [{"role": "user", "content": "What is 40 + 2?"}],
    "original": "40 + 2 = 42. The final answer is $\\boxed{42}$.",
    "parents": ["p"],
}
CHAT = {
    "id": "c1",
    "source": "t",
    "license": "MIT",
    "task": "general_chat",
    "verifier": None,
    "reference": None,
    "prompt": [{"role": "user", "content": "Say hi."}],
    "original": None,
    "parents": [],
}


@pytest.fixture(scope="module")
def tiny_gen(tiny_model_path):
    return make_generator("tiny-random", backend="transformers", device="cpu")


def test_groups_keep_every_candidate_generator_sampling_params_and_scores():
    params = SamplingParams(n=2, max_new_tokens=32, temperature=0.7, seed=3, logprobs=True)
    comps = [
        [Completion("so \\boxed{41}", "stop", 6, -1.5), Completion("so \\boxed{42}", "stop", 6, -2.0)],
        [Completion("Hi there!", "stop", 3, -0.5), Completion("Hello", "length", 32, -0.9)],
    ]
    rows = build_groups([MATH, CHAT], comps, params, "teacher-x", include_original=True)
    ds = group_dataset(rows)  # schema-valid
    math, chat = ds[0], ds[1]
    assert [c["generator"] for c in math["candidates"]] == ["teacher-x", "teacher-x", "dataset"]
    assert json.loads(math["candidates"][0]["sampling_params"]) == params.to_dict()
    scores = [json.loads(c["scores"]) for c in math["candidates"]]
    assert [s.get(f"verifier:math@{MATH_VERSION}") for s in scores] == [0.0, 1.0, 1.0]
    assert scores[0]["teacher_mean_logprob"] == -1.5
    # verifier first (42 beats 41), then log-prob between the two correct ones (teacher -2.0 vs dataset none)
    assert (math["chosen"], math["rejected"]) == (1, 0) and math["preference_reason"].startswith(
        "verifier score 1 vs 0"
    )
    assert [m["finish_reason"] for m in json.loads(chat["candidate_meta"])] == ["stop", "length"]
    assert (chat["chosen"], chat["rejected"]) == (0, 1) and "log-prob" in chat["preference_reason"]
    assert len(chat["candidates"]) == 2  # an rl-style prompt has no original answer
    assert json.loads(math["reference"]) == {"answer": "42"} and math["parents"] == ["p"]


def test_rank_marks_ties():
    assert rank([{}, {}])[2].startswith("tie:")
    assert rank([{"verifier:math@1": 0.0}, {"verifier:math@1": 1.0}])[:2] == (1, 0)


def test_distill_on_tiny_random_gives_k_candidates_per_prompt(tiny_gen):
    params = SamplingParams(n=2, max_new_tokens=6, temperature=1.0, logprobs=True)
    ds = group_dataset(distill(tiny_gen, [MATH, CHAT], params, include_original=False))
    assert [len(c) for c in ds["candidates"]] == [2, 2]
    assert all(
        json.loads(c["sampling_params"])["n"] == 2 and c["generator"] == "tiny-random"
        for cands in ds["candidates"]
        for c in cands
    )


@pytest.mark.parametrize("school", ["self_instruct", "evol_instruct", "magpie"])
def test_each_school_produces_valid_prompt_rows_on_tiny_random(tiny_gen, school):
    params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=0)
    # tiny-random never closes its turn within 12 tokens, so truncation is allowed here
    if school == "self_instruct":
        out = S.self_instruct(
            tiny_gen,
            ["Write a poem about rain.", "Explain gravity.", "List three fruits."],
            3,
            params,
            allow_truncated=True,
            min_words=1,
        )
    elif school == "evol_instruct":
        out = S.evol_instruct(tiny_gen, [MATH, CHAT], 3, params, model_check=False, allow_truncated=True, min_words=1)
    else:
        out = S.magpie(tiny_gen, 3, params, allow_truncated=True, min_words=1)
    step = out.step
    assert step["count_in"] == 3 == step["count_out"] + sum(step["drop_reasons"].values())
    assert len(out.records) == step["count_out"] >= 1 and len(out.attempts) == 3
    for rec in out.records:
        assert not message_problems(rec["prompt"], final_role="user") and rec["source"] == f"synthesis/{school}"
    groups = distill(tiny_gen, out.records, SamplingParams(n=2, max_new_tokens=4, temperature=1.0))
    assert len(group_dataset(groups)) == len(out.records)
    if school == "evol_instruct":
        assert all(r["parents"] and r["parents"][-1] in ("m1", "c1") for r in out.records)


def test_synthesis_gates_reject_with_reasons(tiny_gen):
    done, cut = Completion("x", "stop", 3), Completion("x", "length", 3)
    cases = [
        ("Describe the sea.", cut, "truncated"),
        ("", done, "empty"),
        ("the of and", done, "no_content"),
        ("Hi", done, "too_short"),
        ("Describe the sea in detail.", done, None),
    ]
    for text, comp, expected in cases:
        assert S.gate_instruction(text, comp, min_words=3, max_words=50, allow_truncated=False) == expected, text
    seed = "Explain how a bicycle's gears work."
    evol = [
        ("Rewritten Prompt: explain gears", "template_leak"),
        (seed, "not_evolved"),
        ("Explain how a bicycle's gears work, in exactly three steps, for a child.", None),
    ]
    for text, expected in evol:
        assert S.evol_gate(seed, text, done, min_words=3, max_words=80, allow_truncated=False) == expected, text
    assert S.clean_instruction("Task 4: Write a haiku.\n\nMore text") == "Write a haiku."
    assert S.max_rouge("Write a poem about the rain", ["Write a poem about rain"]) > S.ROUGE_MAX
    assert S.UNSUPPORTED.search("Describe this image")
    assert S.pre_query_template(tiny_gen.tokenizer) == "<|im_start|>user\n"
    with pytest.raises(ValueError, match="temperature"):
        S.magpie(tiny_gen, 2, SamplingParams(max_new_tokens=2))


def test_evol_model_check_drops_what_the_model_does_not_confirm(tiny_gen):
    params = SamplingParams(max_new_tokens=8, temperature=1.0)
    out = S.evol_instruct(tiny_gen, [CHAT], 2, params, model_check=True, allow_truncated=True, min_words=1)
    # a random model does not answer "yes": every evolution that passed the heuristics fails the check
    assert out.records == [] and all(
        r.startswith("model_check:") or r in ("not_evolved", "no_content", "empty") for r in out.step["drop_reasons"]
    )


def test_prompt_only_sft_rows_distill_without_a_dataset_candidate():
    """10_data_sft_mix's IF rows end with the user turn: the whole chat is the prompt, there is no
    "dataset" answer to add, and the teacher's answers are scored by the ifeval verifier."""
    from nebula_utils.data.distillation import prompt_records
    from nebula_utils.data.sources import ifeval_constraint_prompts

    ds = ifeval_constraint_prompts(2, seed=2000, max_instructions=1, kind="sft").dataset
    records = prompt_records(ds, "sft")
    assert [r["prompt"] for r in records] == [list(m) for m in ds["messages"]]
    assert all(r["original"] is None and r["verifier"] == "ifeval" for r in records)
    comps = [[Completion("A reply.", "stop", 3, -1.0)] * 2 for _ in records]
    groups = build_groups(records, comps, SamplingParams(n=2), "teacher", include_original=True)
    assert all(len(g["candidates"]) == 2 and {c["generator"] for c in g["candidates"]} == {"teacher"} for g in groups)
    assert all(
        any(k.startswith("verifier:ifeval") for k in json.loads(c["scores"])) for g in groups for c in g["candidates"]
    )
