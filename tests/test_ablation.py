"""Ablation grids: expansion into variants, run-id reuse of shared steps, skipping of done runs,
the report step across variants, and `nebula run params/ablations/<name>.yaml`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nebula_utils import runner
from nebula_utils.ablation import load_ablation
from nebula_utils.config import ConfigError
from nebula_utils.pipeline import load_pipeline
from tests.conftest import REPO

EXAMPLE = REPO / "params" / "ablations" / "sft_lr_smoke.yaml"
SMOKE = REPO / "params" / "pipelines" / "smoke.yaml"


def mini_base(tmp_path: Path) -> Path:
    """A three-step base pipeline (environment, data, SFT) taken from the smoke pipeline's params."""
    smoke = {s.get("name", s["notebook"]): s for s in yaml.safe_load(SMOKE.read_text())["steps"]}
    doc = {
        "pipeline": "mini",
        "defaults": {"model": "tiny-random"},
        "steps": [
            smoke["00_environment"],
            smoke["10_data_sft_mix"],
            {"notebook": "20_sft", "params": smoke["20_sft"]["params"] | {"data": "@10_data_sft_mix/sft"}},
        ],
    }
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def ablation_file(tmp_path: Path, **doc) -> Path:
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump({"ablation": "abl", "base": str(mini_base(tmp_path))} | doc))
    return path


# the steps the example grid changes (SFT and what reads its model)
VARIED = {
    "20_sft",
    "20_sft_complex",
    "17_patch",
    "20_sft_patch",
    "60_eval_sft_patch",
    "31_dpo",
    "32_kto",
    "33_rsft",
    "50_opd",
    "51_mopd",
    "60_eval_sft",
    "60_eval_dpo",
    "60_eval_opd",
    "60_eval_mopd",
}


def test_example_expands_to_four_variants_sharing_upstream_runs(tmp_path):
    abl = load_ablation(EXAMPLE, tmp_path)
    assert [v.label for v in abl.variants] == [
        "learning_rate=2e-05,seed=0",
        "learning_rate=2e-05,seed=1",
        "learning_rate=0.0002,seed=0",
        "learning_rate=0.0002,seed=1",
    ]
    smoke = load_pipeline(SMOKE, tmp_path)
    shared = [s.name for s in smoke.steps if s.name not in VARIED | {"90_report"}]
    for v in abl.variants:
        assert "90_report" not in [s.name for s in v.pipeline.steps]  # the base's own report is dropped
        for name in shared:  # untouched by the grid: same run id as the smoke pipeline, reused
            assert v.pipeline.step(name).run_id == smoke.step(name).run_id
        sft = v.pipeline.step("20_sft")
        assert (
            sft.params["learning_rate"] == v.point["20_sft.learning_rate"]
            and sft.params["seed"] == v.point["20_sft.seed"]
        )
        assert sft.params["max_steps"] == 4 and sft.run_dir.parent == tmp_path / "sft_lr_smoke"
    assert len({v.pipeline.step("20_sft").run_id for v in abl.variants}) == 4
    assert len({v.pipeline.step("60_eval_sft").run_id for v in abl.variants}) == 4
    # Variant lr=2e-5, seed=0 is the smoke pipeline itself: identical run ids, same science.
    assert abl.variants[0].pipeline.step("20_sft").science == smoke.step("20_sft").science
    plan = abl.plan()
    names = [s.name for _, s in plan]  # each distinct run once; the report last
    assert sorted(names) == sorted(shared + sorted(VARIED) * 4 + ["90_report"]) and names[-1] == "90_report"
    report = abl.report
    assert report.params["runs"] == [str(v.pipeline.step("60_eval_sft").run_dir) for v in abl.variants]
    assert report.params["labels"] == [v.label for v in abl.variants]
    assert report.science["runs"] == [f"@{v.pipeline.step('60_eval_sft').run_id}" for v in abl.variants]
    assert report.params["report_name"] == "sft_lr_smoke" and report.run_dir.parent == tmp_path / "sft_lr_smoke"
    assert report.upstream == [f"variant{i}" for i in range(4)]


