"""Preference pairs from candidate groups: signal + margin, useful-only chosen, length matching, long-but-useless."""

from __future__ import annotations

import json

import pytest

from nebula_utils.data.preference import PairRules, build_pairs, dpo_rows, kto_rows, length_bias, pick_pair, words


def cand(text: str, verifier: float | None = None, **scores: float) -> dict:
    s = dict(scores)
    if verifier is not None:
        s["verifier:math@2"] = verifier
    return {"content": text, "generator": "m", "sampling_params": "{}", "scores": json.dumps(s), "label": None}


def group(cands: list[dict], meta: list[dict] | None = None, gid: str = "g") -> dict:
    return {
        "id": gid,
        "source": "test",
        "license": "MIT",
        "task": "math_reasoning",
        "prompt": [{"role": "user", "content": "What is 2 + 2?"}],
        "candidates": cands,
        "chosen": None,
        "rejected": None,
        "preference_reason": "",
        "parents": [],
        "verifier": "math",
        "reference": json.dumps({"answer": "4"}),
        "candidate_meta": json.dumps(meta or []),
    }


RIGHT = "Two plus two is four, so the answer is 4."  # 10 words
WRONG = "Two plus two is five, so the answer is 5."  # 10 words


def test_verifier_signal_picks_passing_over_failing_with_reason():
    chosen, rejected, reason = pick_pair(group([cand(WRONG, 0.0), cand(RIGHT, 1.0)]), PairRules())
    assert (chosen, rejected) == (1, 0)
    assert reason.startswith("verifier 1 vs 0 (margin >= 0.5); words 10 vs 10 (ratio 1.00 <= 1.5)")


@pytest.mark.parametrize(
    "cands,meta,code",
    [
        ([cand(RIGHT, 1.0), cand(RIGHT + " Indeed.", 0.8)], None, "margin_below_min"),
        ([cand(WRONG, 0.0), cand(WRONG, 0.0)], None, "no_useful_candidate"),
        ([cand(RIGHT), cand(WRONG)], None, "no_signal"),
        # the only passing answer was cut at max_new_tokens: it may not be chosen
        (
            [cand(RIGHT, 1.0), cand(WRONG, 0.0)],
            [{"finish_reason": "length"}, {"finish_reason": "stop"}],
            "no_useful_candidate",
        ),
        # the chosen answer is much longer than the rejected one: length would explain the preference
        ([cand(RIGHT + " " + "It is well known. " * 10, 1.0), cand("5", 0.0)], None, "length_unmatched"),
    ],
)
def test_groups_without_a_valid_pair_are_dropped_with_a_reason(cands, meta, code):
    assert pick_pair(group(cands, meta), PairRules()) == (None, None, code)


def test_long_but_useless_rejected_is_kept_on_purpose_and_can_be_switched_off():
    long_useless = "Addition is a fundamental operation that many people study for years. " * 4
    g = group([cand("4", 1.0), cand(long_useless, 0.0)])
    chosen, rejected, reason = pick_pair(g, PairRules())
    assert (chosen, rejected) == (0, 1) and "rejected is long but useless (fails_verifier)" in reason
    assert pick_pair(g, PairRules(keep_long_useless=False)) == (None, None, "length_unmatched")
    assert pick_pair(g, PairRules(max_length_ratio=0))[:2] == (0, 1)  # guard off: any length


def test_judge_signal_cannot_choose_a_long_answer_the_verifier_fails():
    """A judge that rates verbosity highly: the long wrong answer gets 0.9, the short right one 0.3."""
    long_wrong = "Let me explain carefully and at length why the answer is 5. " * 3
    g = group([cand(long_wrong, 0.0, **{"filter:judge": 0.9}), cand(RIGHT, 1.0, **{"filter:judge": 0.3})])
    assert pick_pair(g, PairRules(signal="judge"))[0] is None  # the only useful one has the lower judge score
    g = group([cand(long_wrong, 0.0, **{"filter:judge": 0.2}), cand(RIGHT, 1.0, **{"filter:judge": 0.9})])
    chosen, rejected, reason = pick_pair(g, PairRules(signal="judge"))
    assert (chosen, rejected) == (1, 0) and reason.startswith("judge 0.9 vs 0.2")


def test_ties_choose_the_shorter_useful_answer_and_the_closest_length_rejected():
    g = group([cand(RIGHT + " Done.", 1.0), cand(RIGHT, 1.0), cand("Five.", 0.0), cand(WRONG, 0.0)])
    chosen, rejected, _ = pick_pair(g, PairRules(max_length_ratio=0))
    assert chosen == 1 and rejected == 3  # same score: shorter chosen; same score: closest length rejected


def test_build_pairs_counts_balance_and_length_bias_is_measured():
    groups = [
        group([cand(WRONG, 0.0), cand(RIGHT, 1.0)], gid="a"),
        group([cand(RIGHT, 1.0), cand(RIGHT, 1.0)], gid="b"),
        group([cand("4", 1.0), cand("Well, " * 30 + "5", 0.0)], gid="c"),
        group(
            [
                cand("x") | {"label": True},
                cand("y") | {"label": False},
            ],
            gid="kto",
        ),
    ]
    pairs, drops = build_pairs(groups, PairRules())
    assert [p["id"] for p in pairs] == ["a", "c"]
    assert drops == {"margin_below_min": 1, "unpaired_group": 1}
    assert len(pairs) + sum(drops.values()) == len(groups)
    bias = length_bias(pairs)
    assert bias["chosen_longer"] == [0.0, 0.0]  # a: equal length; c: the rejected one is longer
    assert bias["log_length_ratio"][0] == pytest.approx(0.0) and bias["log_length_ratio"][1] < 0


def test_trainer_formats():
    pairs, _ = build_pairs([group([cand(WRONG, 0.0), cand(RIGHT, 1.0)])], PairRules())
    (row,) = dpo_rows(pairs)
    assert row["prompt"] == [{"role": "user", "content": "What is 2 + 2?"}]
    assert row["chosen"] == [{"role": "assistant", "content": RIGHT}]
    assert row["rejected"] == [{"role": "assistant", "content": WRONG}]
    labelled = group([cand("a") | {"label": True}, cand("b") | {"label": False}, cand("c") | {"label": False}])
    unpaired = kto_rows(pairs + [labelled])
    assert [(r["completion"][0]["content"], r["label"]) for r in unpaired] == [
        (RIGHT, True),
        (WRONG, False),
        ("a", True),
        ("b", False),
        ("c", False),
    ]


def test_words_counts_word_runs():
    assert words("") == 1 and words("Hello, world! 42") == 3


def test_pairs_from_a_real_filter_output_survive_the_schema(tmp_path, tiny_model_path):
    """11_distill groups from tiny-random (never a passing answer) + the dataset's own answer (passes):
    the dataset answer is chosen, the pair validates as a preference version."""
    from nebula_utils.data.distillation import group_dataset
    from nebula_utils.data.versions import load_version
    from tests.factories import small_distill_version, small_mix

    mix = small_mix(tmp_path / "mix")
    groups = list(load_version(small_distill_version(tmp_path / "distill", mix / "sft")))
    pairs, drops = build_pairs(groups, PairRules(max_length_ratio=0))
    assert len(pairs) + sum(drops.values()) == len(groups)
    assert pairs, drops
    for p in pairs:
        assert p["candidates"][p["chosen"]]["generator"] == "dataset"
        assert p["preference_reason"].startswith("verifier 1 vs 0")
    ds = group_dataset(pairs)
    assert len(ds) == len(pairs) and ds[0]["chosen"] == pairs[0]["chosen"]
