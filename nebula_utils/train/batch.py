"""Batch arithmetic shared by every training stage and the launch planner.

A recipe states the *global* batch a paper used (Tülu 3 SFT and DPO: 128 sequences per optimizer
step); the per-process knobs that give it depend on how many processes run. `split_global_batch`
is the one place that turns a global batch into per-process units, so a stage at run time (with
the accelerate world size) and `nebula plan` (with its --gpus x --nodes) derive the same value.
"""

from __future__ import annotations

import os

from ..config import ConfigError


def world_size() -> int:
    """Training processes of this job: `accelerate launch` / torchrun set WORLD_SIZE in every
    process; 1 in a notebook kernel. Each process samples its own batch, so a step trains on
    per-device batch x accumulation x this many samples."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def split_global_batch(global_batch: int, unit: int, processes: int, key: str = "global_batch_size") -> int:
    """Units per process and optimizer step = global_batch / (unit x processes).

    With unit = per_device_train_batch_size this is gradient_accumulation_steps (SFT, DPO, KTO,
    RSFT, OPD); with unit = num_generations it is GRPO's prompts per process. A global batch that
    does not divide is an error naming `key`: rounding would silently train on another batch size."""
    per_step = unit * processes
    if global_batch < 1 or unit < 1 or processes < 1:
        raise ConfigError(f"key '{key}': {global_batch} over {unit} x {processes} processes: all must be >= 1")
    if global_batch % per_step:
        raise ConfigError(
            f"key '{key}': {global_batch} does not divide into {unit} per pass x {processes} process(es) "
            f"= {per_step}; choose a multiple of {per_step}"
        )
    return global_batch // per_step
