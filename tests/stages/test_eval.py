"""Stage 60_eval: config checks and the notebook on tiny-random (fast path, no ../shared)."""

from __future__ import annotations

import json

import pytest

from nebula_utils.config import ConfigError
from nebula_utils.evaluate import load_suite
from nebula_utils.paths import SUITES_DIR
from tests.factories import EVAL_SMOKE as SMOKE

CAPABILITIES = {"instruction_following", "math", "knowledge", "truthfulness", "code"}


@pytest.mark.parametrize("key,value", [("backend", "tpu"), ("limit", -1), ("part", "test"), ("task_source", "hub")])
def test_bad_values_fail_when_the_config_is_built(stage_config, key, value):
    with pytest.raises(ConfigError, match=f"key '{key}'"):
        stage_config("60_eval", **{key: value})


@pytest.mark.slow
def test_notebook_runs_without_shared(run_notebook):
    run = run_notebook("60_eval", **SMOKE | {"num_threads": 1})
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    dev = {b.name for b in load_suite(SUITES_DIR / "verifiable.yaml") if b.part == "dev"}
    assert {f"eval/{n}" for n in dev} | {"eval/average"} <= set(metrics)
    assert all(metrics[f"eval/{n}"]["n"] == 2 and len(metrics[f"eval/{n}"]["ci95"]) == 2 for n in dev)
    assert (run / "scores.png").stat().st_size > 5_000