def test_unprefixed_axis_applies_to_every_step_declaring_it_and_overrides_apply_to_all(tmp_path):
    abl = load_ablation(ablation_file(tmp_path, grid={"seed": [0, 3]}, overrides={"20_sft.max_steps": 2}), tmp_path)
    first, second = (v.pipeline for v in abl.variants)
    assert [s.params["seed"] for s in second.steps] == [3, 3, 3]
    assert all(s.params["max_steps"] == 2 for p in (first, second) for s in p.steps if s.name == "20_sft")
    assert all(a.run_id != b.run_id for a, b in zip(first.steps, second.steps))  # seed changes every step
    assert abl.report is None


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"grid": {"20_sft.learning_rat": [1e-5]}}, "step '20_sft' (20_sft) has no parameter 'learning_rat'"),
        ({"grid": {"21_sft.learning_rate": [1e-5]}}, "no step named '21_sft'"),
        ({"grid": {"20_sft.learning_rate": ["fast"]}}, "grid '20_sft.learning_rate' value 'fast': expected float"),
        ({"grid": {"20_sft.learning_rate": [1e-5, 1e-5]}}, "grid '20_sft.learning_rate' repeats a value"),
        ({"grid": {}}, "'grid' must be a non-empty mapping"),
        ({"grid": {"seed": [0]}, "report": {"step": "60_eval_sft"}}, "no step named '60_eval_sft'"),
        ({"grid": {"seed": [0]}, "gird": 1}, "unknown key 'gird'"),
        ({"grid": {"20_sft.num_threads": [1, 2]}}, "identical pipelines"),
    ],
)
def test_bad_ablation_files_fail_with_one_line_naming_file_and_key(tmp_path, doc, message):
    with pytest.raises(ConfigError) as err:
        load_ablation(ablation_file(tmp_path, **doc), tmp_path)
    assert message in str(err.value) and "\n" not in str(err.value)


def fake_execute(calls: list):
    """Stands in for papermill: records the step and writes what a finished notebook writes."""

    def execute(step, echo=None):
        calls.append(step.run_id)
        step.run_dir.mkdir(parents=True, exist_ok=True)
        (step.run_dir / "config.yaml").write_text(yaml.safe_dump(step.params | {"run_id": step.run_id}))
        (step.run_dir / "run.json").write_text(
            json.dumps({"run_id": step.run_id, "status": "complete", "stage": step.notebook})
        )
        return 0.0

    return execute


def test_each_distinct_run_executes_once_and_done_runs_are_skipped(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(runner, "execute_step", fake_execute(calls))
    monkeypatch.setattr(runner, "render_reports", lambda *a, **k: None)
    doc = {"grid": {"20_sft.learning_rate": [1e-5, 2e-5, 3e-5]}, "report": {"step": "20_sft", "baseline": 1}}
    abl = load_ablation(ablation_file(tmp_path, **doc), tmp_path)
    status = runner.run_ablation(abl, echo=lambda s: None)
    assert len(calls) == len(set(calls)) == 2 + 3 + 1  # env + data once, three SFT runs, the report
    assert set(status.values()) == {"ran"}
    record = json.loads(runner.ablation_record(tmp_path / "abl", abl.source).read_text())
    assert [v["point"] for v in record["variants"]] == [{"20_sft.learning_rate": x} for x in (1e-5, 2e-5, 3e-5)]
    assert record["report"] == abl.report.run_id

    # Widen the grid: only the new SFT run and the new report (its runs list changed) execute.
    calls.clear()
    doc["grid"]["20_sft.learning_rate"].append(5e-5)
    wider = load_ablation(ablation_file(tmp_path, **doc), tmp_path)
    status = runner.run_ablation(wider, echo=lambda s: None)
    assert calls == [wider.variants[3].pipeline.steps[2].run_id, wider.report.run_id]
    assert sum(v == "skipped" for v in status.values()) == 2 + 3

    # --force reruns every distinct run, still once each.
    calls.clear()
    runner.run_ablation(wider, force=True, echo=lambda s: None)
    assert len(calls) == len(set(calls)) == 2 + 4 + 1


def test_an_ablation_over_base_pipeline_with_eval_and_report_steps_drops_the_inner_report(tmp_path, monkeypatch):
    """The shape an ablation takes once 60_eval exists: the base pipeline's own 90_report step is
    dropped and the ablation's report compares one step of every variant."""
    base = yaml.safe_load(mini_base(tmp_path).read_text())
    base["steps"].append({"notebook": "90_report", "params": {"runs": ["@20_sft"], "report_name": "inner"}})
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    abl = load_ablation(
        ablation_file(
            tmp_path,
            base=str(tmp_path / "base.yaml"),
            grid={"20_sft.lora_r": [4, 8]},
            report={"step": "20_sft", "labels": ["r4", "r8"], "params": {"bootstrap_resamples": 200}},
        ),
        tmp_path,
    )
    assert all(
        [s.notebook for s in v.pipeline.steps] == ["00_environment", "10_data_sft_mix", "20_sft"] for v in abl.variants
    )
    assert abl.report.params["labels"] == ["r4", "r8"] and abl.report.params["bootstrap_resamples"] == 200


def test_cli_runs_ablation_plan_and_rejects_step_selection(tmp_path):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "nebula_utils.cli", "run", str(EXAMPLE), *args, "--results", str(tmp_path)],
            capture_output=True,
            text=True,
            cwd=REPO,
        )

    plan = cli("--plan")
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.strip().splitlines()
    shared = len(yaml.safe_load(SMOKE.read_text())["steps"]) - len(VARIED) - 1  # all but VARIED and 90_report
    # three SFT stages (base, complex, patch) in each of the 4 variants
    assert len(lines) == shared + 4 * len(VARIED) + 1 and sum("20_sft-" in line for line in lines) == 4 * 3
    assert "90_report-" in lines[-1]
    only = cli("--only", "20_sft")
    assert only.returncode == 2 and "--only/--from" in only.stderr


