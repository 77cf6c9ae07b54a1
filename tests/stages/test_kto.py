"""Stage 32_kto: config checks at build time; the notebook trains on unpaired labels and records what it read."""

from __future__ import annotations

import json

import pytest

from tests.factories import small_distill_version, small_mix, small_pairs_version


@pytest.mark.parametrize(
    "over,match",
    [
        ({"loss_type": "sigmoid"}, "key 'loss_type'"),
        ({"per_device_train_batch_size": 1}, "key 'per_device_train_batch_size'"),  # no batch KL estimate
        ({"desirable_weight": 0.0}, "key 'desirable_weight'"),
    ],
)
def test_bad_values_fail_when_the_config_is_built(stage_config, over, match):
    from nebula_utils.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        stage_config("32_kto", **over)


def test_apo_zero_unpaired_needs_no_kl_batch(stage_config):
    assert stage_config("32_kto", loss_type="apo_zero_unpaired", per_device_train_batch_size=1).loss_type


@pytest.mark.slow
def test_notebook_trains_on_unpaired_labels(tmp_path, run_notebook, tiny_model_path):
    from nebula_utils.data.versions import read_manifests

    mix = small_mix(tmp_path / "mix")
    pairs = small_pairs_version(tmp_path / "pairs", small_distill_version(tmp_path / "distill", mix / "sft"))
    run = run_notebook(
        "32_kto",
        model="tiny-random",
        data=str(pairs),
        max_steps=2,
        max_length=160,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        audit=False,
    )
    assert (run / "model" / "config.json").is_file() and not (run / "audit.csv").exists()
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["train/desirable_share"]["value"] == 0.5
    num_pairs = json.loads((pairs / "version.json").read_text())["num_rows"]
    assert metrics["train/examples"]["value"] == 2 * num_pairs  # each pair: one desirable, one undesirable
    assert "train/kl_last" in metrics
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    assert [r["run_id"] for r in read_manifests(pairs)["consumption"]["records"]] == [run_id]
