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


# Attention implementations that keep packed sequences apart in a padding-free row: sdpa, eager
# and flex build a block-diagonal causal mask from the restarting position_ids
# (transformers.masking_utils.find_packed_sequence_indices); the flash kernels take the sequence
# boundaries (cu_seq_lens) TRL's collator adds. Checked on CPU for sdpa and eager by
# tests/train/test_sft_packing.py (per-sequence loss packed == unpacked within 1e-4).
PACKING_SAFE_ATTENTION = ("sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3")


def check_packing_attention(model, packing: bool) -> None:
    impl = getattr(model.config, "_attn_implementation", None)
    if packing and impl not in PACKING_SAFE_ATTENTION:
        raise ValueError(
            f"packing: attention implementation {impl!r} may let packed samples attend to each other "
            f"(known to keep them apart: {', '.join(PACKING_SAFE_ATTENTION)})"
        )


def train_sft(cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """Train with TRL's SFTTrainer (`cfg`: nebula_utils.stages.sft.SFTStageConfig); save the
    (merged) model to <run_dir>/model and the log history to <run_dir>/train_log.json.

    Returns metrics for the stage's epilogue: first/last/mean train loss, samples, tokens and
    padding, and the throughput of the training loop (wall clock from the first step to the last,
    data loading, optimizer and logging included): tokens/s (every real token), target tokens/s
    (tokens that carry loss) and MFU against the measured matmul peak of the precision used
    (see nebula_utils.train.throughput).
    """
    import torch
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    from ..inference.models import load_tokenizer, resolve_model_path
    from .throughput import TokenCounter, flops_per_token, make_throughput_callback, peak_flops, resolve_bf16

    run_dir = Path(run_dir)
    device = "cuda" if cfg.use_cuda() else "cpu"
    bf16, why_bf16 = resolve_bf16(cfg.bf16, device)
    tokenizer = load_tokenizer(cfg.model)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(cfg.model), dtype="auto")
    check_packing_attention(model, cfg.packing)
    model_flops = flops_per_token(model, lora=cfg.use_lora)
    dataset = load_sft_dataset(cfg.data, cfg.max_samples, cfg.seed)
    trainer = SFTTrainer(
        model=model,
        args=cfg.to_trl(run_dir / "checkpoints", bf16=bf16),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=cfg.lora_config(),
    )
    precision = "bfloat16" if bf16 else "float32"
    peak = peak_flops(precision, device=device)
    counter = TokenCounter().attach(trainer.model)
    speed = make_throughput_callback(counter, model_flops, peak["flops_per_s"])
    trainer.callback_handler.callbacks.insert(0, speed)  # first, so the printer shows its numbers
    result = trainer.train()
    counter.detach()
    history = trainer.state.log_history
    atomic_write_json(run_dir / "train_log.json", history)
    final = trainer.model.merge_and_unload() if cfg.use_lora else trainer.model
    _save_atomically(final, tokenizer, run_dir / "model")
    losses = [h["loss"] for h in history if "loss" in h]
    loop = speed.summary()
    print(
        f"SFT {precision}{' packed' if cfg.packing else ''}: {loop['tokens']} tokens in {loop['seconds']:.0f}s = "
        f"{loop['tokens_per_s']:.0f} tokens/s ({loop['target_tokens_per_s']:.0f} trained), MFU {loop['mfu']:.1%} of "
        f"{peak['flops_per_s'] / 1e9:.0f} GFLOP/s ({loop['mfu_cpu_time']:.1%} of the CPU time it got, "
        f"{loop['cpu_share']:.0%} of {torch.get_num_threads()} cores); padding {counter.padding_fraction:.1%}; {why_bf16}"
    )
    steps, n = trainer.state.global_step, len(dataset)
    mfu = {
        "value": loop["mfu"],
        "n": steps,
        "precision": precision,
        "peak_flops_per_s": peak["flops_per_s"],
        "peak": peak["key"],
        "flops_per_token": model_flops,
        "mfu_cpu_time": loop["mfu_cpu_time"],
        "cpu_share": loop["cpu_share"],
        "bf16_reason": why_bf16,
    }
    metrics = {
        "train/loss_first": losses[0] if losses else None,
        "train/loss_last": losses[-1] if losses else None,
        "train/loss_mean": result.training_loss,
        "train/samples": n,
        "train/tokens": counter.tokens,
        "train/target_tokens": counter.target_tokens,
        "train/padding_fraction": counter.padding_fraction,
        "train/bf16": float(bf16),
        "timing/train_runtime_s": result.metrics.get("train_runtime"),
        "timing/train_tokens_per_s": loop["tokens_per_s"],
        "timing/train_target_tokens_per_s": loop["target_tokens_per_s"],
    }
    out = {k: {"value": v, "n": n} for k, v in metrics.items() if v is not None}
    return out | {"timing/train_mfu": mfu}


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