GRPO_DIFFICULTY = REPO / "params" / "ablations" / "grpo_difficulty.yaml"
GRPO_DIFFICULTY_SMOKE = REPO / "params" / "ablations" / "grpo_difficulty_smoke.yaml"


@pytest.mark.parametrize("path", [GRPO_DIFFICULTY, GRPO_DIFFICULTY_SMOKE], ids=["demo", "smoke"])
def test_grpo_difficulty_ablation_varies_only_the_band_at_an_equal_budget(tmp_path, path):
    abl = load_ablation(path, tmp_path)
    assert [v.point["40_grpo_reasoning.difficulties"] for v in abl.variants] == [["easy"], ["medium"], ["hard"]]
    names = [s.name for s in abl.variants[0].pipeline.steps]
    assert not any("unseen" in n or n.startswith("90_report") for n in names)  # dropped: decisions read dev only
    shared = ["00_environment", "20_sft_complex", "13_difficulty_reasoning", "60_eval_reasoning_start"]
    for name in shared:  # graded once, the starting model evaluated once
        assert len({v.pipeline.step(name).run_id for v in abl.variants}) == 1, name
    grpo = [v.pipeline.step("40_grpo_reasoning") for v in abl.variants]
    assert len({g.run_id for g in grpo}) == 3
    budgets = {g.params["max_steps"] * g.params["prompts_per_step"] * g.params["num_generations"] for g in grpo}
    assert len(budgets) == 1
    others = [{k: v for k, v in g.science.items() if k != "difficulties"} for g in grpo]
    assert others[0] == others[1] == others[2]  # nothing but the band differs
    evals = [v.pipeline.step("60_eval_reasoning_grpo") for v in abl.variants]
    assert [e.params["model"] for e in evals] == [str(g.run_dir / "model") for g in grpo]
    report = abl.report
    assert report.notebook == "82_ablation_grpo_difficulty" and report.params["labels"] == ["easy", "medium", "hard"]
    assert report.params["runs"] == [str(e.run_dir) for e in evals] and report.params["baseline"] == "medium"
    assert report.params["base_run"] == str(abl.variants[0].pipeline.step("60_eval_reasoning_start").run_dir)
    assert [s.name for _, s in abl.plan()][-1] == "82_ablation_grpo_difficulty"


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"drop": ["21_sft"]}, "drop: no step named '21_sft'"),
        ({"drop": "20_sft"}, "'drop' must be a list of step names"),
        (
            {"report": {"step": "20_sft", "params": {"runs": ["@20_sft"]}}},
            "refers to '20_sft', which is not an earlier step",  # 20_sft differs between variants
        ),
    ],
)
def test_drop_and_report_references_fail_clearly(tmp_path, doc, message):
    with pytest.raises(ConfigError) as err:
        load_ablation(ablation_file(tmp_path, grid={"20_sft.learning_rate": [1e-5, 2e-5]}, **doc), tmp_path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_dropped_steps_and_a_report_notebook(tmp_path):
    doc = {
        "grid": {"20_sft.learning_rate": [1e-5, 2e-5]},
        "drop": ["20_sft"],
        "report": {"step": "10_data_sft_mix", "notebook": "90_report"},
    }
    with pytest.raises(ConfigError, match="grid '20_sft.learning_rate' .*no step named '20_sft'"):  # dropped
        load_ablation(ablation_file(tmp_path, **doc), tmp_path)
    doc |= {"drop": ["00_environment"], "report": {"step": "20_sft", "notebook": "90_report"}}
    doc["report"]["params"] = {"runs": ["@10_data_sft_mix"], "labels": ["data"]}  # a step both variants share
    abl = load_ablation(ablation_file(tmp_path, **doc), tmp_path)
    assert all([s.name for s in v.pipeline.steps] == ["10_data_sft_mix", "20_sft"] for v in abl.variants)
    assert abl.report.notebook == "90_report"
    assert abl.report.params["runs"] == [str(abl.variants[0].pipeline.step("10_data_sft_mix").run_dir)]
