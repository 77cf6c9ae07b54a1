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


@pytest.mark.slow
def test_classifies_the_cross_verified_corpus_of_12_filter(tmp_path, stage_config, tiny_model_path):
    """14's default input is 12_filter's `sft` output: 4 tiny-random candidate groups cross-verified
    (teacher answers truncated, so the dataset's verified answers are kept) are read, classified and
    sampled into a child version whose lineage names the distill version."""
    from nebula_utils.data import crossverify
    from nebula_utils.data.versions import load_version, read_manifests
    from nebula_utils.stages import classify_sample
    from nebula_utils.stages import filter as filter_stage
    from tests.factories import balanced_steps, small_distill_version, small_mix

    assert classify_sample.ClassifySampleConfig.upstream == {"data": "12_filter/sft"}
    distill = small_distill_version(tmp_path / "distill", small_mix(tmp_path / "mix") / "sft")
    fcfg = stage_config("12_filter", data=str(distill))
    assert fcfg.teacher_only is False
    groups = filter_stage.load_groups(fcfg)
    result = crossverify.cross_verify(groups, fcfg.rules())
    sft = filter_stage.write_outputs(fcfg, groups, result, tmp_path / "filter")["sft"]
    step = balanced_steps(sft.path)[-1]
    assert sft.num_rows == 4 and sum(v["dataset"] for v in step["answer_from"].values()) == 4
    cfg = stage_config(
        "14_classify_sample", data=str(sft.path), shared_data_dir="", classifier_per_class=8, random_baseline_seeds=2
    )
    classified = classify_sample.classify_rows(cfg)
    info = classify_sample.write_sampled(
        cfg, classified, classify_sample.diversity_sample(cfg, classified), tmp_path / "data"
    )
    assert info.num_rows == 2 and set(load_version(info.path)["id"]) <= set(load_version(sft.path)["id"])
    names = [s["name"] for s in read_manifests(info.path)["processing"]["steps"]]
    assert names[-3:] == ["distill", "cross_verify", "classify_sample"]
