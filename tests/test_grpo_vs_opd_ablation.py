"""The GRPO-vs-OPD smoke ablation end to end through the real runner on tiny-random: both arms
train once from the same SFT checkpoint at the same budget of completions, each arm's model is
evaluated, and the ablation notebook renders its budget check, comparison and conclusion to HTML."""

from __future__ import annotations

import json

import pytest

from nebula_utils.ablation import load_ablation
from nebula_utils.runner import run_ablation
from tests.conftest import REPO

SMOKE_ABLATION = REPO / "params" / "ablations" / "grpo_vs_opd_smoke.yaml"


def metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


def test_the_grid_switches_only_the_evaluated_arm(tmp_path):
    abl = load_ablation(SMOKE_ABLATION, tmp_path)
    grpo, opd = abl.variants
    shared = [s.name for s in grpo.pipeline.steps if s.name != "60_eval_arm"]
    assert shared == ["10_data_sft_mix", "20_sft", "40_grpo", "50_opd"]
    for name in shared:  # one run id per training step: both trainings run once
        assert grpo.pipeline.step(name).run_id == opd.pipeline.step(name).run_id
    start = grpo.pipeline.step("20_sft").run_dir / "model"
    assert grpo.pipeline.step("40_grpo").params["model"] == opd.pipeline.step("50_opd").params["model"] == str(start)
    evaluated = [v.pipeline.step("60_eval_arm").params["model"] for v in abl.variants]
    assert evaluated == [str(grpo.pipeline.step(s).run_dir / "model") for s in ("40_grpo", "50_opd")]
    g, o = grpo.pipeline.step("40_grpo").params, opd.pipeline.step("50_opd").params
    assert g["max_steps"] * g["prompts_per_step"] * g["num_generations"] == o["num_samples"] == 4
    assert [label for label, _ in abl.plan()].count("report") == 1 and len(abl.plan()) == 7


@pytest.mark.slow
def test_smoke_ablation_compares_grpo_and_opd_at_an_equal_budget(tmp_path, tiny_model_path):
    abl = load_ablation(SMOKE_ABLATION, tmp_path)
    status = run_ablation(abl, echo=print)
    assert set(status.values()) == {"ran"} and len(status) == 7  # data, SFT, 2 trainings, 2 evals, report
    grpo = metrics(abl.variants[0].pipeline.step("40_grpo").run_dir)
    opd = metrics(abl.variants[0].pipeline.step("50_opd").run_dir)
    assert grpo["train/completions"]["value"] == opd["train/samples"]["value"] == 4
    assert grpo["train/steps"]["value"] == opd["train/steps"]["value"] == 1
    report = abl.report.run_dir
    m = metrics(report)
    assert m["ablation/equal_budget"]["value"] == 1 and m["ablation/same_start"]["value"] == 1
    assert m["ablation/arms"]["value"] == 2 and "report/delta/opd/average" in m
    budgets = json.loads((report / "budgets.json").read_text())
    assert [b["stage"] for b in budgets] == ["40_grpo", "50_opd"] and [b["completions"] for b in budgets] == [4, 4]
    conclusion = (report / "conclusion.md").read_text()
    assert "opd" in conclusion and "OPD with 4K samples against RL" in conclusion
    html = (tmp_path / "reports" / "grpo_vs_opd_smoke.html").read_text()
    assert "Equal budgets, same start" in html and "In&nbsp;[" not in html
