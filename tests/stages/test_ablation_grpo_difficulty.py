"""Stage 82_ablation_grpo_difficulty: config checks, the conclusion written from the intervals, and
the notebook through papermill on fixture run folders shaped as the ablation writes them (a
starting-model eval run, one 40_grpo run and one 60_eval run of its model per band)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.report.run_folders import write_eval, write_run

BENCHES = ("rg_chain_sum", "rg_leg_counting")


def correlated(base: np.ndarray, rate: float, rng: np.random.Generator, keep: float = 0.7) -> np.ndarray:
    """A later checkpoint's item scores: an item keeps its base outcome with probability `keep`."""
    fresh = (rng.random(base.size) < rate).astype(float)
    return np.where(rng.random(base.size) < keep, base, fresh)


def ablation_folders(root: Path, rates: dict[str, float], n: int = 200) -> dict[str, object]:
    """results/grpo_difficulty/: the base eval and, per band, a 40_grpo run + the eval of its model."""
    rng = np.random.default_rng(0)
    base_scores = {b: (rng.random(n) < 0.30).astype(float) for b in BENCHES}
    base = write_eval(root / "60_eval-base0000", "packaged:smollm2-135m-instruct", base_scores)
    evals = {}
    for i, (band, rate) in enumerate(rates.items()):
        train = root / f"40_grpo-{band[:4]}{i:04d}"
        zero = {"easy": 0.8, "medium": 0.3, "hard": 0.9}.get(band, 0.5)
        log = [
            {"step": s, "loss": 0.01, "reward": 0.2 + 0.05 * s, "zero_variance/frac_groups": zero} for s in (1, 2, 3)
        ]
        metrics = {
            "train/prompts": {"value": 12, "n": 12},
            "train/zero_variance_frac_mean": {"value": zero, "n": 3},
            "train/reward_first": {"value": 0.25, "n": 1},
            "train/reward_last": {"value": 0.35, "n": 1},
        }
        config = {
            "model": "packaged:smollm2-135m-instruct",
            "difficulties": [band],
            "max_steps": 3,
            "prompts_per_step": 4,
            "num_generations": 4,
        }
        write_run(train, "40_grpo", config, metrics)
        (train / "train_log.json").write_text(json.dumps(log + [{"step": 3, "train_runtime": 9.0}]))
        (train / "model").mkdir()
        (train / "model" / "config.json").write_text("{}")
        scores = {b: correlated(base_scores[b], rate, rng) for b in BENCHES}
        evals[band] = write_eval(root / f"60_eval-{band[:4]}{i:04d}", str(train / "model"), scores, seed=i + 1)
    return {"base": base, **evals}


@pytest.mark.parametrize(
    "over,match",
    [
        ({"runs": ["a", "b"], "labels": ["easy"]}, "key 'labels'"),
        ({"labels": ["base"], "runs": ["a"]}, "key 'labels'"),
        ({"report_name": "a/b"}, "key 'report_name'"),
        ({"target_effect": 0.0}, "key 'target_effect'"),
        ({"bootstrap_resamples": 10}, "key 'bootstrap_resamples'"),
    ],
)
def test_bad_values_fail_when_the_config_is_built(stage_config, over, match):
    from nebula_utils.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        stage_config("82_ablation_grpo_difficulty", **over)


def test_the_runner_renders_it_beside_the_other_reports(tmp_path):
    from nebula_utils.stages.ablation_grpo_difficulty import AblationGRPODifficultyConfig

    run_dir = tmp_path / "results" / "grpo_difficulty" / "82_ablation_grpo_difficulty-abc"
    out = AblationGRPODifficultyConfig.html_report_path({"report_name": "grpo_difficulty", "run_dir": str(run_dir)})
    assert out == tmp_path / "results" / "reports" / "grpo_difficulty.html"


