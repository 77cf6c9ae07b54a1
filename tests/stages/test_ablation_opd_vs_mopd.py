"""Stage 84_ablation_opd_vs_mopd: config checks, and the notebook through papermill on fixture run
folders with a known effect (OPD and MOPD training runs at an equal budget and their evaluation
runs); the real tiny-random ablation through the runner is in tests/test_opd_ablation.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.report.run_folders import SUITE, build_demo_results, correlated_scores, write_eval, write_run


@pytest.mark.parametrize(
    "over,match",
    [
        ({"runs": ["a"]}, "key 'runs': an OPD and a MOPD evaluation run are needed"),
        ({"runs": ["a", "b"], "labels": ["x"]}, "key 'labels'"),
        ({"runs": ["a", "b"], "report_name": "a/b"}, "key 'report_name'"),
    ],
)
def test_bad_values_fail_when_the_config_is_built(stage_config, over, match):
    from nebula_utils.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        stage_config("84_ablation_opd_vs_mopd", **over)


def distill_run(folder, name, student, teachers, per_teacher, samples=64):
    run = write_run(
        folder / name,
        "51_mopd",
        {"model": student, "teacher": "packaged:smollm2-135m-instruct", "teachers": teachers, "num_samples": samples},
        {
            "train/samples": {"value": samples, "n": samples},
            "train/steps": {"value": samples // 8, "n": samples // 8},
            "train/loss_last": {"value": 0.4, "n": 8},
        }
        | {f"mopd/{t}/samples": {"value": v, "n": v} for t, v in per_teacher.items()},
    )
    log = [{"step": s, "loss": round(1.2 * np.exp(-s / 4), 4)} for s in range(1, samples // 8 + 1)]
    (run / "train_log.json").write_text(json.dumps(log))
    (run / "model").mkdir()
    (run / "model" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return run


@pytest.mark.slow
def test_notebook_compares_opd_and_mopd_at_an_equal_budget(tmp_path, run_notebook):
    from nebula_utils.report.html import render_html

    demo = build_demo_results(tmp_path / "results", n_items=120)
    folder = tmp_path / "results" / "demo"
    student = str(demo["sft2"] / "model")
    opd = distill_run(folder, "51_mopd-0a0a0a0a", student, {}, {"default": 64})
    mopd = distill_run(
        folder, "51_mopd-0b0b0b0b", student, {"code": str(demo["sft1"] / "model")}, {"default": 40, "code": 24}
    )
    rng = np.random.default_rng(5)
    a, b = {}, {}
    for name, (_, p, _) in SUITE.items():  # MOPD gains 25 points on every benchmark
        a[name], b[name] = correlated_scores(120, p, p + 0.25, keep=0.9, rng=rng)
    evals = [
        write_eval(folder / "60_eval-0c0c0c0c", str(opd / "model"), a),
        write_eval(folder / "60_eval-0d0d0d0d", str(mopd / "model"), b, seed=1),
    ]
    run = run_notebook(
        "84_ablation_opd_vs_mopd",
        runs=[str(p) for p in evals],
        labels=["opd", "mopd"],
        baseline="opd",
        report_name="opd_vs_mopd_test",
        bootstrap_resamples=200,
        run_dir=str(folder / "84_ablation_opd_vs_mopd-0e0e0e0e"),
    )
    budgets = json.loads((run / "budgets.json").read_text())
    assert [b["samples"] for b in budgets] == [64, 64] and budgets[1]["rows per teacher"] == "default: 40, code: 24"
    conclusion = (run / "conclusion.md").read_text()
    assert conclusion.startswith("**mopd is better than opd** on the average") and "**reproduced**" in conclusion
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["ablation/equal_budget"]["value"] == 1 and metrics["report/delta/mopd/average"]["value"] > 0.15
    from nebula_utils.report.lineage import iter_nodes, lineage

    via = {n.get("key"): n.get("path") for _, n in iter_nodes(lineage(evals[1]))}
    assert via["teachers.code"] == str(demo["sft1"] / "model")  # the lineage walks into the routed teachers
    html = render_html(run.parent / f"{run.name}.ipynb", tmp_path / "page.html").read_text()
    assert "Equal budgets" in html and "No detectable effect" not in html and "In&nbsp;[" not in html
