"""Supervised fine-tuning with TRL's SFTTrainer: data loading, the trainer call, atomic saving.

The stage config (nebula_utils.stages.sft.SFTStageConfig) builds the `trl.SFTConfig`; this module
runs it and returns metrics (the stage logs them in its epilogue).
"""

from __future__ import annotations

import functools
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


@functools.cache
def full_logits_trainer_class() -> type:
    """TRL's SFTTrainer with the loss of the model's own LM head and cross-entropy over the full
    logits, in place of TRL's fused, chunked LM-head kernel.

    Why, on CPU: TRL's kernel runs on CPU as plain torch ops that accumulate the LM head's backward
    GEMMs in fp32 (`.float()` on both operands; CPU torch has no bf16-in/fp32-out matmul), so
    under bf16 autocast the 49152 x 576 head, 21% of SmolLM2-135M's FLOPs, runs its backward at the
    fp32 rate: measured forward+backward 93 tokens/CPU-s with the fused kernel vs 136 with full
    logits (1.46x) in bf16, 57 vs 61 in fp32 (1 thread, packed 512-token rows). Full logits cost
    memory (512 x 49152 fp32 = 100 MB per row), which is why TRL avoids them on GPUs with long
    sequences; the losses agree to 1e-5 in fp32 (tests/train/test_sft_packing.py). Logged metrics:
    TRL's num_tokens and mean_token_accuracy (entropy is not computed: it needs another pass over
    the logits).
    """
    import torch
    from transformers import Trainer
    from trl import SFTTrainer

    class FullLogitsSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = {**inputs, "use_cache": False}
            loss, outputs = Trainer.compute_loss(self, model, inputs, True, num_items_in_batch)
            mode = "train" if model.training else "eval"
            with torch.no_grad():
                labels = inputs["labels"][:, 1:]
                mask = labels != -100
                correct = ((outputs.logits[:, :-1].argmax(-1) == labels) & mask).sum()
                self._metrics[mode]["mean_token_accuracy"].append((correct / mask.sum().clamp(min=1)).item())
            if mode == "train":
                mask = inputs.get("attention_mask")
                self._total_train_tokens += int(mask.sum()) if mask is not None else inputs["position_ids"].size(1)
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return (loss, outputs) if return_outputs else loss

    return FullLogitsSFTTrainer


def make_trainer(cfg: Any, model: Any, dataset: Any, tokenizer: Any, output_dir: Path, bf16: bool) -> Any:
    """The stage's SFTTrainer: TRL's fused LM-head loss on CUDA, full-logits loss on CPU (see
    full_logits_trainer_class for the measurement)."""
    from trl import SFTTrainer

    from .progress import ProgressCallback

    cls = SFTTrainer if cfg.use_cuda() else full_logits_trainer_class()
    return cls(
        model=model,
        args=cfg.to_trl(output_dir, bf16=bf16),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=cfg.lora_config(),
        callbacks=[ProgressCallback("sft")],
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
    trainer = make_trainer(cfg, model, dataset, tokenizer, run_dir / "checkpoints", bf16)
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
