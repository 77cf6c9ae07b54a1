"""Stage 30_preference_data: config checks, the on-policy sampler, and the notebook from candidate groups."""

from __future__ import annotations

import json

import pytest

from tests.factories import balanced_steps, small_distill_version, small_mix, word_limit_rl_version


@pytest.mark.parametrize(
    "over,match",
    [
        ({"source": "web"}, "key 'source'"),
        ({"max_length_ratio": 0.5}, "key 'max_length_ratio'"),
        ({"k": 1}, "key 'k'"),
        ({"pass_threshold": 1.5}, "key 'pass_threshold'"),
        ({"signal": ""}, "key 'signal'"),
    ],
)
def test_bad_values_fail_when_the_config_is_built(stage_config, over, match):
    from nebula_utils.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        stage_config("30_preference_data", **over)


def test_on_policy_groups_are_sampled_from_the_policy_and_verified(tmp_path, stage_config, tiny_model_path):
    from nebula_utils.data.preference import build_pairs
    from nebula_utils.stages import preference_data as stage

    data = word_limit_rl_version(tmp_path / "prompts")
    cfg = stage_config("30_preference_data", data=str(data), policy="tiny-random", k=2, max_new_tokens=8)
    rows, manifests, step, source = stage.load_input(cfg)
    assert source == "on_policy" and step["count_out"] == len(rows) == 4
    groups, generator = stage.sample_on_policy(cfg, rows, manifests["version"]["schema"])
    assert [len(g["candidates"]) for g in groups] == [2] * 4
    for g in groups:
        assert all(c["generator"] == "tiny-random" for c in g["candidates"])
        assert all(any(k.startswith("verifier:") for k in json.loads(c["scores"])) for c in g["candidates"])
    # tiny-random never ends its turn: every answer is truncated, so none may be chosen
    pairs, drops = build_pairs(groups, cfg.rules())
    assert pairs == [] and drops == {"no_useful_candidate": 4}
    info = stage.write_pairs(cfg, pairs, drops, len(groups), manifests, step, tmp_path / "pairs", generator)
    steps = balanced_steps(info.path)
    assert [s["name"] for s in steps[-3:]] == ["select", "on_policy_sample", "pair:verifier"]


@pytest.mark.slow
def test_notebook_pairs_candidate_groups(tmp_path, run_notebook, tiny_model_path):
    from nebula_utils.data.versions import load_version, read_manifests

    mix = small_mix(tmp_path / "mix")
    groups = small_distill_version(tmp_path / "distill", mix / "sft")
    run = run_notebook("30_preference_data", data=str(groups), max_length_ratio=0.0)
    pairs = load_version(run / "pairs")
    assert len(pairs) > 0 and all(p["preference_reason"].startswith("verifier 1 vs 0") for p in pairs)
    steps = balanced_steps(run / "pairs")
    assert steps[-1]["name"] == "pair:verifier" and steps[-1]["count_in"] == len(load_version(groups))
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["pairs/pairs"]["value"] == len(pairs)
    assert metrics["pairs/chosen_longer_out"]["n"] == len(pairs) and metrics["pairs/chosen_longer_out"]["ci95"]
    assert (run / "pair_lengths.png").is_file()
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    assert [r["run_id"] for r in read_manifests(groups)["consumption"]["records"]] == [run_id]
    assert json.loads((run / "manifests" / "data_versions.json").read_text())["pairs"]["num_rows"] == len(pairs)
