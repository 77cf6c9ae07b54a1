"""Stage 40_grpo: config checks at build time, the TRL config it builds (precision, rollout mode,
batch shape), and the notebook through papermill on a small real RL pool (the trainer itself is
tested in tests/train/test_grpo.py)."""

from __future__ import annotations

import json

import pytest

from tests.factories import small_mix


@pytest.mark.parametrize(
    "over,match",
    [
        ({"num_generations": 1}, "key 'num_generations'"),
        ({"difficulties": ["medium", "trivial"]}, "key 'difficulties'"),
        ({"loss_type": "ppo"}, "key 'loss_type'"),
        ({"scale_rewards": "std"}, "key 'scale_rewards'"),
        ({"rollout": "vllm"}, "key 'rollout'"),
        ({"rollout": "vllm_server"}, "key 'vllm_server_url'"),
        ({"reward_weights": {}}, "key 'reward_weights'"),
        ({"reward_weights": {"maths": 1.0}}, "unknown verifier 'maths'"),
        ({"prompts_per_step": 3, "num_generations": 2, "gradient_accumulation_steps": 4}, "do not split"),
        ({"temperature": 0.0}, "key 'temperature'"),
        ({"beta": -0.1}, "key 'beta'"),
    ],
)
def test_bad_values_fail_when_the_config_is_built(stage_config, over, match):
    from nebula_utils.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        stage_config("40_grpo", **over)


def test_trl_config_from_params(tmp_path, stage_config):
    from nebula_utils.config import ConfigError

    cfg = stage_config(
        "40_grpo",
        num_generations=4,
        prompts_per_step=6,
        gradient_accumulation_steps=2,
        beta=0.02,
        epsilon=0.1,
        epsilon_high=0.28,
        loss_type="dr_grpo",
        max_completion_length=64,
        temperature=0.7,
        trl_overrides={"top_k": 20},
    )
    args = cfg.to_trl(tmp_path, [1.0, 0.5])
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (12, 2)
    assert args.generation_batch_size == 24 and args.num_generations == 4  # 6 prompts x 4 completions a step
    assert (args.beta, args.epsilon, args.epsilon_high, args.loss_type) == (0.02, 0.1, 0.28, "dr_grpo")
    assert (args.max_completion_length, args.temperature, args.top_k) == (64, 0.7, 20)
    assert args.reward_weights == [1.0, 0.5] and args.remove_unused_columns is False
    # CPU: fp32 (TRL defaults to bf16), transformers rollouts, no activation checkpointing (TRL defaults to it)
    assert args.bf16 is False and args.use_vllm is False and args.activation_checkpointing is False
    assert stage_config("40_grpo", epsilon_high=0.0).to_trl(tmp_path, [1.0]).epsilon_high == 0.2  # = epsilon
    with pytest.raises(ConfigError, match="unknown trl.GRPOConfig field 'not_a_field'"):
        stage_config("40_grpo", trl_overrides={"not_a_field": 1}).to_trl(tmp_path, [1.0])
    vllm = stage_config("40_grpo", rollout="vllm_colocate")
    with pytest.raises(ConfigError, match="needs CUDA and the vllm package"):
        vllm.to_trl(tmp_path, [1.0])


@pytest.mark.gpu
def test_vllm_rollout_modes_on_gpu(tmp_path, stage_config):
    pytest.importorskip("vllm")
    cfg = stage_config("40_grpo", device="cuda", rollout="vllm_colocate", vllm_gpu_memory_utilization=0.2)
    args = cfg.to_trl(tmp_path, [1.0])
    assert args.use_vllm and args.vllm_mode == "colocate" and args.bf16
    server = stage_config("40_grpo", device="cuda", rollout="vllm_server", vllm_server_url="http://localhost:8000")
    args = server.to_trl(tmp_path, [1.0])
    assert args.vllm_mode == "server" and args.vllm_server_base_url == "http://localhost:8000"


@pytest.mark.slow
def test_notebook_trains_on_an_rl_pool(tmp_path, run_notebook, tiny_model_path):
    from nebula_utils.data.versions import read_manifests

    mix = small_mix(tmp_path / "mix")
    run = run_notebook(
        "40_grpo",
        model="tiny-random",
        data=str(mix / "rl"),
        num_generations=2,
        prompts_per_step=2,
        max_steps=2,
        max_completion_length=8,
        heldout_prompts=2,
        heldout_samples=1,
        learning_rate=1e-3,
    )
    assert (run / "model" / "config.json").is_file() and (run / "steps.png").is_file()
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["train/steps"]["value"] == 2 and metrics["train/completions"]["value"] == 8
    assert metrics["train/prompts"]["value"] == 5  # 7 rl prompts, 2 held out
    assert metrics["audit/verdicts_as_expected"]["value"] == 1.0
    assert metrics["heldout/pass_rate_final"]["n"] == 2 and "ci95" in metrics["heldout/pass_rate_delta"]
    assert 0 <= metrics["train/zero_variance_frac_last"]["value"] <= 1
    assert len(json.loads((run / "train_log.json").read_text())) == 3  # two steps and the summary
    held = [json.loads(line) for line in (run / "heldout_samples.jsonl").read_text().splitlines()]
    assert {r["policy"] for r in held} == {"initial", "final"} and len(held) == 4
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    assert [r["run_id"] for r in read_manifests(mix / "rl")["consumption"]["records"]] == [run_id]
