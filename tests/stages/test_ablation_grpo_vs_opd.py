"""Stage 83_ablation_grpo_vs_opd: config checks, finding the two arms of one starting checkpoint
under a results root, the budget table from the training runs, and the notebook through papermill
on fixture run folders with a known effect (as given, and opened as is with empty `runs`); the
real tiny-random ablation through the runner is in tests/test_grpo_vs_opd_ablation.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.report.run_folders import correlated_scores, write_eval, write_run

BENCHES = ("rg_chain_sum", "ifeval_constraints")  # math reasoning and instruction following


def with_model(run: Path, log: list[dict]) -> Path:
    (run / "train_log.json").write_text(json.dumps(log))
    (run / "model").mkdir()
    (run / "model" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return run


def grpo_run(folder: Path, name: str, start: str, steps: int = 8) -> Path:
    config = {"model": start, "max_steps": steps, "prompts_per_step": 2, "num_generations": 4}
    metrics = {
        "train/steps": {"value": steps, "n": steps},
        "train/completions": {"value": steps * 8, "n": steps * 8},
        "train/reward_first": {"value": 0.2, "n": 1},
        "train/reward_last": {"value": 0.3, "n": 1},
    }
    run = write_run(folder / name, "40_grpo", config | {"max_completion_length": 96, "learning_rate": 2e-6}, metrics)
    return with_model(run, [{"step": s, "loss": 0.01, "reward": 0.2 + 0.01 * s} for s in range(1, steps + 1)])


def opd_run(folder: Path, name: str, start: str, samples: int = 64) -> Path:
    config = {"model": start, "teacher": "packaged:smollm2-135m-instruct", "num_samples": samples}
    metrics = {
        "train/samples": {"value": samples, "n": samples},
        "train/steps": {"value": samples // 8, "n": samples // 8},
        "train/loss_first": {"value": 1.1, "n": 8},
        "train/loss_last": {"value": 0.4, "n": 8},
    }
    run = write_run(folder / name, "50_opd", config | {"max_completion_length": 96, "learning_rate": 2e-5}, metrics)
    return with_model(run, [{"step": s, "loss": round(1.2 * np.exp(-s / 4), 4)} for s in range(1, samples // 8 + 1)])


def arms(folder: Path, opd_gain: float, n: int = 150, samples: int = 64) -> dict[str, Path]:
    """An SFT run + its eval, GRPO and OPD runs from its model + their evals (OPD `opd_gain` above GRPO)."""
    sft = with_model(write_run(folder / "20_sft-5f5f5f5f", "20_sft", {"model": "packaged:smollm2-135m-instruct"}), [])
    start = str(sft / "model")
    grpo, opd = grpo_run(folder, "40_grpo-1a1a1a1a", start), opd_run(folder, "50_opd-2b2b2b2b", start, samples)
    rng = np.random.default_rng(3)
    s, g, o = {}, {}, {}
    for b in BENCHES:
        s[b], g[b] = correlated_scores(n, 0.35, 0.37, keep=0.9, rng=rng)
        _, o[b] = correlated_scores(n, 0.35, 0.37 + opd_gain, keep=0.9, rng=rng)
    return {
        "sft": write_eval(folder / "60_eval-3c3c3c3c", start, s),
        "grpo": write_eval(folder / "60_eval-4d4d4d4d", str(grpo / "model"), g, seed=1),
        "opd": write_eval(folder / "60_eval-5e5e5e5e", str(opd / "model"), o, seed=2),
    }


@pytest.mark.parametrize(
    "over,match",
    [
        ({"runs": ["a"]}, "key 'runs': a GRPO and an OPD evaluation run"),
        ({"runs": ["a", "b"], "labels": ["x"]}, "key 'labels'"),
        ({"runs": ["a", "b"], "labels": ["base", "opd"]}, "key 'labels'"),
        ({"report_name": "a/b"}, "key 'report_name'"),
        ({"bootstrap_resamples": 10}, "key 'bootstrap_resamples'"),
    ],
)
def test_bad_values_fail_when_the_config_is_built(stage_config, over, match):
    from nebula_utils.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        stage_config("83_ablation_grpo_vs_opd", **over)


def test_find_arms_pairs_grpo_and_opd_of_one_start_and_its_evaluation(tmp_path):
    from nebula_utils.stages.ablation_grpo_vs_opd import find_arms

    folder = tmp_path / "results" / "demo"
    assert find_arms(tmp_path / "results") is None
    made = arms(folder, 0.2)
    # a newer GRPO run from ANOTHER start with its evaluation: no OPD arm shares that start
    other = with_model(write_run(folder / "20_sft-6f6f6f6f", "20_sft", {"model": "tiny-random"}), [])
    stray = grpo_run(folder, "40_grpo-7a7a7a7a", str(other / "model"))
    late = write_eval(folder / "60_eval-8b8b8b8b", str(stray / "model"), {b: np.ones(10) for b in BENCHES})
    info = json.loads((late / "run.json").read_text())
    (late / "run.json").write_text(json.dumps(info | {"finished": info["finished"] + 100}))
    runs, labels, base = find_arms(tmp_path / "results")
    assert runs == [str(made["grpo"]), str(made["opd"])] and labels == ["grpo", "opd"] and base == str(made["sft"])


def test_budget_table_reads_each_arm_from_its_training_run(tmp_path):
    from nebula_utils.report.lineage import lineage
    from nebula_utils.stages import ablation_grpo_vs_opd as ab

    made = arms(tmp_path / "results" / "demo", 0.2, n=20, samples=48)
    table = ab.budget_table(["grpo", "opd"], [lineage(made["grpo"]), lineage(made["opd"])])
    assert table["completions"].tolist() == [64, 48] and table["prompt visits"].tolist() == [16, 48]
    assert table["optimizer steps"].tolist() == [8, 6] and table["stage"].tolist() == ["40_grpo", "50_opd"]
    assert not ab.equal_budgets(table) and ab.same_start(table)


@pytest.mark.slow
def test_notebook_finds_opd_above_grpo_at_an_equal_budget(tmp_path, run_notebook):
    from nebula_utils.report.html import render_html

    folder = tmp_path / "results" / "demo"
    made = arms(folder, 0.25)
    run = run_notebook(
        "83_ablation_grpo_vs_opd",
        runs=[str(made["grpo"]), str(made["opd"])],
        labels=["grpo", "opd"],
        base_run=str(made["sft"]),
        report_name="grpo_vs_opd_test",
        bootstrap_resamples=200,
        run_dir=str(folder / "83_ablation_grpo_vs_opd-9c9c9c9c"),
    )
    budgets = json.loads((run / "budgets.json").read_text())
    assert [b["completions"] for b in budgets] == [64, 64] and budgets[0]["prompt visits"] == 16
    conclusion = (run / "conclusion.md").read_text()
    assert conclusion.startswith("**opd is better than grpo** on the average") and "**reproduced**" in conclusion
    assert "instruction_following" in conclusion and "Against the starting checkpoint" in conclusion
    m = json.loads((run / "metrics.json").read_text())["metrics"]
    assert m["ablation/equal_budget"]["value"] == 1 and m["ablation/same_start"]["value"] == 1
    assert m["report/delta/opd/average"]["value"] > 0.15 and m["ablation/lift/opd"]["value"] > 0.15
    html = render_html(run.parent / f"{run.name}.ipynb", tmp_path / "page.html").read_text()
    assert "Equal budgets, same start" in html and "In&nbsp;[" not in html and str(tmp_path) not in html


@pytest.mark.slow
def test_notebook_opened_as_is_reads_the_newest_pair_or_says_there_is_none(tmp_path, run_notebook, monkeypatch):
    monkeypatch.setenv("NEBULA_RESULTS", str(tmp_path / "results"))
    (tmp_path / "results").mkdir()
    empty = run_notebook("83_ablation_grpo_vs_opd", run_dir=str(tmp_path / "a" / "83_ablation_grpo_vs_opd-0"))
    assert (empty / "conclusion.md").read_text().startswith("**Nothing to compare yet.**")
    arms(tmp_path / "results" / "demo", 0.0, n=40)
    run = run_notebook("83_ablation_grpo_vs_opd", run_dir=str(tmp_path / "b" / "83_ablation_grpo_vs_opd-1"))
    m = json.loads((run / "metrics.json").read_text())["metrics"]
    assert m["ablation/arms"]["value"] == 2 and "ablation/lift/grpo" in m
    assert [b["training run"] for b in json.loads((run / "budgets.json").read_text())] == [
        "40_grpo-1a1a1a1a",
        "50_opd-2b2b2b2b",
    ]
