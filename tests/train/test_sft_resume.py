"""An interrupted SFT run resumes from its newest checkpoint and ends where an uninterrupted run does."""

import json

import pytest
import torch
from transformers import TrainerCallback

from nebula_utils.train.sft import last_checkpoint, prepare_sft, train_sft


class Interrupted(RuntimeError):
    pass


class InterruptAfter(TrainerCallback):
    """Raise at the end of optimizer step `step`, as a crash or a killed job would stop training."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Interrupted(f"interrupted after step {self.step}")


def weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model" / "model.safetensors"))


def losses(run_dir):
    return {h["step"]: h["loss"] for h in json.loads((run_dir / "train_log.json").read_text()) if "loss" in h}


@pytest.mark.slow  # ~20 s: three short trainings (reference, interrupted, resumed)
def test_interrupted_run_resumes_from_its_last_checkpoint(sft_config, tmp_path, tiny_model_path):
    # 10 rows, 4 per batch: 3 steps an epoch, so the resume at step 4 lands inside the second epoch
    # (the trainer must skip the epoch's first batch to keep the data order).
    cfg = sft_config(max_steps=6, save_steps=2, logging_steps=1, learning_rate=5e-3)
    straight = train_sft(cfg, tmp_path / "straight")

    run = tmp_path / "run"
    job = prepare_sft(cfg, run)
    job.trainer.add_callback(InterruptAfter(5))
    with pytest.raises(Interrupted):
        train_sft(cfg, run, job)
    # step 5 ran but was never saved; checkpoint-2 was rotated away (only the newest is kept)
    assert sorted(p.name for p in (run / "checkpoints").glob("checkpoint-*")) == ["checkpoint-4"]
    assert last_checkpoint(run / "checkpoints") == str(run / "checkpoints" / "checkpoint-4")
    assert not (run / "model").exists()

    resumed = train_sft(cfg, run)
    assert resumed["train/resumed_from_step"]["value"] == 4 and straight["train/resumed_from_step"]["value"] == 0
    assert resumed["train/steps"]["value"] == straight["train/steps"]["value"] == 6
    assert not (run / "checkpoints").exists()  # removed once the final model is saved
    a, b = losses(tmp_path / "straight"), losses(run)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    assert [b[s] for s in (5, 6)] == pytest.approx([a[s] for s in (5, 6)], rel=1e-5, abs=1e-6)
    assert resumed["train/loss_last"]["value"] == pytest.approx(straight["train/loss_last"]["value"], rel=1e-5)
    wa, wb = weights(tmp_path / "straight"), weights(run)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-5, atol=1e-6, msg=name)
    assert (run / "model" / "README.md").is_file()


def test_half_written_checkpoint_is_skipped(tmp_path):
    ckpts = tmp_path / "checkpoints"
    (ckpts / "checkpoint-4").mkdir(parents=True)
    (ckpts / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (ckpts / "checkpoint-6").mkdir()  # killed while saving: weights written, trainer_state.json not yet
    (ckpts / "checkpoint-6" / "model.safetensors").write_bytes(b"")
    assert last_checkpoint(ckpts) == str(ckpts / "checkpoint-4")
    assert last_checkpoint(tmp_path / "none") is None
