"""Stage 17_patch: the current model scored per category on the curated corpus's verifiable prompts,
the failed prompts of the weak categories written as the balanced `patch` version with targets."""

from __future__ import annotations

import json

import pytest

from tests.factories import balanced_steps, small_mix

SMALL = {"model": "tiny-random", "n_samples": 2, "max_new_tokens": 8, "prompts_per_category": 0, "verifier_workers": 1}


@pytest.mark.parametrize(
    "over,match",
    [
        ({"n_samples": 0}, "key 'n_samples'"),
        ({"fail_at_most": 1.5}, "key 'fail_at_most'"),
        ({"max_pass_rate": -0.1}, "key 'max_pass_rate'"),
        ({"data": "x", "previous_mix": "x"}, "key 'previous_mix'"),
    ],
)
def test_bad_values_fail_when_the_config_is_built(stage_config, over, match):
    from nebula_utils.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        stage_config("17_patch", **over)


def test_tiny_random_fails_everything_so_every_verified_row_is_patched(tmp_path, stage_config, tiny_model_path):
    """small_mix's sft version: 3 chain_sum rows with worked answers and 2 HumanEval rows with their
    canonical solutions, all verifiable; tiny-random passes none, so both categories are weak at
    pass rate 0 and every row (its own answer verified) becomes a patch row targeting its category."""
    from nebula_utils.data.versions import load_version, read_manifests
    from nebula_utils.stages import patch as stage

    data = small_mix(tmp_path / "mix") / "sft"
    previous = small_mix(tmp_path / "prev") / "sft"
    cfg = stage_config("17_patch", data=str(data), previous_mix=str(previous), **SMALL)
    measured = stage.measure(cfg)
    rates = {r["task"]: r for r in measured.rates}
    assert set(rates) == {"code", "math_reasoning"} and rates["code"]["n"] == 2 and rates["math_reasoning"]["n"] == 3
    assert all(r["pass_rate"] == 0.0 and r["samples"] == 2 * r["n"] for r in rates.values())
    assert sorted(measured.weak) == ["code", "math_reasoning"]
    info = stage.write_patch(cfg, measured, tmp_path / "run")
    patch = load_version(info.path)
    assert info.num_rows == 5 and sorted(patch["id"]) == sorted(load_version(data)["id"])
    steps = balanced_steps(info.path)
    score, mix = steps[-2], steps[-1]
    assert score["name"] == "score_weakness" and score["weak_categories"] == measured.weak
    assert set(mix["params"]["targets"]) == set(patch["id"])
    assert all(w.split(":")[0] in ("code", "math_reasoning") for w in mix["params"]["targets"].values())
    assert "patch of measured weaknesses" in mix["params"]["changelog"]["reason"]
    targets = [json.loads(line) for line in (tmp_path / "run" / "targets.jsonl").read_text().splitlines()]
    assert len(targets) == 5 and all(t["passes"] == 0 and t["samples"] == 2 for t in targets)
    assert read_manifests(info.path)["version"]["schema"] == "sft"
    metrics = stage.metrics(measured, info)
    assert metrics["pass_rate/code"]["n"] == 2 and metrics["patch_rows"]["value"] == 5


def test_max_categories_keeps_only_the_worst_category(tmp_path, stage_config, tiny_model_path):
    from nebula_utils.stages import patch as stage

    data = small_mix(tmp_path / "mix") / "sft"
    cfg = stage_config("17_patch", data=str(data), max_pass_rate=0.0, max_categories=1, **SMALL)
    measured = stage.measure(cfg)
    assert len(measured.weak) == 1  # both at 0.0: only the worst one (ties: more prompts first)
    assert measured.weak == ["math_reasoning"]
    info = stage.write_patch(cfg, measured, tmp_path / "run")
    assert info.num_rows == 3 and balanced_steps(info.path)[-2]["drop_reasons"] == {"category_not_weak": 2}


def test_prompts_per_category_scores_the_same_n_of_each_task(tmp_path, stage_config, tiny_model_path):
    from nebula_utils.stages import patch as stage

    data = small_mix(tmp_path / "mix") / "sft"
    cfg = stage_config("17_patch", data=str(data), **(SMALL | {"prompts_per_category": 1}))
    measured = stage.measure(cfg)
    assert sorted((r["task"], r["n"]) for r in measured.rates) == [("code", 1), ("math_reasoning", 1)]
    info = stage.write_patch(cfg, measured, tmp_path / "run")
    select = balanced_steps(info.path)[-3]
    assert select["name"] == "select:per_category" and select["drop_reasons"] == {"over_per_category": 3}
    assert info.num_rows == 2


@pytest.mark.slow
def test_notebook_writes_the_patch_version(tmp_path, run_notebook, tiny_model_path):
    data = small_mix(tmp_path / "mix") / "sft"
    run = run_notebook("17_patch", data=str(data), **SMALL)
    doc = json.loads((run / "metrics.json").read_text())["metrics"]
    assert doc["patch_rows"]["value"] == 5 and doc["pass_rate/math_reasoning"]["n"] == 3
    assert (run / "category_rates.png").is_file() and (run / "patch" / "version.json").is_file()
