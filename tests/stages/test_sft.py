"""Stage 20_sft: config checks at build time, and the notebook trains from a path given from any
working directory (the trainer itself is tested in tests/train/test_sft.py)."""

from __future__ import annotations

import json

import pytest

from tests.factories import small_mix


@pytest.mark.parametrize(
    "over,match",
    [
        ({"max_steps": -5}, "key 'max_steps'"),
        ({"learning_rate": -1.0}, "key 'learning_rate'"),
        ({"device": "gpu0"}, "key 'device'"),
        ({"warmup_ratio": 1.5}, "key 'warmup_ratio'"),
    ],
)
def test_bad_values_fail_when_the_config_is_built(stage_config, over, match):
    from nebula_utils.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        stage_config("20_sft", **over)


@pytest.mark.slow
def test_notebook_trains_from_another_working_directory(tmp_path, run_notebook, tiny_model_path):
    from nebula_utils.data.versions import load_version, read_manifests

    mix = small_mix(tmp_path / "mix")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = run_notebook(
        "20_sft",
        cwd=elsewhere,
        model="tiny-random",
        data=str(mix / "sft"),
        max_steps=2,
        max_length=128,
        logging_steps=1,
    )
    assert (run / "model" / "config.json").is_file()
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["train/samples"]["value"] == len(load_version(mix / "sft"))
    assert metrics["train/loss_first"]["value"] > 0
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    assert [r["run_id"] for r in read_manifests(mix / "sft")["consumption"]["records"]] == [run_id]
