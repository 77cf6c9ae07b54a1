"""The full-scale recipes (params/pipelines/nebula8b_*.yaml, tulu3_8b.yaml): every step validates
through `nebula run --plan` and `nebula plan` (no download: model configs come from the planner's
table of published configs), the published hyper-parameters are the ones the comments cite, and
every value a recipe sets carries a comment saying where it comes from."""

from __future__ import annotations

import re

import pytest

from nebula_utils.cli import main
from nebula_utils.config import RUNTIME_KEYS
from nebula_utils.launch.planner import GIB, Hardware, plan_pipeline
from nebula_utils.paths import PARAMS_DIR
from nebula_utils.pipeline import load_pipeline
from nebula_utils.train.batch import split_global_batch

RECIPES = ["nebula8b_instruct", "nebula8b_reasoning", "nebula8b_opd", "nebula8b_mopd", "tulu3_8b"]


def path(name: str) -> str:
    return str(PARAMS_DIR / "pipelines" / f"{name}.yaml")


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_validates_with_run_plan_and_nebula_plan(name, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["run", path(name), "--plan", "--results", str(tmp_path)]) == 0
    assert main(["plan", path(name), "--results", str(tmp_path), "--check"]) == 0  # every step fits 8 x 80 GB
    out = capsys.readouterr().out
    assert "config error" not in out
    assert re.search(r"(Qwen/Qwen3-8B-Base|meta-llama/Llama-3\.1-8B): 8,\d{3},\d{3},\d{3} parameters", out)


def steps(name: str, tmp_path) -> dict:
    return {s.name: s.params for s in load_pipeline(path(name), tmp_path).steps}


def test_tulu3_values_are_the_published_ones(tmp_path):
    s = steps("tulu3_8b", tmp_path)
    sft, dpo, rl = s["20_sft_tulu3"], s["31_dpo_tulu3"], s["40_grpo_tulu3"]
    assert s["00_environment"]["models"] == ["meta-llama/Llama-3.1-8B"]
    assert (sft["learning_rate"], sft["num_train_epochs"], sft["max_length"]) == (5e-6, 2.0, 4096)
    assert (sft["lr_scheduler_type"], sft["warmup_ratio"]) == ("linear", 0.03)
    assert sft["global_batch_size"] == 128  # accumulation derived: 128 / (1 x 8 GPUs) = 16
    assert split_global_batch(128, sft["per_device_train_batch_size"], Hardware().world) == 16
    assert (dpo["loss_type"], dpo["beta"], dpo["learning_rate"], dpo["max_length"]) == (
        "sigmoid_norm",
        5.0,
        5e-7,
        2048,
    )
    assert (dpo["num_train_epochs"], dpo["warmup_ratio"]) == (1.0, 0.1)
    assert dpo["global_batch_size"] == 128
    assert (rl["beta"], rl["learning_rate"]) == (0.05, 3e-7)


def test_distillation_budgets_are_the_papers(tmp_path):
    assert steps("nebula8b_opd", tmp_path)["50_opd"]["num_samples"] == 4096  # "4K samples"
    mopd = steps("nebula8b_mopd", tmp_path)["51_mopd"]
    assert mopd["num_samples"] == 10240  # "10K samples", as 4K = 4096
    teachers = {mopd["teacher"], *mopd["teachers"].values()}
    assert len(teachers) == 4 and mopd["model"] not in teachers  # four domain teachers, none the student


def test_shared_steps_have_one_run_id_across_recipes(tmp_path):
    ids = {}
    for name in RECIPES:
        for step in load_pipeline(path(name), tmp_path).steps:
            if step.name in ("10_data_sft_mix", "13_difficulty", "11_distill", "15_decontam"):
                ids.setdefault(step.name, set()).add(step.run_id)
    assert ids and all(len(v) == 1 for v in ids.values()), ids  # the data is curated once for all recipes


def test_8b_sft_step_plans_like_the_readme_says(tmp_path):
    plans = {p.step: p for p in plan_pipeline(path("nebula8b_instruct"), Hardware(), tmp_path)}
    sft = plans["20_sft_base"]
    assert sft.model["params"] == 8_190_735_360
    assert sft.memory["total"] / GIB == pytest.approx(26.2, abs=0.5)  # README: about 26 GiB per GPU
    assert sft.fits


@pytest.mark.parametrize("name", RECIPES)
def test_every_value_a_recipe_sets_says_where_it_comes_from(name):
    """A step's param line with a literal value carries a comment (a source or "our choice"),
    except references to other steps, names, and lines marked as repeating another recipe."""
    text = (PARAMS_DIR / "pipelines" / f"{name}.yaml").read_text(encoding="utf-8")
    repeated = False
    bare = []
    for line in text.splitlines():
        if re.match(r"\s+- notebook:", line):
            repeated = "same params as" in line
        m = re.match(r"\s{6,}([a-z_]+): (.+)$", line)
        if not m or repeated or line.lstrip().startswith("#"):
            continue
        key, value = m.groups()
        if (
            "#" in value
            or key in RUNTIME_KEYS
            or key in ("data", "model", "name", "runs", "labels", "report_name", "baseline")
        ):
            continue
        if value.startswith(('"@', "&", "{<<", "<<")) or key in ("params",):
            continue
        bare.append(line.strip())
    assert not bare, f"{name}: values without a source comment: {bare}"


def test_training_steps_launch_on_8_gpus_and_the_launcher_leaves_run_ids_alone(tmp_path):
    """The 8B recipes launch their training steps with the 8-GPU ZeRO-3 config; a file that extends
    one with `launcher: ""` (in the kernel, one GPU) keeps every run id: one run id at every scale."""
    recipe = load_pipeline(path("nebula8b_opd"), tmp_path)
    launched = {s.name: s.params["launcher"] for s in recipe.steps if "launcher" in s.params}
    trained = ("20_sft_base", "20_sft_complex", "20_sft_patch", "40_grpo_instruct", "50_opd")
    assert launched == {n: "params/accelerate/8gpu_zero3.yaml" for n in trained}
    local = tmp_path / "local.yaml"
    local.write_text(f'extends: {path("nebula8b_opd")}\ndefaults: {{launcher: ""}}\n', encoding="utf-8")
    in_kernel = load_pipeline(local, tmp_path)
    assert {s.params.get("launcher") for s in in_kernel.steps} <= {"", None}
    assert [(s.name, s.run_id) for s in in_kernel.steps] == [(s.name, s.run_id) for s in recipe.steps]
