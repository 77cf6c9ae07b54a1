"""Stage 16_curriculum: disjoint SFT mixes with balanced manifests and a change log; the RL pool."""

from __future__ import annotations

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


def test_mixes_are_disjoint_follow_their_tasks_and_balance(tmp_path):
    cfg = _config(tmp_path)
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


def test_non_exclusive_mixes_may_share_rows(tmp_path):
    infos = build_curriculum(_config(tmp_path, exclusive=False), tmp_path / "out")
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
    sft, rl = _sft_version(tmp_path / "sft"), _rl_version(tmp_path / "rl")
    run = run_notebook("16_curriculum", data=str(sft), rl_data=str(rl))
    assert (run / "rl_pool" / "version.json").is_file()
    for mix in ("base", "complex", "patch"):
        assert read_manifests(run / mix)["version"]["num_rows"] > 0
    for version in (sft, rl):
        assert [r["stage"] for r in read_manifests(version)["consumption"]["records"]] == ["16_curriculum"]
