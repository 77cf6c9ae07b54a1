"""Supervised fine-tuning stage: a typed config that composes TRL's SFTConfig, and the trainer call.

The stage config holds the knobs researchers change between ablations (LR, epochs, LoRA, loss
masking); everything else TRL offers is reachable through `trl_overrides`, whose keys are checked
against `trl.SFTConfig` so a typo fails at config time, not after an hour of training.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError, StageConfig
from .io import atomic_write_json


@dataclass
class SFTStageConfig(StageConfig):
    model: str  # model spec (see nebula_utils.models) or an upstream checkpoint folder
    data: str  # data version folder (nebula_utils.data.versions) or a .jsonl with `messages`
    max_samples: int  # 0 = use every row
    max_length: int  # tokens per sample after the chat template; longer samples are truncated
    num_train_epochs: float
    max_steps: int  # > 0 overrides num_train_epochs
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    learning_rate: float
    lr_scheduler_type: str
    warmup_ratio: float
    weight_decay: float
    assistant_only_loss: bool  # loss on assistant tokens only (needs {% generation %} markers)
    packing: bool
    use_lora: bool
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_target_modules: list[str]
    gradient_checkpointing: bool
    logging_steps: int  # runtime-only
    trl_overrides: dict[str, Any]  # any other trl.SFTConfig field, validated by name

    def use_cuda(self) -> bool:
        from .models import pick_device

        return pick_device(self.device) == "cuda"

    def to_trl(self, output_dir: str | Path):
        from trl import SFTConfig

        known = {f.name for f in dataclasses.fields(SFTConfig)}
        unknown = sorted(set(self.trl_overrides) - known)
        if unknown:
            raise ConfigError(f"trl_overrides: unknown trl.SFTConfig field '{unknown[0]}'")
        cuda = self.use_cuda()
        kwargs: dict[str, Any] = dict(
            output_dir=str(output_dir),
            seed=self.seed,
            data_seed=self.seed,
            max_length=self.max_length,
            num_train_epochs=self.num_train_epochs,
            max_steps=self.max_steps if self.max_steps > 0 else -1,
            per_device_train_batch_size=self.per_device_train_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            learning_rate=self.learning_rate,
            lr_scheduler_type=self.lr_scheduler_type,
            warmup_steps=self.warmup_ratio,  # transformers 5: a float < 1 is a ratio of total steps
            weight_decay=self.weight_decay,
            assistant_only_loss=self.assistant_only_loss,
            packing=self.packing,
            activation_checkpointing=self.gradient_checkpointing,  # transformers 5 name
            logging_steps=self.logging_steps,
            # TRL defaults to bf16=True; CPUs here have no fast bf16 path, so only use it on CUDA.
            bf16=cuda,
            use_cpu=not cuda,
            report_to="none",
            save_strategy="no",  # the stage saves the final model itself, atomically
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        kwargs.update(self.trl_overrides)
        return SFTConfig(**kwargs)

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


def load_sft_dataset(path: str, max_samples: int = 0, seed: int = 0):
    """Rows with a `messages` column from a data version folder or a jsonl file."""
    import datasets

    p = Path(path)
    if (p / "version.json").is_file():
        from .data.versions import load_version

        ds = load_version(p)
    elif p.is_file() and p.suffix in {".jsonl", ".json"}:
        ds = datasets.load_dataset("json", data_files=str(p), split="train")
    elif p.is_dir():
        ds = datasets.load_from_disk(str(p))
    else:
        raise FileNotFoundError(f"{path}: no SFT data (expected a data version folder or a .jsonl file)")
    if "messages" not in ds.column_names:
        raise ValueError(f"{path}: SFT data needs a 'messages' column, found {ds.column_names}")
    if max_samples and len(ds) > max_samples:
        ds = ds.shuffle(seed=seed).select(range(max_samples))
    return ds.select_columns(["messages"])


def count_target_tokens(trainer) -> int:
    """Tokens that carry loss (assistant tokens when assistant_only_loss) in the train set."""
    ds = trainer.train_dataset
    if "labels" in ds.column_names:  # TRL 1.16 folds assistant masks into labels (-100 = no loss)
        return int(sum(sum(t != -100 for t in row) for row in ds["labels"]))
    return int(sum(len(ids) for ids in ds["input_ids"]))


def train_sft(cfg: SFTStageConfig, run) -> dict[str, Any]:
    """Train with TRL's SFTTrainer; save the (merged) model to <run_dir>/model.

    Returns the metrics dict it also logs: final/mean train loss, runtime, tokens/s.
    """
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    from .models import load_tokenizer, resolve_model_path

    tokenizer = load_tokenizer(cfg.model)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(cfg.model), dtype="auto")
    dataset = load_sft_dataset(cfg.data, cfg.max_samples, cfg.seed)
    trainer = SFTTrainer(
        model=model,
        args=cfg.to_trl(run.path("checkpoints")),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=cfg.lora_config(),
    )
    target_tokens = count_target_tokens(trainer)
    result = trainer.train()
    history = trainer.state.log_history
    atomic_write_json(run.path("train_log.json"), history)
    final = trainer.model.merge_and_unload() if cfg.use_lora else trainer.model
    _save_atomically(final, tokenizer, run.path("model"))
    losses = [h["loss"] for h in history if "loss" in h]
    runtime = result.metrics.get("train_runtime", 0.0)
    epochs = result.metrics.get("epoch", cfg.num_train_epochs)
    metrics = {
        "train/loss_first": losses[0] if losses else None,
        "train/loss_last": losses[-1] if losses else None,
        "train/loss_mean": result.training_loss,
        "timing/train_runtime_s": runtime,
        "train/samples": len(dataset),
        "timing/train_target_tokens_per_s": target_tokens * epochs / runtime if runtime else None,
    }
    run.log_metrics({k: {"value": v, "n": len(dataset)} for k, v in metrics.items() if v is not None})
    if (Path(cfg.data) / "version.json").is_file():  # lineage: this data version fed this run
        from .data.versions import record_consumption

        record_consumption(cfg.data, run.run_id, run.stage)
    return metrics


def _save_atomically(model, tokenizer, out: Path) -> None:
    import os
    import shutil

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def loss_table(run_dir: str | Path):
    """Training-loss history of a finished run as a DataFrame (step, loss, lr, grad_norm)."""
    import pandas as pd

    rows = json.loads(Path(run_dir, "train_log.json").read_text())
    return pd.DataFrame([r for r in rows if "loss" in r], columns=["step", "epoch", "loss", "learning_rate", "grad_norm"])
