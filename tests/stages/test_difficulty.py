"""Stage 13_difficulty: the notebook grades RL prompts by pass rate and writes the pool."""

from __future__ import annotations

import pytest

from tests.factories import balanced_steps, small_mix

SMOKE = {
    "policy": "tiny-random",
    "max_prompts": 4,
    "n_samples": 2,
    "max_new_tokens": 16,
    "pool_labels": ["hard", "medium"],
}


@pytest.mark.parametrize(
    "over,match",
    [
        ({"pool_labels": ["medum"]}, "key 'pool_labels'"),
        ({"hard_at_most": 0.8, "easy_above": 0.5}, "key 'easy_above'"),
        ({"n_samples": 0}, "key 'n_samples'"),
    ],
)
def test_bad_values_fail_when_the_config_is_built(stage_config, over, match):
    from nebula_utils.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        stage_config("13_difficulty", **over)


@pytest.mark.slow
def test_notebook_grades_and_writes_the_pool(tmp_path, run_notebook, tiny_model_path):
    from nebula_utils.data.versions import load_version

    mix = small_mix(tmp_path / "mix")
    run = run_notebook("13_difficulty", data=str(mix / "rl"), **SMOKE)
    graded = load_version(run / "graded", verify=True)
    assert len(graded) == 4 and all(r is not None for r in graded["pass_rate"])
    pool_step = balanced_steps(run / "rl")[-1]
    assert pool_step["name"] == "select_pool" and pool_step["count_in"] == 4
    pool = load_version(run / "rl")
    assert set(pool["difficulty"]) <= {"hard", "medium"} and len(pool) == pool_step["count_out"]
    assert (run / "pass_rates.png").stat().st_size > 10_000
