"""Stage 31_dpo: config checks at build time; the notebook trains, plots, audits and records what it read
(the trainer itself is tested in tests/train/test_preference.py)."""

from __future__ import annotations

import json

import pytest

from tests.factories import small_distill_version, small_mix, small_pairs_version


@pytest.mark.parametrize(
    "over,match",
    [
        ({"loss_type": "dpo"}, "key 'loss_type'"),
        ({"beta": 0.0}, "key 'beta'"),
        ({"learning_rate": -1.0}, "key 'learning_rate'"),
        ({"audit_batch_size": 0}, "key 'audit_batch_size'"),
    ],
)
def test_bad_values_fail_when_the_config_is_built(stage_config, over, match):
    from nebula_utils.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        stage_config("31_dpo", **over)


@pytest.mark.parametrize("stage", ["31_dpo", "32_kto"])
def test_bf16_is_decided_per_machine_like_sft(stage_config, monkeypatch, tmp_path, stage):
    """bf16: false/true are obeyed; auto follows train.throughput.resolve_bf16 (CPU flags + a measured
    matmul), never TRL's default bf16=True."""
    from nebula_utils.train import throughput

    assert stage_config(stage, bf16=False, device="cpu").to_trl(tmp_path).bf16 is False
    assert stage_config(stage, bf16=True, device="cpu").to_trl(tmp_path).bf16 is True
    for verdict in (False, True):
        monkeypatch.setattr(throughput, "resolve_bf16", lambda setting, device, threads=None, v=verdict: (v, "test"))
        assert stage_config(stage, device="cpu").to_trl(tmp_path).bf16 is verdict
    with pytest.raises(Exception, match="key 'bf16'"):
        stage_config(stage, bf16="fast")


def test_the_reference_is_the_starting_model_unless_given(stage_config):
    assert stage_config("31_dpo", model="tiny-random").reference() == "tiny-random"
    assert stage_config("31_dpo", model="a", ref_model="b").reference() == "b"


@pytest.mark.slow
def test_notebook_trains_audits_and_records_consumption(tmp_path, run_notebook, tiny_model_path):
    from nebula_utils.data.versions import read_manifests

    mix = small_mix(tmp_path / "mix")
    pairs = small_pairs_version(tmp_path / "pairs", small_distill_version(tmp_path / "distill", mix / "sft"))
    run = run_notebook(
        "31_dpo",
        model="tiny-random",
        data=str(pairs),
        loss_type="sigmoid_norm",
        beta=5.0,
        max_steps=2,
        max_length=160,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
    )
    assert (run / "model" / "config.json").is_file() and (run / "audit.csv").is_file()
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert {"train/loss_first", "train/rewards_accuracies_last", "train/rewards_margins_last"} <= set(metrics)
    for category in ("all", "short_correct_vs_long_vacuous", "correction_vs_sycophancy"):
        for prefix in ("audit", "audit_ref", "audit_reward"):
            entry = metrics[f"{prefix}/{category}"]
            assert entry["n"] >= 10 and len(entry["ci95"]) == 2, (prefix, category)
    log = json.loads((run / "train_log.json").read_text())
    assert sum("rewards/margins" in h for h in log) == 2
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    assert [r["run_id"] for r in read_manifests(pairs)["consumption"]["records"]] == [run_id]
