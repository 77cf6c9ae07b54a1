"""Stage 11_distill: the notebook distills (with a synthesis school) on tiny-random; config checks."""

from __future__ import annotations

import json

import pytest

from tests.factories import balanced_steps, small_mix

SMOKE = {
    "teacher": "tiny-random",
    "max_prompts": 4,
    "k": 2,
    "max_new_tokens": 16,
    "synthesis": "magpie",
    "synth_n": 2,
    "synth_max_new_tokens": 16,
    "synth_allow_truncated": True,
}


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("k", 1, "key 'k'"),
        ("synthesis", "magpi", "key 'synthesis'"),
        ("top_p", 0.0, "key 'top_p'"),
        ("backend", "tf", "key 'backend'"),
    ],
)
def test_bad_values_fail_when_the_config_is_built(stage_config, key, value, match):
    from nebula_utils.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        stage_config("11_distill", **{key: value})


@pytest.mark.slow
def test_notebook_distills_candidate_groups(tmp_path, run_notebook, tiny_model_path):
    from nebula_utils.data.versions import load_version, read_manifests

    mix = small_mix(tmp_path / "mix")
    run = run_notebook("11_distill", data=str(mix / "sft"), **SMOKE)
    steps = balanced_steps(run / "distill")
    assert [s["name"] for s in steps[-3:]] == ["select", "synthesize:magpie", "distill"]
    groups = load_version(run / "distill", verify=True)
    assert len(groups) == 4 + steps[-2]["count_out"]
    assert all(len(c) >= 2 for c in groups["candidates"])
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    assert [r["run_id"] for r in read_manifests(mix / "sft")["consumption"]["records"]] == [run_id]
    assert read_manifests(run / "distill")["evaluation_isolation"]["notes"][-1].startswith("synthesized prompts")
    assert (run / "distill_candidates.png").stat().st_size > 5_000
