"""The smoke pipeline end to end through the real runner: every notebook, twice with identical
metrics, complete lineage (every data version names every run that read it), and every notebook
opened afterwards the way JupyterLab opens it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nebula_utils.pipeline import load_pipeline
from nebula_utils.runner import run_pipeline
from tests.conftest import NOTEBOOKS, REPO, execute_notebook

SMOKE = REPO / "params" / "pipelines" / "smoke.yaml"


def science_metrics(run_dir: Path) -> dict:
    doc = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in doc["metrics"].items() if not k.startswith("timing/")}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, tiny_model_path):
    """The smoke pipeline, run once into a fresh results root."""
    root = tmp_path_factory.mktemp("results")
    pipeline = load_pipeline(SMOKE, root)
    status = run_pipeline(pipeline, echo=print)
    assert set(status.values()) == {"ran"}
    return pipeline


@pytest.mark.slow
def test_every_step_writes_its_files_and_the_report_renders(smoke):
    for step in smoke.steps:
        for name in ("notebook.ipynb", "config.yaml", "run.json", "metrics.json"):
            assert (step.run_dir / name).is_file(), f"{step.name}: {name} missing"
    html = (smoke.steps[0].run_dir.parent.parent / "reports" / "smoke.html").read_text()
    assert "base" in html and "sft" in html and "In&nbsp;[" not in html  # rows rendered, code hidden
    summary = json.loads((smoke.step("60_eval_sft").run_dir / "eval_summary.json").read_text())
    assert summary["benchmarks"] and all(
        (smoke.step("60_eval_sft").run_dir / b["path"]).is_file() for b in summary["benchmarks"].values()
    )


def _versions_named_by(config: dict) -> list[Path]:
    values = [v for k, v in config.items() if k not in ("run_dir", "run_id")]
    flat = [x for v in values for x in (v if isinstance(v, list) else [v])]
    return [Path(x) for x in flat if isinstance(x, str) and x and (Path(x) / "version.json").is_file()]


@pytest.mark.slow
def test_every_data_version_names_every_run_that_read_it(smoke):
    from nebula_utils.data.versions import read_manifests

    read_by: dict[Path, set[str]] = {}
    for step in smoke.steps:
        config = yaml.safe_load((step.run_dir / "config.yaml").read_text())
        for version in _versions_named_by(config):
            read_by.setdefault(version.resolve(), set()).add(step.run_id)
    assert len(read_by) >= 7, sorted(read_by)  # 11-16, 20 and the RL side all read versions
    for version, readers in read_by.items():
        recorded = {r["run_id"] for r in read_manifests(version)["consumption"]["records"]}
        assert readers <= recorded, f"{version}: read by {sorted(readers - recorded)} but not recorded"
    run_ids = {s.run_id for s in smoke.steps}
    for marker in smoke.steps[0].run_dir.parent.glob("*/*/version.json"):
        recorded = {r["run_id"] for r in read_manifests(marker.parent)["consumption"]["records"]}
        assert recorded <= run_ids, f"{marker.parent}: consumers {sorted(recorded - run_ids)} never ran"


# The rerun covers every seeded code path that draws random numbers (data generation and sampling,
# teacher generation, the classifier, SFT, GRPO rollouts, DPO, OPD, the fast evaluation) and what they
# read; KTO, RSFT, MOPD and the other evaluations reuse those trainers and samplers, and rerunning them
# too would add 13 of the 26 steps to CI's longest test.
RERUN = {"40_grpo", "31_dpo", "50_opd", "60_eval_sft"}


def with_upstream(pipeline, names: set[str]) -> list:
    needed = set(names)
    for step in reversed(pipeline.steps):
        if step.name in needed:
            needed |= set(step.upstream)
    return [s for s in pipeline.steps if s.name in needed]


@pytest.mark.slow
def test_a_rerun_into_a_fresh_root_gives_identical_metrics(smoke, tmp_path):
    """Same params, fresh results root: every non-timing metric is identical (seeded everywhere)."""
    second = load_pipeline(SMOKE, tmp_path)
    assert [s.run_id for s in second.steps] == [s.run_id for s in smoke.steps]
    second.steps = with_upstream(second, RERUN)
    assert {"11_distill", "12_filter", "13_difficulty", "16_curriculum", "20_sft"} <= {s.name for s in second.steps}
    run_pipeline(second, echo=print)
    for b in second.steps:
        assert science_metrics(smoke.step(b.name).run_dir) == science_metrics(b.run_dir), b.name


@pytest.mark.slow
def test_every_sft_checkpoint_lineage_runs_back_through_filter_and_distill(smoke):
    """report.lineage from each SFT stage's run folder: the walk through its data (and, for the
    later stages, its starting checkpoint) reaches a 12_filter and an 11_distill run."""
    from nebula_utils.report.lineage import iter_nodes, lineage

    for name in ("20_sft", "20_sft_complex", "20_sft_patch", "60_eval_sft_patch"):
        tree = lineage(smoke.step(name).run_dir)
        stages = {n.get("stage") for _, n in iter_nodes(tree) if n.get("kind") == "run"}
        assert {"11_distill", "12_filter", "14_classify_sample", "16_curriculum"} <= stages, (name, sorted(stages))
    patch = lineage(smoke.step("20_sft_patch").run_dir)
    assert "17_patch" in {n.get("stage") for _, n in iter_nodes(patch) if n.get("kind") == "run"}


# Notebooks opened as JupyterLab opens them: kernel cwd notebooks/, the notebook's own parameters
# cell, no input injected: an empty input resolves to the newest complete upstream output under the
# results root. The notebooks whose defaults are the demo scale (SmolLM2 generating or training
# for minutes) get only size knobs here, never their inputs; the others run with nothing injected.
SIZE_ONLY = {
    "11_distill": {"teacher": "tiny-random", "max_prompts": 2, "k": 2, "max_new_tokens": 8},
    "13_difficulty": {
        "policy": "tiny-random",
        "max_prompts": 2,
        "n_samples": 2,
        "max_new_tokens": 8,
        "pool_labels": ["hard", "medium"],
    },
    "14_classify_sample": {"classifier_per_class": 8, "random_baseline_seeds": 2},
    "17_patch": {"prompts_per_category": 1, "n_samples": 1, "max_new_tokens": 4},
    "20_sft": {"model": "tiny-random", "max_steps": 1, "max_length": 64},
    "60_eval": {"model": "tiny-random", "suite": "verifiable", "limit": 1, "max_gen_toks": 4},
    # the length guard off, as in smoke.yaml (tiny-random's answers are too short for any pair to pass it)
    "30_preference_data": {
        "policy": "tiny-random",
        "max_prompts": 2,
        "k": 2,
        "max_new_tokens": 8,
        "max_length_ratio": 0.0,
    },
    "31_dpo": {
        "model": "tiny-random",
        "max_steps": 1,
        "max_length": 128,
        "per_device_train_batch_size": 2,
        "audit": False,
    },
    "32_kto": {
        "model": "tiny-random",
        "max_steps": 1,
        "max_length": 128,
        "per_device_train_batch_size": 2,
        "audit": False,
    },
    "33_rsft": {
        "model": "tiny-random",
        "max_prompts": 2,
        "k": 2,
        "max_new_tokens": 8,
        "min_score": 0.0,
        "allow_truncated": True,
        "max_steps": 1,
        "max_length": 128,
        "per_device_train_batch_size": 2,
        "audit": False,
    },
    "50_opd": {
        "model": "tiny-random",
        "num_samples": 2,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 1,
        "max_completion_length": 4,
    },
    "51_mopd": {
        "model": "tiny-random",
        "num_samples": 2,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 1,
        "max_completion_length": 4,
    },
    "40_grpo": {
        "model": "tiny-random",
        "max_steps": 1,
        "num_generations": 2,
        "prompts_per_step": 2,
        "max_completion_length": 4,
        "heldout_prompts": 1,
        "heldout_samples": 1,
    },
}


NEWEST_INPUT = (
    "11_distill",
    "12_filter",
    "13_difficulty",
    "14_classify_sample",
    "15_decontam",
    "17_patch",
    "20_sft",
    "30_preference_data",
)
NEWEST_INPUT += ("31_dpo", "32_kto", "33_rsft", "50_opd")


@pytest.mark.slow
@pytest.mark.parametrize("stage", sorted(p.stem for p in NOTEBOOKS.glob("[0-9]*.ipynb")))
def test_notebook_runs_top_to_bottom_as_jupyterlab_opens_it(smoke, stage, tmp_path):
    import nbformat

    root = smoke.steps[0].run_dir.parent.parent
    out = execute_notebook(
        stage, tmp_path / f"{stage}.ipynb", SIZE_ONLY.get(stage, {}), cwd=NOTEBOOKS, env={"NEBULA_RESULTS": str(root)}
    )
    text = "\n".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", []))
    runs = sorted((root / "interactive").glob(f"{stage}-*/run.json"))
    assert runs and json.loads(runs[-1].read_text())["status"] == "complete"
    if stage in NEWEST_INPUT:
        assert "newest complete" in text, f"{stage} did not say which upstream output it read"


def test_smoke_plan_covers_grpo_through_the_runner(tmp_path):
    pipe = load_pipeline(SMOKE, tmp_path)
    grpo = pipe.step("40_grpo")
    assert grpo.upstream == ["16_curriculum"] and grpo.params["data"].endswith("/rl_pool")
    assert grpo.params["model"] == "tiny-random"  # from the base: shared by the SFT ablations
    p = grpo.params
    assert (p["max_steps"], p["num_generations"], p["prompts_per_step"], p["max_completion_length"]) == (2, 2, 2, 8)
