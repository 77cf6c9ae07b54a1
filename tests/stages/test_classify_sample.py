"""Stage 14_classify_sample: config checks, and the notebook classifies, samples and records lineage."""

from __future__ import annotations

import json

import pytest

from tests.factories import small_sft_version


def test_config_defaults_and_an_unknown_selection(stage_config):
    from nebula_utils.config import ConfigError

    assert stage_config("14_classify_sample").selection == "kmeans"
    with pytest.raises(ConfigError, match="key 'selection'.*'kmedoids'"):
        stage_config("14_classify_sample", selection="kmedoids")
    with pytest.raises(ConfigError, match="key 'target_fraction'"):
        stage_config("14_classify_sample", target_fraction=1.5)


@pytest.mark.slow
def test_notebook_classifies_samples_and_records_consumption(tmp_path, run_notebook):
    from nebula_utils.data.versions import load_version, read_manifests

    version = small_sft_version(tmp_path, planted=False)
    run = run_notebook(
        "14_classify_sample",
        data=str(version),
        shared_data_dir="",
        classifier_per_class=8,
        random_baseline_seeds=3,
        selection="kmeans",
    )
    assert len(load_version(run / "data", verify=True)) == 15
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["classifier_heldout_accuracy"]["n"] > 0 and metrics["classifier_heldout_accuracy"]["ci95"]
    assert metrics["coverage_mean_kcenter"]["value"] <= metrics["coverage_mean_random"]["value"]
    assert metrics["coverage_mean_selected"] == metrics["coverage_mean_kmeans"]
    assert (run / "classify_sample.png").is_file()
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    assert run_id in [r["run_id"] for r in read_manifests(version)["consumption"]["records"]]
