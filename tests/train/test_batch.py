"""The one global-batch derivation (train.batch.split_global_batch) and the knobs it fills in."""

from __future__ import annotations

import pytest

from nebula_utils.config import ConfigError
from nebula_utils.train.batch import split_global_batch, world_size


def test_global_batch_splits_into_per_process_units():
    assert split_global_batch(128, 1, 8) == 16  # Tülu 3 SFT: 128 sequences, 1 per GPU, 8 GPUs -> accumulation 16
    assert split_global_batch(128, 2, 8) == 8
    assert split_global_batch(1024, 16, 8) == 8  # GRPO: 1024 completions in groups of 16 -> 8 prompts per GPU
    assert split_global_batch(128, 1, 1) == 128  # one GPU keeps the batch by accumulating 128 passes


def test_a_global_batch_that_does_not_divide_names_the_key():
    with pytest.raises(ConfigError, match=r"key 'global_batch_size': 100 does not divide into 4 per pass x 8 .*= 32"):
        split_global_batch(100, 4, 8)
    with pytest.raises(ConfigError, match="key 'global_batch_size'"):
        split_global_batch(0, 1, 8)


def test_world_size_is_the_launchers(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert world_size() == 4


def test_training_stage_trl_configs_get_the_derived_accumulation(stage_config, tmp_path, monkeypatch):
    """Every training stage's TRL config gets global_batch_size / (per-device unit x processes)."""
    # 2 training processes (accelerate launch sets WORLD_SIZE=2; setting it here would make the TRL
    # config try to join a process group, so the count is patched where the stages read it)
    monkeypatch.setattr("nebula_utils.train.batch.world_size", lambda: 2)
    sft = stage_config("20_sft", per_device_train_batch_size=2, gradient_accumulation_steps=1, global_batch_size=16)
    assert sft.to_trl(tmp_path, bf16=False).gradient_accumulation_steps == 4  # 16 / (2 x 2)
    dpo = stage_config("31_dpo", per_device_train_batch_size=1, global_batch_size=8)
    assert dpo.to_trl(tmp_path).gradient_accumulation_steps == 4
    opd = stage_config("50_opd", teacher="tiny-random", per_device_train_batch_size=2, global_batch_size=8)
    assert opd.to_trl(tmp_path, max_steps=1).gradient_accumulation_steps == 2
    grpo = stage_config("40_grpo", num_generations=4, gradient_accumulation_steps=2, global_batch_size=48)
    args = grpo.to_trl(tmp_path, [1.0])  # 48 completions / (4 x 2 processes) = 6 prompts per process
    assert grpo.step_prompts() == 6 and args.per_device_train_batch_size == 12  # 6 x 4 in 2 passes
    off = stage_config("20_sft", gradient_accumulation_steps=3)
    assert off.to_trl(tmp_path, bf16=False).gradient_accumulation_steps == 3  # 0 = the knob as given
    monkeypatch.setattr("nebula_utils.train.batch.world_size", lambda: 3)
    with pytest.raises(ConfigError, match="key 'global_batch_size': 16 does not divide"):
        sft.to_trl(tmp_path, bf16=False)


def test_global_batch_and_attention_are_checked_when_the_config_is_built(stage_config):
    with pytest.raises(
        ConfigError, match="key 'global_batch_size': 10 is not a multiple of per_device_train_batch_size"
    ):
        stage_config("31_dpo", per_device_train_batch_size=4, global_batch_size=10)
    with pytest.raises(ConfigError, match="attn_implementation"):
        stage_config("20_sft", attn_implementation="flash")
    assert stage_config("32_kto", attn_implementation="eager").model_kwargs() == {"attn_implementation": "eager"}
    assert stage_config("32_kto").model_kwargs() == {}  # "" = transformers' own default (sdpa)


def test_vllm_tensor_parallel_size_reaches_trl(stage_config, tmp_path):
    opd = stage_config("50_opd", teacher="tiny-random", tensor_parallel_size=2)
    assert opd.to_trl(tmp_path, max_steps=1).vllm_tensor_parallel_size == 2
    with pytest.raises(ConfigError, match="tensor_parallel_size"):
        stage_config("13_difficulty", tensor_parallel_size=0)
