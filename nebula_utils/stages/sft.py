"""Stage 20_sft: supervised fine-tuning, a typed config that composes TRL's SFTConfig.

The stage config holds the knobs researchers change between ablations (LR, epochs, LoRA, loss
masking); everything else TRL offers is reachable through `trl_overrides`, whose keys are checked
against `trl.SFTConfig` so a typo fails at config time, not after an hour of training. The
trainer call lives in nebula_utils.train.sft.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..config import StageConfig, doc
from ._shared import BF16_SETTINGS, LaunchFields, ScaleFields, build_trl_config


@dataclass
class SFTStageConfig(ScaleFields, LaunchFields, StageConfig):
    upstream: ClassVar[dict[str, str]] = {"data": "16_curriculum/base"}
    builtin_inputs: ClassVar[dict[str, str]] = {"data": "sft"}

    model: str = doc("model spec (Hub id, local folder, packaged:..., tiny-random) or an upstream checkpoint folder")
    data: str = doc('data version folder or a .jsonl with `messages`; "" = the newest 16_curriculum/base')
    max_samples: int = doc("0 = every row; else a seeded sample of this many")
    max_length: int = doc("tokens per sample after the chat template; longer samples are truncated")
    num_train_epochs: float = doc("passes over the data (ignored when max_steps > 0)")
    max_steps: int = doc("optimizer steps; > 0 overrides num_train_epochs, 0 = use epochs")
    per_device_train_batch_size: int = doc(
        "samples per device per forward pass; with packing, packed rows of up to max_length tokens (TRL joins "
        "the rows of a batch into one sequence whose attention spans all of them: 1 row of 512 measured 1.4x "
        "faster per token than 4 on CPU, benchmarks/sft_throughput.py)"
    )
    gradient_accumulation_steps: int = doc("forward passes per optimizer step")
    learning_rate: float = doc("peak learning rate (AdamW)")
    lr_scheduler_type: str = doc("transformers scheduler name: cosine, linear, constant, ...")
    warmup_ratio: float = doc("fraction of the steps spent warming up the learning rate")
    weight_decay: float = doc("AdamW weight decay")
    assistant_only_loss: bool = doc("loss on assistant tokens only (needs {% generation %} markers in the template)")
    packing: bool = doc(
        "pack samples into max_length rows (TRL's bfd strategy, padding-free batches; sequences do not attend to "
        "each other: tests/train/test_sft_packing.py). Demo data: 34% of an unpacked batch of 4 is padding"
    )
    bf16: bool | str = doc(
        "bf16 autocast: auto (CUDA with bf16; a CPU with amx_bf16/avx512_bf16 whose measured bf16 matmul is "
        ">= 1.5x fp32, see nebula_utils.train.throughput) | true | false (fp32)"
    )
    use_lora: bool = doc("train LoRA adapters (merged into the saved model) instead of every weight")
    lora_r: int = doc("LoRA rank")
    lora_alpha: int = doc("LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = doc("dropout on the LoRA path")
    lora_target_modules: list[str] = doc("module names to adapt; [] = all linear layers")
    gradient_checkpointing: bool = doc("recompute activations in backward: less memory, ~30% more compute")
    logging_steps: int = doc("runtime-only: log loss every this many steps")
    save_steps: int = doc(
        "runtime-only: write a checkpoint (weights, optimizer, scheduler, RNG: ~4x the model's fp32 size with AdamW) "
        "to <run_dir>/checkpoints every this many optimizer steps, only the newest kept; an interrupted run resumes "
        "from it (the runner keeps checkpoints/ of an incomplete run) and they are removed once the final model is "
        "saved. 0 = no checkpoints"
    )
    trl_overrides: dict[str, Any] = doc("any other trl.SFTConfig field, checked by name when the trainer is built")

    def check(self) -> None:
        self.check_launcher()
        self.check_scale()
        self.one_of("bf16", BF16_SETTINGS)
        self.above("num_train_epochs", 0.0)
        for key in ("max_samples", "max_steps", "warmup_ratio", "weight_decay", "save_steps"):
            self.at_least(key, 0)
        self.above("learning_rate", 0.0)
        self.within("warmup_ratio", 0.0, 1.0)
        self.within("lora_dropout", 0.0, 1.0)
        for key in (
            "max_length",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "lora_r",
            "lora_alpha",
            "logging_steps",
        ):
            self.at_least(key, 1)

    def use_cuda(self) -> bool:
        from ..inference.models import pick_device

        return pick_device(self.device).startswith("cuda")

    def to_trl(self, output_dir: str | Path, bf16: bool | None = None):
        """The trl.SFTConfig of this stage. `bf16`: the resolved precision (train_sft passes
        nebula_utils.train.throughput.resolve_bf16(cfg.bf16, ...)); None resolves `self.bf16` here."""
        from trl import SFTConfig

        return build_trl_config(
            self,
            SFTConfig,
            output_dir,
            bf16,
            assistant_only_loss=self.assistant_only_loss,
            packing=self.packing,
            packing_strategy="bfd",  # padding-free rows with per-sample position_ids (TRL's default, pinned)
            # Checkpoints are for resuming only; the stage saves the final model itself, atomically.
            save_strategy="steps" if self.save_steps > 0 else "no",
            save_steps=self.save_steps if self.save_steps > 0 else 500,  # 500: TRL's default, unused with "no"
            save_total_limit=1,
        )

    def lora_config(self):
        if not self.use_lora:
            return None
        from peft import LoraConfig

        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=self.lora_target_modules or "all-linear",
            task_type="CAUSAL_LM",
        )
