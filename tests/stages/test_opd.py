"""Stage 50_opd: config checks at build time, and the notebook distills through papermill on tiny
models (the trainer itself is tested in tests/train/test_distill.py)."""

from __future__ import annotations

import json

import pytest

from tests.factories import copied_model, perturbed_model, small_mix


@pytest.mark.parametrize(
    "over,match",
    [
        ({"teacher": "packaged:smollm2-135m-instruct"}, "key 'teacher': the teacher is the student itself"),
        ({"beta": 1.5}, "key 'beta'"),
        ({"num_samples": -1}, "key 'num_samples'"),
        ({"per_device_train_batch_size": 0}, "key 'per_device_train_batch_size'"),
        ({"temperature": 0.0}, "key 'temperature'"),
    ],
)
def test_bad_values_fail_when_the_config_is_built(stage_config, over, match):
    from nebula_utils.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        stage_config("50_opd", **({"teacher": "tiny-random"} | over))


def test_trl_config_carries_the_budget_and_rejects_unknown_overrides(stage_config, tmp_path):
    from nebula_utils.config import ConfigError

    cfg = stage_config("50_opd", teacher="tiny-random", beta=0.5)
    args = cfg.to_trl(tmp_path, max_steps=7)
    assert (args.max_steps, args.beta, args.bf16, args.activation_checkpointing) == (7, 0.5, False, False)
    with pytest.raises(ConfigError, match="unknown trl.DistillationConfig field 'nope'"):
        stage_config("50_opd", teacher="tiny-random", trl_overrides={"nope": 1}).to_trl(tmp_path, 1)


@pytest.mark.slow
def test_notebook_distills_and_records_consumption(tmp_path, run_notebook, tiny_model_path):
    from nebula_utils.data.versions import read_manifests

    mix = small_mix(tmp_path / "mix")
    run = run_notebook(
        "50_opd",
        model=str(copied_model(tmp_path / "student")),
        teacher=str(perturbed_model(tmp_path / "teacher")),
        data=str(mix / "rl"),
        num_samples=4,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        max_completion_length=8,
    )
    assert (run / "model" / "config.json").is_file()
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["train/samples"]["value"] == 4 and metrics["train/steps"]["value"] == 2
    assert metrics["train/loss_first"]["value"] > 0 and metrics["timing/samples_per_s"]["value"] > 0
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    assert [r["run_id"] for r in read_manifests(mix / "rl")["consumption"]["records"]] == [run_id]
