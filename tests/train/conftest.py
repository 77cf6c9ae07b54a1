"""Shared by the training tests: a small chat data file with rows of clearly different lengths
and the 20_sft stage config built on it (tiny-random model, CPU, fp32 unless asked)."""

import json
from pathlib import Path

import pytest

from nebula_utils.config import merge_layers
from nebula_utils.stages import stage_defaults
from nebula_utils.stages.sft import SFTStageConfig


def varied_rows(path: Path) -> str:
    """10 chat rows whose answers run 1, 4, 7 or 10 steps, so bfd puts several in one row."""
    with open(path, "w") as fh:
        for i in range(10):
            answer = " ".join(f"step {k}: {i} + {k} = {i + k}." for k in range(1 + 3 * (i % 4)))
            msgs = [
                {"role": "user", "content": f"Count from {i} in {1 + 3 * (i % 4)} steps."},
                {"role": "assistant", "content": answer},
            ]
            fh.write(json.dumps({"messages": msgs}) + "\n")
    return str(path)


@pytest.fixture
def sft_config(tmp_path):
    """sft_config(**overrides) -> SFTStageConfig from the YAML defaults on the varied rows."""
    data = varied_rows(tmp_path / "rows.jsonl")

    def build(**over) -> SFTStageConfig:
        values = merge_layers(SFTStageConfig, "20_sft", stage_defaults("20_sft"))
        values |= dict(model="tiny-random", data=data, device="cpu", max_length=256, per_device_train_batch_size=4)
        values |= dict(run_dir=str(tmp_path / "run"), run_id="", bf16=False) | over
        return SFTStageConfig(**values)

    return build
