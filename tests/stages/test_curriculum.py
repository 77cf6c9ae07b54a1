"""Stage 16_curriculum: disjoint SFT mixes with balanced manifests and a change log; the RL pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset

from nebula_utils.config import ConfigError, merge_layers
from nebula_utils.data.manifests import processing_step
from nebula_utils.data.schema import normalize_row
from nebula_utils.data.versions import load_version, read_manifests, save_version
from nebula_utils.stages import stage_defaults
from nebula_utils.stages.curriculum import (
    CurriculumConfig,
    build_curriculum,
    build_rl_pool,
    changelog_table,
    complexity_table,
    task_counts,
)

TASKS = ["general_chat", "code", "math_reasoning", "complex_if", "safety"]


def _sft_version(path: Path, per_task: int = 10) -> Path:
    rows = [
        normalize_row(
            "sft",
            {
                "id": f"{t}-{i}",
                "source": "fixture",
                "license": "cc0",
                "task": t,
                "messages": [{"role": "user", "content": f"q {t} {i}"}, {"role": "assistant", "content": f"a {i}"}],
            },
        )
        for t in TASKS
        for i in range(per_task)
    ]
    step = processing_step("fixture", count_in=len(rows), count_out=len(rows))
    save_version(Dataset.from_list(rows), path, "sft", {"name": "fixture", "path": "tests", "license": "cc0"}, [step])
    return path


def _rl_version(path: Path) -> Path:
    bands = ["easy", "medium", "medium", "hard", None]
    rows = [
        normalize_row(
            "rl",
            {
                "id": f"p{i}",
                "source": "fixture",
                "license": "cc0",
                "task": "math_reasoning",
                "prompt": f"What is {i}+1?",
                "messages": [{"role": "user", "content": f"What is {i}+1?"}],
                "verifier": "math",
                "reference": {"answer": str(i + 1)},
                "difficulty": bands[i % 5],
            },
        )
        for i in range(20)
    ]
    step = processing_step("fixture", count_in=20, count_out=20)
    save_version(Dataset.from_list(rows), path, "rl", {"name": "fixture", "path": "tests", "license": "cc0"}, [step])
    return path


def _config(tmp_path: Path, **over) -> CurriculumConfig:
    values = merge_layers(CurriculumConfig, "16_curriculum", stage_defaults("16_curriculum"))
    values |= {"data": str(_sft_version(tmp_path / "sft")), "run_dir": "", "run_id": ""} | over
    return CurriculumConfig(**values)


THREE = {
    "mixes": ["base", "complex", "patch"],
    "mix_tasks": {
        "base": [],
        "complex": ["complex_if", "code", "math_reasoning"],
        "patch": ["safety", "general_chat"],
    },
    "mix_difficulties": {"base": [], "complex": [], "patch": []},
    "mix_shares": {"base": 0.6, "complex": 0.3, "patch": 0.1},
    "mix_complexity": {},
}


def test_mixes_are_disjoint_follow_their_tasks_and_balance(tmp_path):
    cfg = _config(tmp_path, **THREE)
    infos = build_curriculum(cfg, tmp_path / "out")
    ids = {name: set(load_version(info.path)["id"]) for name, info in infos.items()}
    assert (
        not (ids["base"] & ids["complex"]) and not (ids["complex"] & ids["patch"]) and not (ids["base"] & ids["patch"])
    )
    assert set(load_version(infos["complex"].path)["task"]) <= {"complex_if", "code", "math_reasoning"}
    # base: 0.6 * 50 = 30 rows, 6 per task; complex wants 15 rows over 3 tasks = 5 each, but
    # only 10 - 6 = 4 per task are left after base (exclusive), so it takes 4 of each.
    counts = task_counts(infos)
    assert counts["base"].sum() == 30 and set(counts["base"]) == {6}
    assert counts.loc[["code", "complex_if", "math_reasoning"], "complex"].tolist() == [4, 4, 4]
    for info in infos.values():
        steps = read_manifests(info.path)["processing"]["steps"]
        select, mix = steps[-2], steps[-1]
        assert select["count_in"] == 50 == select["count_out"] + sum(select["drop_reasons"].values())
        assert mix["count_out"] == info.num_rows
    log = changelog_table(infos)
    assert set(log["mix"]) == {"complex", "patch"} and "curriculum stage 2 of 3" in log["reason"].iloc[0]


def ifeval(n: int) -> dict:
    ids = ["punctuation:no_comma", "change_case:english_lowercase", "length_constraints:number_words"]
    kwargs = [{}, {}, {"relation": "less than", "num_words": 50}]
    return {"instruction_id_list": ids[:n], "kwargs": kwargs[:n], "prompt": "p"}


def steps(n: int) -> str:
    return "\n".join(f"{k} + 1 = {k + 1}" for k in range(n)) + f"\nThe final answer is $\\boxed{{{n}}}$."


# a 5-statement solution (a loop with a counter and a condition) vs the one-line `return 1`
LOOP = "```python\ndef f(xs):\n    n = 0\n    for x in xs:\n        if x > 0:\n            n += x\n    return n\n```"


def _mixed_version(path: Path) -> Path:
    """50 rows of five capabilities; half the IF rows carry 3 instructions (else 1), half the code
    rows a 5-statement solution (else 1), half the math rows a 4-step worked answer (else 1 step),
    two safety rows are labelled hard."""
    rows = []
    for i in range(10):
        many = i % 2 == 0
        rows += [
            {"task": "complex_if", "verifier": "ifeval", "reference": ifeval(3 if many else 1), "answer": "ok"},
            {"task": "code", "answer": LOOP if many else "```python\ndef f():\n    return 1\n```"},
            {
                "task": "math_reasoning",
                "verifier": "math",
                "reference": {"answer": "4"},
                "answer": steps(4 if many else 1),
            },
            {"task": "general_chat", "answer": "hello"},
            {"task": "safety", "answer": "I can't help with that.", "difficulty": "hard" if i < 2 else None},
        ]
    rows = [
        normalize_row(
            "sft",
            {k: v for k, v in r.items() if k != "answer"}
            | {
                "id": f"{r['task']}-{n}",
                "source": "fixture",
                "license": "cc0",
                "messages": [{"role": "user", "content": f"q {n}"}, {"role": "assistant", "content": r["answer"]}],
            },
        )
        for n, r in enumerate(rows)
    ]
    step = processing_step("fixture", count_in=len(rows), count_out=len(rows))
    save_version(Dataset.from_list(rows), path, "sft", {"name": "fixture", "path": "tests", "license": "cc0"}, [step])
    return path


def test_complex_mix_holds_the_hard_rows_of_every_capability(tmp_path):
    """Defaults (base + complex): the complex mix chooses first and takes only multi-constraint IF,
    code and multi-step math, balanced over the three; base gets the rest; both steps balance."""
    cfg = _config(tmp_path, data=str(_mixed_version(tmp_path / "mixed")))
    assert cfg.mixes == ["base", "complex"] and stage_complexity(cfg)["complex"] == "complex"
    infos = build_curriculum(cfg, tmp_path / "out")
    complex_rows = list(load_version(infos["complex"].path))
    base_ids = set(load_version(infos["base"].path)["id"])
    # 0.4 * 50 = 20 rows wanted; 5 of each capability are complex, so it takes all 15
    assert sorted({r["task"] for r in complex_rows}) == ["code", "complex_if", "math_reasoning"]
    assert len(complex_rows) == 15 and not base_ids & {r["id"] for r in complex_rows}
    for row in complex_rows:
        if row["task"] == "complex_if":
            assert len(json.loads(row["reference"])["instruction_id_list"]) == 3
        if row["task"] == "math_reasoning":
            assert row["messages"][-1]["content"].count(" = ") == 4
        if row["task"] == "code":
            assert row["messages"][-1]["content"] == LOOP
    select = read_manifests(infos["complex"].path)["processing"]["steps"][-2]
    assert select["params"]["complex_by"] == {"code_statements": 5, "if_instructions": 5, "math_steps": 5}
    assert select["drop_reasons"] == {"not_complex": 15, "task_not_in_mix": 20}
    # base (chosen second, trained first) takes 0.6 * 50 = 30 of the 35 rows left: equal shares of
    # 6, the three tasks with 5 simple rows give their spare quota to chat and safety
    base_select = read_manifests(infos["base"].path)["processing"]["steps"][-2]
    assert len(base_ids) == 30 and base_select["drop_reasons"] == {"taken_by_earlier_mix": 15}
    assert task_counts({"base": infos["base"]})["base"].to_dict() == {
        "code": 5,
        "complex_if": 5,
        "general_chat": 8,
        "math_reasoning": 5,
        "safety": 7,
    }
    kinds = complexity_table(cfg)
    assert kinds.loc["safety", "difficulty"] == 2 and kinds.loc["general_chat", "simple"] == 10


def test_bad_complexity_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="mix_complexity"):
        _config(tmp_path, mix_complexity={"complex": "hardest"})
    with pytest.raises(ConfigError, match="mix_complexity"):
        _config(tmp_path, mix_complexity={"patch": "complex"})


def stage_complexity(cfg: CurriculumConfig) -> dict[str, str]:
    return {m: cfg.mix_complexity.get(m, "any") for m in cfg.mixes}


def test_non_exclusive_mixes_may_share_rows(tmp_path):
    infos = build_curriculum(_config(tmp_path, exclusive=False, **THREE), tmp_path / "out")
    assert set(load_version(infos["base"].path)["id"]) & set(load_version(infos["complex"].path)["id"])


def test_rl_pool_keeps_medium_prompts_and_requires_labels(tmp_path):
    cfg = _config(tmp_path, rl_data=str(_rl_version(tmp_path / "rl")))
    info = build_rl_pool(cfg, tmp_path / "pool")
    assert set(load_version(info.path)["difficulty"]) == {"medium"} and info.num_rows == 8
    select = read_manifests(info.path)["processing"]["steps"][-2]
    assert select["drop_reasons"] == {"difficulty_not_in_mix": 12}
    unlabelled = _config(tmp_path / "u", rl_data=str(_sft_like_unlabelled_rl(tmp_path / "u" / "rl")))
    with pytest.raises(ValueError, match="13_difficulty"):
        build_rl_pool(unlabelled, tmp_path / "pool2")


def _sft_like_unlabelled_rl(path: Path) -> Path:
    rows = [
        normalize_row(
            "rl",
            {
                "id": f"u{i}",
                "source": "fixture",
                "license": "cc0",
                "task": "math_reasoning",
                "prompt": "1+1?",
                "messages": [{"role": "user", "content": "1+1?"}],
                "verifier": "math",
                "reference": {"answer": "2"},
            },
        )
        for i in range(3)
    ]
    save_version(
        Dataset.from_list(rows),
        path,
        "rl",
        {"name": "fixture", "path": "tests", "license": "cc0"},
        [processing_step("fixture", count_in=3, count_out=3)],
    )
    return path


def test_every_mix_needs_its_table_entries(tmp_path):
    with pytest.raises(ConfigError, match="mix_shares"):
        _config(tmp_path, mix_shares={"base": 1.0})


@pytest.mark.slow
def test_notebook_runs_and_records_both_inputs(tmp_path, run_notebook):
    sft, rl = _mixed_version(tmp_path / "sft"), _rl_version(tmp_path / "rl")
    run = run_notebook("16_curriculum", data=str(sft), rl_data=str(rl))
    assert (run / "rl_pool" / "version.json").is_file()
    for mix in ("base", "complex"):
        assert read_manifests(run / mix)["version"]["num_rows"] > 0
    for version in (sft, rl):
        assert [r["stage"] for r in read_manifests(version)["consumption"]["records"]] == ["16_curriculum"]


def test_if_rows_with_two_constraints_go_to_the_complex_mix(tmp_path):
    """Real rows: of 10_data_sft_mix's 64 default IF prompts the 18 with two constraints are complex
    (the 46 with one are not); after 12_filter keeps a teacher answer for a one- and a two-constraint
    prompt, 16_curriculum's defaults put the two-constraint row in the complex mix, the other in base."""
    from nebula_utils.stages.curriculum import complexity_of
    from tests.factories import if_filter_run

    run, ids = if_filter_run(tmp_path / "if")
    prompts = load_version(tmp_path / "if" / "sft")
    cfg = _config(tmp_path, data=str(run / "sft"))
    why = complexity_of(cfg, prompts)
    counts = [len(json.loads(r)["instruction_id_list"]) for r in prompts["reference"]]
    assert sorted(set(why)) == ["", "if_instructions:2"] and why.count("if_instructions:2") == counts.count(2) == 18
    assert all((w != "") == (n >= 2) for w, n in zip(why, counts))
    infos = build_curriculum(cfg, tmp_path / "out")
    assert list(load_version(infos["complex"].path)["id"]) == [ids["two"]]
    assert list(load_version(infos["base"].path)["id"]) == [ids["pass"]]
