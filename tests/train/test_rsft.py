"""Rejection-sampling fine-tuning: selection, effective sample rates, and the real sample -> verify ->
fine-tune path on the tiny random model."""

from __future__ import annotations

import json

import pytest
import torch

from nebula_utils.train.rsft import rate_table, sample_rates, select_best
from tests.factories import word_limit_rl_version


def group(gid: str, task: str, scored: list[tuple[str, float | None, str]]) -> dict:
    return {
        "id": gid,
        "source": "t",
        "license": "MIT",
        "task": task,
        "prompt": [{"role": "user", "content": "q"}],
        "candidates": [
            {"content": text, "scores": json.dumps({} if s is None else {"verifier:math@2": s})}
            for text, s, _ in scored
        ],
        "verifier": "math",
        "reference": json.dumps({"answer": "4"}),
        "parents": [],
        "candidate_meta": json.dumps([{"finish_reason": f} for _, _, f in scored]),
    }


def test_best_passing_sample_is_kept_and_rates_are_kept_over_generated():
    groups = [
        group(
            "a", "math", [("The answer is 4, because 2 + 2 = 4.", 1.0, "stop"), ("4", 1.0, "stop"), ("5", 0.0, "stop")]
        ),
        group("b", "math", [("5", 0.0, "stop"), ("4 and more text", 1.0, "length"), ("6", 0.0, "stop")]),
        group("c", "code", [("def f(): ...", 1.0, "stop"), ("x", None, "stop"), ("y", 0.0, "stop")]),
    ]
    rows, samples = select_best(groups, min_score=1.0)
    assert [r["id"] for r in rows] == ["a", "c"]  # b's only passing sample was truncated
    assert rows[0]["messages"][-1] == {"role": "assistant", "content": "4"}  # equal scores: the shorter
    assert rows[0]["quality"] == {"verifier": 1.0} and rows[0]["verifier_version"] == "2"
    metrics = sample_rates(samples)
    assert metrics["rsft/effective_rate/all"]["value"] == pytest.approx(2 / 9)
    assert metrics["rsft/effective_rate/math"]["value"] == pytest.approx(1 / 6)
    assert metrics["rsft/pass_rate/math"]["value"] == pytest.approx(2 / 6)
    assert metrics["rsft/coverage/math"]["value"] == pytest.approx(1 / 2) and metrics["rsft/coverage/math"]["n"] == 2
    assert metrics["rsft/effective_rate/code"]["n"] == 3
    rows_truncated_ok, _ = select_best(groups, min_score=1.0, allow_truncated=True)
    assert [r["id"] for r in rows_truncated_ok] == ["a", "b", "c"]
    assert list(rate_table(metrics)["task"]) == ["all", "code", "math"]


def test_prompts_without_a_verifier_are_refused():
    from nebula_utils.train.rsft import rejection_sample

    with pytest.raises(ValueError, match="RSFT needs a verifier per prompt; 1 have none"):
        rejection_sample(None, [{"id": "x", "verifier": None, "reference": None}], None)


def test_sample_verify_and_fine_tune_on_the_tiny_model(tmp_path, stage_config, tiny_model_path):
    from transformers import AutoModelForCausalLM

    from nebula_utils.data.versions import load_version
    from nebula_utils.inference.generation import make_generator
    from nebula_utils.stages.rsft import load_records, write_kept
    from nebula_utils.train.rsft import rejection_sample, train_rsft
    from nebula_utils.verifiers import get_verifier

    data = word_limit_rl_version(tmp_path / "prompts")
    cfg = stage_config(
        "33_rsft",
        model="tiny-random",
        data=str(data),
        k=2,
        max_new_tokens=8,
        allow_truncated=True,  # tiny-random never ends its turn
        max_steps=3,
        learning_rate=5e-3,
        max_length=128,
        logging_steps=1,
        per_device_train_batch_size=2,
        audit=False,
    )
    records, manifests, select_step = load_records(cfg)
    policy = make_generator(cfg.model, "transformers", "cpu", cfg.batch_size)
    groups, kept, samples = rejection_sample(policy, records, cfg.sampling(cfg.k), cfg.min_score, 1, True)
    assert len(samples) == 4 * 2 and len(groups) == 4
    assert {r["task"] for r in kept} == {"complex_if"}  # random text meets a word limit, never a sum
    fmt = get_verifier("format")
    for row in kept:  # verified again, independently of the selection
        assert fmt(row["messages"][-1]["content"], json.loads(row["reference"])).passed
    rates = sample_rates(samples)
    assert rates["rsft/effective_rate/complex_if"]["value"] == pytest.approx(len(kept) / 4)
    assert rates["rsft/effective_rate/math_reasoning"]["value"] == 0.0

    info = write_kept(cfg, kept, len(records), manifests, select_step, policy, tmp_path / "run" / "data")
    assert len(load_version(info.path)) == len(kept)
    sft_cfg = cfg.sft_config(info.path)
    assert (sft_cfg.model, sft_cfg.learning_rate, sft_cfg.max_steps) == ("tiny-random", 5e-3, 3)
    metrics = train_rsft(sft_cfg, tmp_path / "run")
    assert metrics["train/samples"]["value"] == len(kept)
    before = AutoModelForCausalLM.from_pretrained(tiny_model_path).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