def test_conclusion_reads_the_intervals(tmp_path):
    from nebula_utils.report import compare as rp
    from nebula_utils.stages import ablation_grpo_difficulty as ab

    # the same rate for every band: nothing detectable, and the text says how small a change could show
    runs = ablation_folders(tmp_path / "flat", {"easy": 0.30, "medium": 0.30, "hard": 0.30}, n=60)
    rows = [rp.load_run(runs[k], k) for k in ("base", "easy", "medium", "hard")]
    lift = rp.comparison(rows, "base", 200, 0, ab.CLAIM_EFFECT)
    pairwise = rp.comparison(rows[1:], "medium", 200, 0, ab.CLAIM_EFFECT)
    text = ab.conclusion(lift, pairwise, "medium")
    assert "**Not detectable at this scale**" in text and "items per benchmark" in text
    assert "**easy** − **medium**" in text and "**hard** vs the starting model" in text
    assert "ranking (medium is the best band at this budget): not established" in text
    assert "cannot be checked" in ab.conclusion(None, pairwise, "medium")
    metrics = ab.ablation_metrics(lift, pairwise)
    assert set(metrics) >= {"ablation/lift/medium", "ablation/pairwise/easy", "ablation/lift_mde/medium"}
    assert metrics["ablation/lift/medium"]["n"] == 120  # 60 items x 2 benchmarks, paired


@pytest.mark.slow
def test_notebook_on_fixture_runs(tmp_path, run_notebook):
    runs = ablation_folders(tmp_path / "results" / "grpo_difficulty", {"easy": 0.32, "medium": 0.55, "hard": 0.28})
    run = run_notebook(
        "82_ablation_grpo_difficulty",
        run_dir=tmp_path / "results" / "grpo_difficulty" / "82_ablation_grpo_difficulty-test",
        runs=[str(runs[b]) for b in ("easy", "medium", "hard")],
        labels=["easy", "medium", "hard"],
        base_run=str(runs["base"]),
        bootstrap_resamples=200,
    )
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["ablation/variants"]["value"] == 3
    lift = metrics["ablation/lift/medium"]
    assert lift["ci95"][0] > 0 and lift["n"] == 400  # medium clearly lifts (0.30 -> ~0.47 on 2 x 200 items)
    assert metrics["ablation/pairwise/easy"]["ci95"][1] < 0  # easy is below medium
    assert (run / "pairwise.csv").is_file() and (run / "lift.csv").is_file()
    text = json.dumps(json.loads((run.parent / f"{run.name}.ipynb").read_text()))
    assert "Reproduced in direction" in text and "equal budget: yes, 48 completions per band" in text
    assert "supported: medium is detectably above easy, hard" in text
    assert "The paper's claim" in text and "73.88" in text


def test_opened_as_is_it_reads_the_newest_finished_ablation(tmp_path, monkeypatch, stage_config):
    from nebula_utils.runner import ablation_record
    from nebula_utils.stages import ablation_grpo_difficulty as ab

    root = tmp_path / "results"
    monkeypatch.setenv("NEBULA_RESULTS", str(root))
    cfg = stage_config("82_ablation_grpo_difficulty")
    assert ab.find_ablation_runs(root) is None and ab.load_variants(cfg) == ([], [])  # the notebook says so
    runs = ablation_folders(root / "demo", {"easy": 0.3, "medium": 0.4, "hard": 0.3}, n=20)
    steps = {b: {ab.EVAL_STEP: runs[b].name, ab.BASE_STEP: runs["base"].name} for b in ("easy", "medium", "hard")}
    variants = [{"label": b, "point": {"40_grpo_reasoning.difficulties": [b]}, "steps": s} for b, s in steps.items()]
    record = ablation_record(root / "demo", "params/ablations/grpo_difficulty.yaml")  # where the runner writes
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"variants": variants}))
    assert ab.find_ablation_runs(root) == (
        [str(runs[b]) for b in ("easy", "medium", "hard")],
        ["easy", "medium", "hard"],
        str(runs["base"]),
    )
    bands, rows = ab.load_variants(cfg)
    assert [r.label for r in rows] == ["base", "easy", "medium", "hard"] and len(bands) == 3
