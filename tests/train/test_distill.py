"""OPD library: the sample budget, prompts from real data versions, the shared-tokenizer check, and
a short real training run through TRL's DistillationTrainer."""

from __future__ import annotations

import json

import pytest

from nebula_utils.train.distill import load_prompts, sample_budget
from tests.factories import copied_model, perturbed_model, small_mix


@pytest.mark.parametrize(
    "samples,batch,accum,procs,steps,trained",
    [(4096, 8, 4, 1, 128, 4096), (4000, 8, 4, 1, 125, 4000), (10, 4, 1, 1, 3, 12), (10_000, 4, 2, 4, 313, 10_016)],
)
def test_budget_in_samples_becomes_steps(samples, batch, accum, procs, steps, trained):
    b = sample_budget(samples, batch, accum, procs)
    assert (b.max_steps, b.samples) == (steps, trained)
    assert b.samples - samples < b.samples_per_step  # never more than one step over


def test_prompts_from_sft_and_rl_versions(tmp_path):
    mix = small_mix(tmp_path / "mix")
    sft = load_prompts(str(mix / "sft"))
    assert all(p[-1]["role"] == "user" for p in sft["prompt"])  # the answer is dropped: the student writes its own
    assert set(sft["task"]) == {"math_reasoning", "code"} and len(set(sft["id"])) == len(sft)
    rl = load_prompts(str(mix / "rl"), max_prompts=3, seed=0)
    assert len(rl) == 3 and all(p[-1]["role"] == "user" for p in rl["prompt"])
    assert load_prompts(str(mix / "rl"), max_prompts=3, seed=0)["id"] == rl["id"]  # seeded
    with pytest.raises(FileNotFoundError, match="no prompts"):
        load_prompts(str(tmp_path / "nothing"))


def test_teacher_with_another_tokenizer_is_a_clear_one_line_error(tmp_path, tiny_model_path):
    from nebula_utils.train.distill import TokenizerMismatch, check_shared_tokenizer

    check_shared_tokenizer("tiny-random", {"a": str(perturbed_model(tmp_path / "same_tok"))})  # shares it: fine
    other = perturbed_model(tmp_path / "other_tok", extra_token="<nebula_extra>")
    with pytest.raises(TokenizerMismatch) as err:
        check_shared_tokenizer("tiny-random", {"math": str(other)})
    message = str(err.value)
    assert "\n" not in message and "teacher 'math'" in message and "'<nebula_extra>'" in message


def test_opd_trains_the_student_and_saves_it(tmp_path, tiny_model_path):
    from nebula_utils.config import merge_layers
    from nebula_utils.inference.models import load_model_and_tokenizer
    from nebula_utils.runs import start_run
    from nebula_utils.stages import stage_defaults
    from nebula_utils.stages.opd import OPDStageConfig
    from nebula_utils.train.distill import train_opd

    mix = small_mix(tmp_path / "mix")
    values = merge_layers(OPDStageConfig, "50_opd", stage_defaults("50_opd")) | dict(
        model=str(copied_model(tmp_path / "student")),
        teacher=str(perturbed_model(tmp_path / "teacher")),
        data=str(mix / "rl"),
        num_samples=6,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        max_completion_length=8,
        learning_rate=1e-2,
        run_dir=str(tmp_path / "run"),
        run_id="",
        device="cpu",
    )
    run = start_run("50_opd", values)
    metrics = train_opd(run.config, run.run_dir)
    run.finish(metrics=metrics)
    assert metrics["train/steps"]["value"] == 3 and metrics["train/samples"]["value"] == 6
    assert metrics["train/loss_first"]["value"] > 0
    student, _ = load_model_and_tokenizer(str(run.path("model")), device="cpu")
    assert f"run_id: {run.run_id}" in run.path("model", "README.md").read_text()  # the model card
    start, _ = load_model_and_tokenizer(run.config.model, device="cpu")
    moved = [n for n, p in student.named_parameters() if not p.equal(start.get_parameter(n))]
    assert moved, "OPD changed no parameter"
    log = json.loads(run.path("train_log.json").read_text())
    assert [h["step"] for h in log if "loss" in h] == [1, 2, 3]
