"""Saving a trained model from one process or from every process of an `accelerate launch` job.

One process (a notebook kernel, a 1-GPU job): `model.save_pretrained` into a folder beside the
target, then swapped in, so a crash never leaves half a checkpoint where a later stage loads it.

Several processes (nebula_utils.launch.job): under DeepSpeed ZeRO-3 or FSDP each process holds only
its shard of every weight, so `save_pretrained` on the local module would write shards (ZeRO-3:
empty tensors). The full state dict is gathered first with `accelerator.get_state_dict`, a
collective every process must enter, and only the main process writes. DDP / ZeRO-1/2 hold full
weights; the gather is then a copy. Not exercised here beyond one process (no GPU machine).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any


def write_atomically(
    model: Any, tokenizer: Any, out: Path, state_dict: dict | None = None, card: str | None = None
) -> None:
    """Write the model folder beside `out`, then swap it in. `card`: its README.md (train.model_card)."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict=state_dict)
    tokenizer.save_pretrained(tmp)
    if card is not None:
        (tmp / "README.md").write_text(card, encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def save_trained(trainer: Any, tokenizer: Any, out: Path, model: Any = None, card: str | None = None) -> None:
    """Save `model` (default: the trainer's model) to `out` from every kind of run. `model` differs
    from the trainer's only for merged LoRA adapters, which are full on every process under DDP;
    LoRA with sharded weights (ZeRO-3 / FSDP) is refused rather than saved wrong."""
    accelerator = trainer.accelerator
    if accelerator.num_processes == 1:
        write_atomically(model if model is not None else trainer.model, tokenizer, out, card=card)
        return
    if model is not None:
        deepspeed = getattr(accelerator.state, "deepspeed_plugin", None)
        if accelerator.distributed_type.name == "FSDP" or (deepspeed is not None and deepspeed.zero_stage == 3):
            raise NotImplementedError("merging LoRA adapters of ZeRO-3/FSDP-sharded weights: train LoRA with DDP")
        if accelerator.is_main_process:
            write_atomically(model, tokenizer, out, card=card)
        accelerator.wait_for_everyone()
        return
    state = accelerator.get_state_dict(trainer.model_wrapped)  # collective: every process gathers
    if accelerator.is_main_process:
        write_atomically(accelerator.unwrap_model(trainer.model), tokenizer, out, state_dict=state, card=card)
    accelerator.wait_for_everyone()
