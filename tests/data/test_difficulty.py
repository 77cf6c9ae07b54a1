"""Difficulty grading: bin edges, labels, pass rates from verifier-scored samples, the pool."""

from __future__ import annotations

import json

import pytest

from nebula_utils.data.difficulty import BINS, difficulty_label, grade, pass_rate_bin
from nebula_utils.inference.generation import Completion, SamplingParams


@pytest.mark.parametrize(
    "rate, expected",
    [
        (0.0, "0"),
        (1e-9, "(0,.25]"),
        (0.25, "(0,.25]"),
        (0.2500001, "(.25,.5]"),
        (0.5, "(.25,.5]"),
        (0.5000001, "(.5,.75]"),
        (0.75, "(.5,.75]"),
        (0.7500001, "(.75,1)"),
        (0.9999999, "(.75,1)"),
        (1.0, "1"),
    ],
)
def test_bin_edges(rate, expected):
    assert pass_rate_bin(rate) == expected and expected in BINS


@pytest.mark.parametrize(
    "rate, expected",
    [(0.0, "hard"), (0.25, "hard"), (0.26, "medium"), (0.75, "medium"), (0.76, "easy"), (1.0, "easy")],
)
def test_labels(rate, expected):
    assert difficulty_label(rate, 0.25, 0.75) == expected


def test_bad_rates_and_thresholds_raise():
    with pytest.raises(ValueError):
        pass_rate_bin(1.5)
    with pytest.raises(ValueError):
        difficulty_label(0.5, hard_at_most=0.8, easy_above=0.2)


class ScriptedPolicy:
    """A reference policy whose answers are given per prompt (cycled over the n samples)."""

    model_spec = "scripted"

    def __init__(self, answers):
        self.answers = answers

    def generate_full(self, prompts, params):
        return [
            [
                Completion(self.answers[p[-1]["content"]][i % len(self.answers[p[-1]["content"]])], "stop", 3)
                for i in range(params.n)
            ]
            for p in prompts
        ]

    def spec(self):
        return {"backend": "scripted", "model": self.model_spec}


def rl_row(rid, question, answer):
    return {
        "id": rid,
        "source": "t",
        "license": "MIT",
        "task": "math_reasoning",
        "prompt": question,
        "messages": [{"role": "user", "content": question}],
        "verifier": "math",
        "reference": json.dumps({"answer": answer}),
        "pass_rate": None,
        "difficulty": None,
        "parents": [],
    }


ROWS = [
    rl_row("always", "1+1?", "2"),
    rl_row("half", "2+2?", "4"),
    rl_row("quarter", "3+3?", "6"),
    rl_row("never", "4+4?", "8"),
    rl_row("broken", "5+5?", "10"),
]
POLICY = ScriptedPolicy(
    {
        "1+1?": ["\\boxed{2}"],
        "2+2?": ["\\boxed{4}", "\\boxed{5}"],
        "3+3?": ["\\boxed{6}", "\\boxed{1}", "\\boxed{1}", "\\boxed{1}"],
        "4+4?": ["\\boxed{9}"],
        "5+5?": ["\\boxed{10}"],
    }
)


def graded_rows():
    rows = [dict(r) for r in ROWS]
    rows[-1]["verifier"] = "ifeval"
    rows[-1]["reference"] = json.dumps({"instruction_id_list": ["no:such_check"], "kwargs": [{}], "prompt": "x"})
    return grade(POLICY, rows, SamplingParams(n=4, temperature=1.0), hard_at_most=0.25, easy_above=0.75)


def test_pass_rates_labels_and_quarantine():
    graded = graded_rows()
    assert {r["id"]: (r["pass_rate"], r["difficulty"]) for r in graded.rows} == {
        "always": (1.0, "easy"),
        "half": (0.5, "medium"),
        "quarter": (0.25, "hard"),
        "never": (0.0, "hard"),
    }
    assert [q["id"] for q in graded.quarantined] == ["broken"] and "invalid_reference" in graded.quarantined[0][
        "reason"
    ]
    assert [s["bin"] for s in graded.samples] == ["1", "(.25,.5]", "(0,.25]", "0"]


def test_pool_version_counts_balance(tmp_path):
    from nebula_utils.data.manifests import processing_step
    from nebula_utils.data.schema import to_dataset
    from nebula_utils.data.versions import load_version, read_manifests, save_version
    from nebula_utils.stages.difficulty import DifficultyConfig, bin_table, write_versions

    rows = [dict(r) for r in ROWS]
    save_version(
        to_dataset("rl", rows),
        tmp_path / "in",
        "rl",
        {"name": "t", "path": "x", "license": "MIT"},
        [processing_step("gen", count_in=5, count_out=5)],
    )
    cfg = DifficultyConfig(
        seed=0,
        device="cpu",
        num_threads=1,
        run_dir="",
        run_id="",
        data=str(tmp_path / "in"),
        max_prompts=0,
        policy="scripted",
        backend="auto",
        batch_size=1,
        tensor_parallel_size=1,
        n_samples=4,
        temperature=1.0,
        top_p=1.0,
        max_new_tokens=8,
        hard_at_most=0.25,
        easy_above=0.75,
        pool_labels=["medium"],
        verifier_workers=1,
    )
    select = processing_step("select", count_in=5, count_out=5)
    infos = write_versions(cfg, graded_rows(), select, POLICY, tmp_path / "run")
    steps = read_manifests(infos["rl"].path)["processing"]["steps"]
    grade_step, pool_step = steps[-2], steps[-1]
    assert (grade_step["count_in"], grade_step["count_out"], grade_step["quarantined"]) == (5, 4, 1)
    assert pool_step["drop_reasons"] == {"difficulty:easy": 1, "difficulty:hard": 2} and pool_step["count_out"] == 1
    assert load_version(infos["rl"].path)["id"] == ["half"]
    assert sorted(load_version(infos["graded"].path)["difficulty"]) == ["easy", "hard", "hard", "medium"]
    assert bin_table(graded_rows()).sum().sum() == 4
