"""Stage 33_rsft: config checks, the SFT config it hands to 20_sft's trainer, and the notebook end to end."""

from __future__ import annotations

import json

import pytest

from tests.factories import balanced_steps, word_limit_rl_version


@pytest.mark.parametrize(
    "over,match",
    [
        ({"k": 0}, "key 'k'"),
        ({"min_score": 2.0}, "key 'min_score'"),
        ({"temperature": -1.0}, "key 'temperature'"),
        ({"max_steps": -1}, "key 'max_steps'"),
    ],
)
def test_bad_values_fail_when_the_config_is_built(stage_config, over, match):
    from nebula_utils.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        stage_config("33_rsft", **over)


def test_sft_config_takes_shared_fields_and_20_sft_defaults_for_the_rest(stage_config):
    from nebula_utils.stages import stage_config_class

    cfg = stage_config("33_rsft", model="m", learning_rate=3e-4, use_lora=True, packing=True, seed=7)
    sft = cfg.sft_config("/data/v")
    assert type(sft) is stage_config_class("20_sft")
    assert (sft.model, sft.data, sft.learning_rate, sft.use_lora, sft.packing, sft.seed) == (
        "m",
        "/data/v",
        3e-4,
        True,
        True,
        7,
    )


@pytest.mark.slow
def test_notebook_samples_keeps_fine_tunes_and_records_consumption(tmp_path, run_notebook, tiny_model_path):
    from nebula_utils.data.versions import load_version, read_manifests

    prompts = word_limit_rl_version(tmp_path / "prompts")
    run = run_notebook(
        "33_rsft",
        model="tiny-random",
        data=str(prompts),
        k=2,
        max_new_tokens=8,
        allow_truncated=True,
        max_steps=2,
        max_length=128,
        per_device_train_batch_size=2,
        audit=False,
    )
    kept = load_version(run / "data")
    steps = balanced_steps(run / "data")
    assert steps[-1]["name"] == "rejection_sample" and steps[-1]["count_out"] == len(kept) > 0
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    rate = metrics["rsft/effective_rate/all"]
    assert rate["value"] == pytest.approx(len(kept) / (4 * 2)) and rate["n"] == 8
    assert metrics["train/samples"]["value"] == len(kept) and (run / "model" / "config.json").is_file()
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    assert [r["run_id"] for r in read_manifests(prompts)["consumption"]["records"]] == [run_id]
    assert [r["run_id"] for r in read_manifests(run / "data")["consumption"]["records"]] == [run_id]
