"""Stage 00_environment: the notebook records versions and devices and resolves the models."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_notebook_records_the_machine_and_the_models(run_notebook, tiny_model_path):
    run = run_notebook("00_environment", models=["tiny-random", "not-a-model/at-all"])
    env = json.loads((run / "manifests" / "environment.json").read_text())
    assert {"python", "torch", "transformers", "trl"} <= set(env["versions"])
    assert env["devices"]["cpu_count"] >= 1 and "cuda_available" in env["devices"]
    ok = {m["spec"]: m["ok"] for m in env["models"]}
    assert ok == {"tiny-random": True, "not-a-model/at-all": False}
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["env/models_ok"] == {"value": 0.5, "n": 2, "ci95": None}


def test_model_report_says_why_a_model_is_unavailable():
    from nebula_utils.stages.environment import model_report

    (row,) = model_report(["not-a-model/at-all"])
    assert row["ok"] is False and "not-a-model/at-all" in row["error"]
