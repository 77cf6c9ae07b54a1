"""Stage 81_ablation_sft_stages: config checks, the stage runs found by their training data
(16_curriculum base/complex mixes, 17_patch's patch), each stage's targets from its lineage, and the
notebook through papermill on demo-shaped run folders with a known effect per stage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.report.run_folders import SUITE, _sft_run, build_demo_results, correlated_scores, write_eval, write_run


@pytest.mark.parametrize(
    "over,match",
    [
        ({"runs": ["a"]}, "key 'runs': at least two"),
        ({"runs": ["a", "b"], "labels": ["x"]}, "key 'labels'"),
        ({"report_name": "a/b"}, "key 'report_name'"),
    ],
)
def test_bad_values_fail_when_the_config_is_built(stage_config, over, match):
    from nebula_utils.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        stage_config("81_ablation_sft_stages", **over)


def three_stages(root):
    """The demo results tree plus a 17_patch run (weak category: code), the patch SFT run, and
    evaluations after each stage: the complex stage gains on math, the patch gains on code."""
    from nebula_utils.data.manifests import processing_step
    from nebula_utils.data.versions import derive_version, load_version

    demo = build_demo_results(root, n_items=120)
    folder = root / "demo"
    patch = write_run(folder / "17_patch-1a2b3c4d", "17_patch", {"model": str(demo["sft2"] / "model")})
    parent = demo["classify"] / "data"
    derive_version(
        parent,
        load_version(parent).select(range(3)),
        patch / "patch",
        processing_step(
            "score_weakness", count_in=19, count_out=3, drop_reasons={"model_passes": 16}, weak_categories=["code"]
        ),
    )
    sft3 = _sft_run(folder, "20_sft-5e6f7a8b", str(demo["sft2"] / "model"), patch / "patch", 8, 1.0)
    rng = np.random.default_rng(3)
    before, after_base, after_complex, after_patch = {}, {}, {}, {}
    for name, (cap, p, _) in SUITE.items():
        up = {"math": 0.3 if cap == "math" else 0.0, "code": 0.35 if cap == "code" else 0.0}
        before[name], after_base[name] = correlated_scores(120, p, p, keep=0.95, rng=rng)
        _, after_complex[name] = correlated_scores(120, p, p + up["math"], keep=0.95, rng=rng)
        _, after_patch[name] = correlated_scores(120, p + up["math"], p + up["math"] + up["code"], keep=0.95, rng=rng)
    evals = {
        "before_sft": write_eval(folder / "60_eval-0a000001", "packaged:smollm2-135m-instruct", before),
        "sft_base": write_eval(folder / "60_eval-0a000002", str(demo["sft1"] / "model"), after_base, seed=1),
        "sft_complex": write_eval(folder / "60_eval-0a000003", str(demo["sft2"] / "model"), after_complex, seed=2),
        "sft_patch": write_eval(folder / "60_eval-0a000004", str(sft3 / "model"), after_patch, seed=3),
    }
    for i, path in enumerate(evals.values()):  # newer than build_demo_results' own evaluations
        info = json.loads((path / "run.json").read_text())
        (path / "run.json").write_text(json.dumps(info | {"finished": info["finished"] + 100 + i}))
    return demo, evals


def test_empty_runs_find_each_stage_by_its_training_data_and_targets(tmp_path, stage_config, monkeypatch):
    from nebula_utils.report.lineage import lineage
    from nebula_utils.stages import ablation_sft_stages as stage

    _, evals = three_stages(tmp_path / "results")
    monkeypatch.setenv("NEBULA_RESULTS", str(tmp_path / "results"))
    runs, labels = stage.variant_runs(stage_config("81_ablation_sft_stages"))
    assert labels == ["before_sft", "sft_base", "sft_complex", "sft_patch"]
    assert runs == [str(evals[k]) for k in labels]
    targets = [stage.stage_targets(lineage(r)) for r in runs[1:]]
    assert targets == [["cap/math"], ["cap/math"], ["cap/code"]]


def test_a_stage_without_evaluation_is_left_out_and_too_few_rows_is_a_clear_error(tmp_path, stage_config, monkeypatch):
    from nebula_utils.config import ConfigError
    from nebula_utils.stages import ablation_sft_stages as stage

    monkeypatch.setenv("NEBULA_RESULTS", str(tmp_path / "results"))
    (tmp_path / "results").mkdir()
    with pytest.raises(ConfigError, match="no complete evaluations of two SFT stages"):
        stage.variant_runs(stage_config("81_ablation_sft_stages"))
    demo = build_demo_results(tmp_path / "results", n_items=20)  # evaluates the base model and stage 2 only
    runs, labels = stage.variant_runs(stage_config("81_ablation_sft_stages"))
    assert labels == ["before_sft", "sft_complex"] and runs[1] == str(demo["sft"])


@pytest.mark.slow
def test_notebook_reads_each_stage_against_the_previous_one(tmp_path, run_notebook, monkeypatch):
    _, evals = three_stages(tmp_path / "results")
    monkeypatch.setenv("NEBULA_RESULTS", str(tmp_path / "results"))
    run = run_notebook(
        "81_ablation_sft_stages",
        bootstrap_resamples=200,
        run_dir=str(tmp_path / "results" / "demo" / "81_ablation_sft_stages-0f0f0f0f"),
    )
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["report/runs"]["value"] == 4
    complex_math = metrics["report/delta/sft_complex/cap/math"]
    patch_code = metrics["report/delta/sft_patch/cap/code"]
    assert complex_math["value"] > 0.15 and complex_math["ci95"][0] > 0 and complex_math["n"] == 240
    assert patch_code["value"] > 0.2 and patch_code["ci95"][0] > 0
    conclusion = (run / "conclusion.md").read_text()
    assert "**sft_complex is better than sft_base** on the cap/math" in conclusion
    assert "**sft_patch is better than sft_complex** on the cap/code" in conclusion
    assert "No detectable effect** of sft_base against before_sft on the average" in conclusion
