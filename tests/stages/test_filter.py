"""Stage 12_filter: the notebook cross-verifies candidate groups into sft + preference versions."""

from __future__ import annotations

import json

import pytest

from tests.factories import balanced_steps, small_distill_version, small_mix


def test_keep_rules_are_checked_when_the_config_is_built(stage_config):
    from nebula_utils.config import ConfigError

    with pytest.raises(ConfigError, match="key 'keep_rules'"):
        stage_config("12_filter", keep_rules={"code": ["verifier", "telepathy"]})
    with pytest.raises(ConfigError, match="key 'min_agreement'"):
        stage_config("12_filter", min_agreement=2.0)


@pytest.mark.slow
def test_notebook_writes_balanced_sft_and_preference_versions(tmp_path, run_notebook, tiny_model_path):
    from nebula_utils.data.versions import load_version, read_manifests

    distill = small_distill_version(tmp_path / "distill", small_mix(tmp_path / "mix") / "sft")
    groups = load_version(distill)
    run = run_notebook("12_filter", data=str(distill))
    for version in ("sft", "preference"):
        assert balanced_steps(run / version)[-1]["count_in"] == len(groups)
    sft_step = balanced_steps(run / "sft")[-1]
    dropped = (run / "dropped.jsonl").read_text().splitlines()
    assert len(dropped) == sft_step["filtered"] == sum(sft_step["drop_reasons"].values())
    assert (run / "filter_funnel.png").stat().st_size > 10_000
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["groups_in"]["value"] == len(groups)
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    assert [r["run_id"] for r in read_manifests(distill)["consumption"]["records"]] == [run_id]
