"""The smoke pipeline end to end through the real runner: every notebook, twice, same metrics."""

import json
from pathlib import Path

import pytest

from nebula_utils.pipeline import load_pipeline
from nebula_utils.runner import run_pipeline
from tests.conftest import REPO

SMOKE = REPO / "params" / "pipelines" / "smoke.yaml"


def science_metrics(run_dir: Path) -> dict:
    doc = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in doc["metrics"].items() if not k.startswith("timing/")}


@pytest.mark.slow
def test_smoke_pipeline_runs_twice_with_identical_metrics(tmp_path, monkeypatch, tiny_model_path):
    first = load_pipeline(SMOKE, tmp_path / "a")
    status = run_pipeline(first, echo=print)
    assert set(status.values()) == {"ran"}
    for step in first.steps:
        for name in ("notebook.ipynb", "config.yaml", "run.json", "metrics.json"):
            assert (step.run_dir / name).is_file(), f"{step.name}: {name} missing"
    html = (tmp_path / "a" / "reports" / "smoke.html").read_text()
    assert "base" in html and "sft" in html and "In&nbsp;[" not in html  # rows rendered, code hidden
    summary = json.loads((first.step("60_eval_sft").run_dir / "eval_summary.json").read_text())
    assert summary["benchmarks"] and all(
        (first.step("60_eval_sft").run_dir / b["path"]).is_file() for b in summary["benchmarks"].values()
    )

    # Same params, fresh results root: every non-timing metric must be identical (seeded everywhere).
    second = load_pipeline(SMOKE, tmp_path / "b")
    assert [s.run_id for s in second.steps] == [s.run_id for s in first.steps]
    run_pipeline(second, echo=print)
    for a, b in zip(first.steps, second.steps):
        assert science_metrics(a.run_dir) == science_metrics(b.run_dir), a.name


def test_smoke_plan_covers_grpo_through_the_runner(tmp_path):
    pipe = load_pipeline(SMOKE, tmp_path)
    grpo = pipe.step("40_grpo")
    assert grpo.upstream == ["16_curriculum"] and grpo.params["data"].endswith("/rl_pool")
    assert grpo.params["model"] == "tiny-random"  # from the base: shared by the SFT ablations
    p = grpo.params
    assert (p["max_steps"], p["num_generations"], p["prompts_per_step"], p["max_completion_length"]) == (2, 2, 2, 8)
