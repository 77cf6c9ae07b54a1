"""SFT stage on the tiny random model through TRL's real SFTTrainer."""

import json
from pathlib import Path

import pytest

from nebula_utils.config import ConfigError, merge_layers
from nebula_utils.runs import start_run
from nebula_utils.stages import stage_defaults
from nebula_utils.stages.sft import SFTStageConfig
from nebula_utils.train.sft import load_sft_dataset, loss_table, train_sft


def make_data(path: Path, n: int = 16) -> str:
    with open(path, "w") as fh:
        for i in range(n):
            msgs = [
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": f"{i} plus {i} is {2 * i}. The answer is {2 * i}."},
            ]
            fh.write(json.dumps({"messages": msgs}) + "\n")
    return str(path)


def sft_params(tmp_path, **over):
    values = merge_layers(SFTStageConfig, "20_sft", stage_defaults("20_sft"))
    values.update(
        model="tiny-random",
        data=make_data(tmp_path / "d.jsonl"),
        max_steps=6,
        learning_rate=5e-3,
        logging_steps=1,
        per_device_train_batch_size=4,
        max_length=64,
        run_dir=str(tmp_path / "run"),
        run_id="",
        device="cpu",
        # These tests predate packing and bf16 autocast (tests/train/ covers both): they read unpacked rows and
        # their LoRA loss check is marginal (10.7462 -> 10.7460 in fp32).
        packing=False,
        bf16=False,
    )
    values.update(over)
    return values


@pytest.mark.parametrize("use_lora", [False, True], ids=["full", "lora"])
def test_sft_trains_and_saves_loadable_model(tmp_path, tiny_model_path, use_lora):
    run = start_run("20_sft", sft_params(tmp_path, use_lora=use_lora, learning_rate=2e-2 if use_lora else 5e-3))
    metrics = train_sft(run.config, run.run_dir)
    run.finish(metrics=metrics)
    assert metrics["train/loss_last"]["value"] < metrics["train/loss_first"]["value"]  # it learns the pattern
    losses = loss_table(run.run_dir)
    assert len(losses) == 6
    from nebula_utils.inference.models import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(str(run.path("model")), device="cpu")
    assert not hasattr(model, "peft_config")  # LoRA adapters are merged into a plain checkpoint
    doc = json.loads(run.path("metrics.json").read_text())
    assert doc["schema_version"] == 1 and doc["metrics"]["train/samples"]["value"] == 16


def test_assistant_only_loss_masks_user_tokens(tmp_path, tiny_model_path):
    from trl import SFTTrainer

    from nebula_utils.inference.models import load_tokenizer

    cfg = SFTStageConfig(**sft_params(tmp_path))
    trainer = SFTTrainer(
        model=tiny_model_path,
        args=cfg.to_trl(tmp_path / "o"),
        train_dataset=load_sft_dataset(cfg.data),
        processing_class=load_tokenizer("tiny-random"),
    )
    row = trainer.train_dataset[0]
    tok = trainer.processing_class
    kept = tok.decode([t for t in row["labels"] if t != -100])
    assert kept.startswith("0 plus 0 is 0") and "What is" not in kept


def test_trl_overrides_are_validated(tmp_path):
    cfg = SFTStageConfig(**sft_params(tmp_path, trl_overrides={"not_a_field": 1}))
    with pytest.raises(ConfigError, match="not_a_field"):
        cfg.to_trl(tmp_path)
    cfg = SFTStageConfig(**sft_params(tmp_path, trl_overrides={"neftune_noise_alpha": 5.0}))
    assert cfg.to_trl(tmp_path).neftune_noise_alpha == 5.0 and cfg.to_trl(tmp_path).bf16 is False


def test_bad_data_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no SFT data"):
        load_sft_dataset(str(tmp_path / "missing.jsonl"))
