"""Supervised fine-tuning with TRL's SFTTrainer: data loading, the trainer call, atomic saving.

The stage config (nebula_utils.stages.sft.SFTStageConfig) builds the `trl.SFTConfig`; this module
runs it and returns metrics (the stage logs them in its epilogue).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..io import atomic_write_json


def load_sft_dataset(path: str, max_samples: int = 0, seed: int = 0):
    """Rows with a `messages` column from a data version folder or a jsonl file."""
    import datasets

    p = Path(path)
    if (p / "version.json").is_file():
        from ..data.versions import load_version

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


def train_sft(cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """Train with TRL's SFTTrainer (`cfg`: nebula_utils.stages.sft.SFTStageConfig); save the
    (merged) model to <run_dir>/model and the log history to <run_dir>/train_log.json.

    Returns metrics for the stage's epilogue: first/last/mean train loss, samples, runtime, tokens/s.
    """
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    from ..inference.models import load_tokenizer, resolve_model_path
    from .progress import ProgressCallback

    run_dir = Path(run_dir)
    tokenizer = load_tokenizer(cfg.model)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(cfg.model), dtype="auto")
    dataset = load_sft_dataset(cfg.data, cfg.max_samples, cfg.seed)
    trainer = SFTTrainer(
        model=model,
        args=cfg.to_trl(run_dir / "checkpoints"),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=cfg.lora_config(),
        callbacks=[ProgressCallback("sft")],
    )
    target_tokens = count_target_tokens(trainer)
    result = trainer.train()
    history = trainer.state.log_history
    atomic_write_json(run_dir / "train_log.json", history)
    final = trainer.model.merge_and_unload() if cfg.use_lora else trainer.model
    _save_atomically(final, tokenizer, run_dir / "model")
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
    return {k: {"value": v, "n": len(dataset)} for k, v in metrics.items() if v is not None}


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
    return pd.DataFrame(
        [r for r in rows if "loss" in r], columns=["step", "epoch", "loss", "learning_rate", "grad_norm"]
    )
