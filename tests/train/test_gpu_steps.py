"""GPU checks (marker `gpu`: skipped without CUDA, tests/conftest.py): one short step of every
trainer the full-scale recipes use, on CUDA, with the random-initialised small Qwen3
(`tiny-random`: 2 layers, Qwen3 architecture), through the same stage functions the notebooks
call; and a vLLM generation when vLLM is installed. They were written on a machine without a GPU:
each `_step` body also runs on CPU (`run_on("cpu")` at the bottom, `python -m tests.train.test_gpu_steps`),
which is how they were checked there; the CUDA runs are unmeasured until a GPU machine runs them.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest

from tests.factories import (
    copied_model,
    perturbed_model,
    rl_version,
    small_distill_version,
    small_mix,
    small_pairs_version,
)

pytestmark = pytest.mark.gpu


def _config(stage: str, **over):
    from tests.conftest import build_stage_config

    return build_stage_config(stage, **over)


def _moved(before: dict, model) -> int:
    return sum(not before[n].equal(p.detach().to(before[n].device)) for n, p in model.named_parameters())


def sft_step(tmp: Path, device: str) -> dict:
    from nebula_utils.train.sft import train_sft

    mix = small_mix(tmp / "mix")
    cfg = _config(
        "20_sft", model="tiny-random", data=str(mix / "sft"), device=device, max_steps=2, max_length=128,
        per_device_train_batch_size=2, logging_steps=1, learning_rate=1e-3, bf16=device != "cpu",
    )  # fmt: skip
    metrics = train_sft(cfg, tmp / "sft")
    assert (tmp / "sft" / "model" / "config.json").is_file()
    assert metrics["train/loss_first"]["value"] > 0
    return metrics


def dpo_step(tmp: Path, device: str) -> dict:
    from nebula_utils.train.preference import train_dpo

    mix = small_mix(tmp / "mix")
    pairs = small_pairs_version(tmp / "pairs", small_distill_version(tmp / "distill", mix / "sft"))
    cfg = _config(
        "31_dpo", model="tiny-random", data=str(pairs), device=device, max_steps=2, max_length=128,
        per_device_train_batch_size=2, logging_steps=1, learning_rate=1e-3, audit=False,
    )  # fmt: skip
    metrics = train_dpo(cfg, tmp / "dpo")
    assert metrics["train/loss_first"]["value"] == pytest.approx(0.6931, abs=2e-2)  # log 2 (bf16 on CUDA)
    return metrics


def grpo_step(tmp: Path, device: str, rollout: str = "transformers") -> dict:
    from nebula_utils.train import grpo as rl

    rows = [
        {"prompt": f"Say something {i}.", "verifier": "format", "reference": json.dumps({"regex": r"\A\s*[A-Z]"})}
        for i in range(4)
    ]
    data = rl_version(tmp / "rl", rows)
    cfg = _config(
        "40_grpo", model="tiny-random", data=str(data), device=device, num_generations=4, prompts_per_step=2,
        max_steps=2, max_completion_length=8, learning_rate=1e-3, heldout_prompts=0, rollout=rollout,
        vllm_gpu_memory_utilization=0.2,
    )  # fmt: skip
    pool, _ = rl.load_rl_prompts(cfg.data)
    trainer = rl.build_trainer(cfg, tmp / "grpo", pool)
    assert str(trainer.model.device).startswith(device)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    metrics = rl.train_grpo(trainer, cfg, tmp / "grpo")
    assert metrics["train/steps"]["value"] == 2
    assert _moved(before, trainer.model) > 0
    return metrics


def opd_step(tmp: Path, device: str) -> dict:
    from nebula_utils.train.distill import train_opd

    mix = small_mix(tmp / "mix")
    cfg = _config(
        "50_opd", model=str(copied_model(tmp / "student")), teacher=str(perturbed_model(tmp / "teacher")),
        data=str(mix / "rl"), device=device, num_samples=4, per_device_train_batch_size=2,
        gradient_accumulation_steps=1, max_completion_length=8, learning_rate=1e-3,
    )  # fmt: skip
    metrics = train_opd(cfg, tmp / "opd")
    assert metrics["train/steps"]["value"] == 2 and metrics["train/loss_first"]["value"] > 0
    return metrics


def vllm_generation(tmp: Path) -> list[list[str]]:
    from nebula_utils.inference.generation import SamplingParams, make_generator

    gen = make_generator("tiny-random", backend="vllm")
    out = gen.generate(["What is 6 * 7?", "Name a colour."], SamplingParams(n=2, max_new_tokens=8, temperature=1.0))
    assert len(out) == 2 and all(len(samples) == 2 for samples in out)
    return out


@pytest.mark.parametrize("step", [sft_step, dpo_step, grpo_step, opd_step], ids=["sft", "dpo", "grpo", "opd"])
def test_training_step_on_cuda(step, tmp_path, tiny_model_path):
    step(tmp_path, "cuda")


def test_grpo_with_vllm_colocate_rollouts(tmp_path, tiny_model_path):
    pytest.importorskip("vllm")
    grpo_step(tmp_path, "cuda", rollout="vllm_colocate")


def test_vllm_generation(tmp_path, tiny_model_path):
    pytest.importorskip("vllm")
    vllm_generation(tmp_path)


def run_on(device: str) -> None:
    """Every training step body on `device` (CPU here: how these were checked without a GPU)."""
    for step in (sft_step, dpo_step, grpo_step, opd_step):
        with tempfile.TemporaryDirectory() as tmp:
            metrics = step(Path(tmp), device)
            print(step.__name__, device, {k: v["value"] for k, v in metrics.items() if "loss" in k})


if __name__ == "__main__":
    run_on(sys.argv[1] if len(sys.argv) > 1 else "cpu")
