"""Papermill runs of 11_distill -> 12_filter and 13_difficulty on tiny-random with smoke params."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The smoke.yaml step params for each stage (data paths are filled in per test).
SMOKE = {
    "11_distill": {
        "teacher": "tiny-random",
        "max_prompts": 4,
        "k": 2,
        "max_new_tokens": 16,
        "synthesis": "magpie",
        "synth_n": 2,
        "synth_max_new_tokens": 16,
        "synth_allow_truncated": True,
    },
    "12_filter": {},
    "13_difficulty": {
        "policy": "tiny-random",
        "max_prompts": 4,
        "n_samples": 2,
        "max_new_tokens": 16,
        "pool_labels": ["hard", "medium"],
    },
}


@pytest.fixture(scope="module")
def mix_dir(tmp_path_factory, tiny_model_path):
    """A small 10_data_sft_mix output (sft + rl versions), built with the stage's own functions."""
    from nebula_utils.data.mixing import write_mixed_version as write_mix
    from nebula_utils.stages.data_sft_mix import SFTMixConfig, rl_parts, sft_parts

    out = tmp_path_factory.mktemp("mix")
    cfg = SFTMixConfig(
        seed=0,
        device="cpu",
        num_threads=1,
        run_dir="",
        run_id="",
        sft_math_tasks=["chain_sum"],
        sft_math_per_task=3,
        sft_code_n=2,
        rl_math_tasks=["chain_sum"],
        rl_math_per_task=3,
        rl_ifeval_n=2,
        rl_ifeval_max_instructions=1,
        rl_code_n=2,
        shared_data_dir="",
        shared_per_source=0,
    )
    write_mix(sft_parts(cfg, out / "quarantine"), "sft", out / "sft", 0, name="sft")
    write_mix(rl_parts(cfg), "rl", out / "rl", 0, name="rl")
    return out


def execute(stage: str, run_dir: Path, **params) -> float:
    import papermill

    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    papermill.execute_notebook(
        str(REPO / "notebooks" / f"{stage}.ipynb"),
        str(run_dir / "out.ipynb"),
        parameters=SMOKE[stage] | params | {"run_dir": str(run_dir), "device": "cpu"},
        cwd=str(REPO),
        kernel_name="python3",
        progress_bar=False,
    )
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"
    return time.perf_counter() - start


def balanced(path: Path) -> list[dict]:
    from nebula_utils.data.versions import read_manifests

    steps = read_manifests(path)["processing"]["steps"]
    assert all(
        s["count_in"]
        == s["count_out"] + s["filtered"] + s["quarantined"]
        == s["count_out"] + sum(s["drop_reasons"].values())
        for s in steps
    )
    return steps


@pytest.mark.slow
def test_distill_then_filter_notebooks(mix_dir, tmp_path):
    from nebula_utils.data.versions import load_version, read_manifests

    seconds = execute("11_distill", tmp_path / "11", data=str(mix_dir / "sft"))
    distill = tmp_path / "11" / "distill"
    steps = balanced(distill)
    assert [s["name"] for s in steps[-3:]] == ["select", "synthesize:magpie", "distill"]
    groups = load_version(distill, verify=True)
    assert len(groups) == 4 + steps[-2]["count_out"]
    assert all(len(c) >= 2 for c in groups["candidates"])
    assert read_manifests(mix_dir / "sft")["consumption"]["records"][-1]["stage"] == "11_distill"
    assert (tmp_path / "11" / "distill_candidates.png").stat().st_size > 5_000
    assert seconds < 60, f"11_distill took {seconds:.0f} s"

    seconds = execute("12_filter", tmp_path / "12", data=str(distill))
    for version in ("sft", "preference"):
        step = balanced(tmp_path / "12" / version)[-1]
        assert step["count_in"] == len(groups)
    sft_step = balanced(tmp_path / "12" / "sft")[-1]
    dropped = (tmp_path / "12" / "dropped.jsonl").read_text().splitlines()
    assert len(dropped) == sft_step["filtered"] and sum(sft_step["drop_reasons"].values()) == len(dropped)
    assert (tmp_path / "12" / "filter_funnel.png").stat().st_size > 10_000
    metrics = json.loads((tmp_path / "12" / "metrics.json").read_text())["metrics"]
    assert metrics["groups_in"]["value"] == len(groups)
    assert seconds < 60, f"12_filter took {seconds:.0f} s"


@pytest.mark.slow
def test_difficulty_notebook(mix_dir, tmp_path):
    from nebula_utils.data.versions import load_version

    seconds = execute("13_difficulty", tmp_path / "13", data=str(mix_dir / "rl"))
    graded = load_version(tmp_path / "13" / "graded", verify=True)
    assert len(graded) == 4 and all(r is not None for r in graded["pass_rate"])
    pool_step = balanced(tmp_path / "13" / "rl")[-1]
    assert pool_step["name"] == "select_pool" and pool_step["count_in"] == 4
    pool = load_version(tmp_path / "13" / "rl")
    assert set(pool["difficulty"]) <= {"hard", "medium"} and len(pool) == pool_step["count_out"]
    assert (tmp_path / "13" / "pass_rates.png").stat().st_size > 10_000
    assert seconds < 60, f"13_difficulty took {seconds:.0f} s"
