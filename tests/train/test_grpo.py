"""GRPO (nebula_utils.train.grpo) through TRL 1.16's real GRPOTrainer on the tiny random model:
rewards from the real verifiers, zero-variance groups counted (and filtered) on a constructed
batch, parameters that move, the prompt pool's difficulty filter, and the hacking audit."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from nebula_utils.train import grpo as rl
from tests.factories import rl_version

MATH = {"verifier": "math", "reference": json.dumps({"answer": "42"})}


def math_rows(n: int, difficulty: str | None = None) -> list[dict]:
    return [{"prompt": f"What is 6 * 7? ({i})", "difficulty": difficulty, **MATH} for i in range(n)]


# --------------------------------------------------------------------------- zero-variance counting


def test_group_stats_on_constructed_rewards():
    nan = float("nan")
    rewards = torch.tensor(
        [
            [1.0, 1.0, 1.0],  # all right
            [0.0, 0.0, 0.0],  # all wrong
            [1.0, 0.0, 0.0],  # informative
            [0.5, 0.5, 0.5],  # equal partial credit (IFEval 1 of 2 instructions): none passed
            [0.0, nan, 0.0],  # an unscorable completion is ignored, as TRL's nanstd does
            [1.0, nan, 0.0],
        ]
    ).flatten()
    passed = rewards >= 1.0
    stats = rl.group_stats(rewards, passed, 3)
    assert stats == {"groups": 6, "zero_variance": 4, "all_pass": 1, "all_fail": 3}
    rows = rl.zero_variance_rows(rewards, 3)
    assert rows.tolist() == [True] * 6 + [False] * 3 + [True] * 6 + [False] * 3


# --------------------------------------------------------------------------- through the trainer


@pytest.fixture
def math_trainer(tmp_path, stage_config, tiny_model_path):
    """A VerifiableGRPOTrainer on tiny-random whose rollout returns fixed texts (set .texts)."""
    data = rl_version(tmp_path / "rl", math_rows(4))
    cfg = stage_config(
        "40_grpo", model="tiny-random", data=str(data), num_generations=2, prompts_per_step=2, max_completion_length=16
    )
    pool, _ = rl.load_rl_prompts(cfg.data)
    trainer = rl.build_trainer(cfg, tmp_path / "run", pool)
    tok = trainer.processing_class

    def fixed_rollout(prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        assert len(prompt_ids) == len(trainer.texts)
        return [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in trainer.texts], None

    trainer._generate_single_turn = fixed_rollout  # the only stand-in: the policy's sampling
    trainer.model.train()
    return trainer, pool


def test_rewards_and_zero_variance_through_the_trainer(math_trainer):
    trainer, pool = math_trainer
    trainer.texts = [
        "6 * 7 = 42, so the answer is \\boxed{42}.",  # group 1: right ...
        "The answer is \\boxed{41}.",  # ... and wrong: informative
        "The answer is \\boxed{40}.",  # group 2: wrong ...
        "I think it is 7.",  # ... and wrong: zero variance
    ]
    inputs = [pool[0], pool[0], pool[1], pool[1]]  # TRL's sampler repeats each prompt num_generations times
    out = trainer._generate_and_score_completions(inputs)
    # The real math verifier scored TRL's decoded completions: 1 for the right answer, 0 otherwise.
    assert list(trainer._logs["rewards"]["reward_math"]) == [1.0, 0.0, 0.0, 0.0]
    adv = out["advantages"].tolist()
    assert adv[0] > 0 > adv[1] and adv[2] == adv[3] == 0.0
    m = trainer._metrics["train"]
    assert m["pass_rate"][-1] == 0.25 and m["verifiers/math/pass_rate"][-1] == 0.25
    assert m["zero_variance/frac_groups"][-1] == 0.5 and m["zero_variance/groups"][-1] == 1.0
    assert m["zero_variance/all_fail_frac"][-1] == 0.5 and m["zero_variance/all_pass_frac"][-1] == 0.0
    assert m["frac_reward_zero_std"][-1] == 0.5  # TRL's own count agrees under group scaling
    assert out["completion_mask"][2:].sum() > 0  # not filtered by default

    trainer.filter_zero_variance = True
    out = trainer._generate_and_score_completions(inputs)
    mask = out["completion_mask"]
    assert mask[2:].sum() == 0 and mask[:2].sum() > 0  # the all-wrong group leaves the loss
    assert out["num_items_in_batch"].item() == mask.sum().item()  # dapo's normaliser counts what is left
    assert m["zero_variance/filtered_completions"][-1] == 2.0


def test_all_right_groups_are_counted_apart(math_trainer):
    trainer, pool = math_trainer
    trainer.texts = ["The answer is 42."] * 2 + ["#### 42", "It is 41."]
    trainer._generate_and_score_completions([pool[0], pool[0], pool[1], pool[1]])
    m = trainer._metrics["train"]
    assert m["zero_variance/all_pass_frac"][-1] == 0.5 and m["zero_variance/all_fail_frac"][-1] == 0.0
    assert m["pass_rate"][-1] == 0.75


def test_parameters_change_after_grpo_steps(tmp_path, stage_config, tiny_model_path):
    # tiny-random never answers a math question, so every group would have zero variance and zero
    # gradient; a format check random text passes about half the time (starts with a capital
    # letter) gives the groups reward variance, and the real format verifier scores it.
    rows = [
        {"prompt": f"Say something {i}.", "verifier": "format", "reference": json.dumps({"regex": r"\A\s*[A-Z]"})}
        for i in range(6)
    ]
    data = rl_version(tmp_path / "rl", rows)
    cfg = stage_config(
        "40_grpo",
        model="tiny-random",
        data=str(data),
        num_generations=4,
        prompts_per_step=2,
        max_steps=2,
        max_completion_length=8,
        learning_rate=1e-3,
        heldout_prompts=0,
    )
    pool, _ = rl.load_rl_prompts(cfg.data)
    trainer = rl.build_trainer(cfg, tmp_path / "run", pool)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    metrics = rl.train_grpo(trainer, cfg, tmp_path / "run")
    moved = [n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert len(moved) == len(before), f"unchanged: {sorted(set(before) - set(moved))}"
    steps = rl.step_table(tmp_path / "run")
    assert len(steps) == 2 and (steps["reward_std"] > 0).any()
    for key in ("rewards/reward_format/mean", "pass_rate", "kl", "clip_ratio/region_mean", "tokens_per_s"):
        assert steps[key].notna().all(), key
    assert (steps["zero_variance/frac_groups"] < 1).any()
    assert metrics["train/steps"]["value"] == 2 and metrics["train/completions"]["value"] == 16
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    assert "stage: 40_grpo" in (tmp_path / "run" / "model" / "README.md").read_text()  # the model card
    # fp32 on CPU (TRL defaults to bf16) and no activation checkpointing (TRL defaults to it)
    assert trainer.args.bf16 is False and trainer.args.activation_checkpointing is False
    assert next(trainer.model.parameters()).dtype == torch.float32


# --------------------------------------------------------------------------- prompt pools


def test_difficulty_filter(tmp_path):
    rows = math_rows(3, "easy") + math_rows(2, "medium") + math_rows(1, "hard")
    data = rl_version(tmp_path / "rl", rows)
    pool, bands = rl.load_rl_prompts(data, ["medium"])
    assert bands == {"easy": 3, "medium": 2, "hard": 1} and pool["difficulty"] == ["medium", "medium"]
    assert pool[0]["prompt"] == [{"role": "user", "content": "What is 6 * 7? (0)"}]  # chat: TRL templates it
    assert len(rl.load_rl_prompts(data, [])[0]) == 6
    train, held = rl.split_heldout(rl.load_rl_prompts(data, [])[0], 2)
    assert len(train) == 4 and len(held) == 2 and not set(train["id"]) & set(held["id"])
    with pytest.raises(ValueError, match=r"no prompt with difficulty in \['x'\]"):
        rl.load_rl_prompts(data, ["x"])
    unlabelled = rl_version(tmp_path / "raw", math_rows(2))
    with pytest.raises(ValueError, match="grade it with 13_difficulty"):
        rl.load_rl_prompts(unlabelled, ["medium"])
    with pytest.raises(ValueError, match="no training prompt"):
        rl.split_heldout(pool, 2)
    cfg = SimpleNamespace(prompts_per_step=4, step_prompts=lambda processes=None: 4)
    with pytest.raises(ValueError, match="has 2 prompts, fewer than prompts_per_step=4"):
        rl.build_trainer(cfg, tmp_path, pool)
    with pytest.raises(ValueError, match=r"verifier\(s\) \['math'\]"):
        rl.check_verifiers(pool, {"ifeval": 1.0})
    with pytest.raises(FileNotFoundError, match="no RL data"):
        rl.load_rl_prompts(tmp_path / "missing")


def test_task_filter(tmp_path):
    chat = {"prompt": "Reply in one word.", "task": "general_chat", "verifier": "format"}
    rows = math_rows(2) + [chat | {"reference": json.dumps({"max_words": 1})}]
    data = rl_version(tmp_path / "rl", rows)
    pool, _ = rl.load_rl_prompts(data, tasks=["math_reasoning"])
    assert pool["task"] == ["math_reasoning"] * 2
    assert len(rl.load_rl_prompts(data, tasks=["math_reasoning", "general_chat"])[0]) == 3
    with pytest.raises(ValueError, match="no prompt of task 'math'"):  # a typo is an error, not a smaller pool
        rl.load_rl_prompts(data, tasks=["math_reasoning", "math"])


# --------------------------------------------------------------------------- held-out check and audit


def test_hacking_signatures_follow_the_audit_set():
    sigs = rl.hacking_signatures()
    for exploit in ("answer spraying", "echoes the prompt", "degenerate repetition", "keywords stuffed", "early_exit"):
        assert exploit in sigs
    assert not any(o in s for s in sigs for o in ("wrong answer", "no final answer", "failed:"))
    reasons = ["wrong answer: got 41", "answer only echoes the prompt", None, "answer spraying: 12 numbers"]
    assert rl.hacking_flags(reasons, sigs) == [None, "echoes the prompt", None, "answer spraying"]


def test_audit_set_passes_through_the_reward_verifiers():
    audit = rl.audit_verifiers()
    assert audit["cases"] >= 30 and audit["as_expected"] == audit["cases"], audit["failures"]


def test_heldout_summary_pairs_by_prompt():
    def row(policy, pid, passed, hacking=None):
        return {"policy": policy, "id": pid, "passed": passed, "hacking": hacking}

    rows = [row("initial", "a", False), row("initial", "a", True), row("initial", "b", False)]
    rows += [row("final", "a", True), row("final", "a", True), row("final", "b", False, "echoes the prompt")]
    out = rl.heldout_summary(rows, resamples=200)
    assert out["heldout/pass_rate_initial"]["value"] == 0.25 and out["heldout/pass_rate_final"]["value"] == 0.5
    assert out["heldout/pass_rate_delta"]["value"] == 0.25 and out["heldout/pass_rate_delta"]["n"] == 2
    assert out["heldout/hacking_rate_final"]["value"] == 0.5 and out["heldout/hacking_rate_initial"]["value"] == 0


def test_sample_and_score_uses_the_real_verifiers(tmp_path, stage_config, tiny_model_path):
    data = rl_version(tmp_path / "rl", math_rows(2))
    cfg = stage_config("40_grpo", model="tiny-random", data=str(data), heldout_samples=2, max_completion_length=8)
    from nebula_utils.inference.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer("tiny-random", device="cpu")
    rows = rl.sample_and_score(model, tok, rl.load_rl_prompts(data)[0], cfg, "initial")
    assert len(rows) == 4 and {r["sample"] for r in rows} == {0, 1}
    assert all(r["score"] == 0.0 and r["reason"] for r in rows)  # random text: no answer, with the verifier's reason
