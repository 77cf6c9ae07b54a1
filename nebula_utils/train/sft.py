"""Supervised fine-tuning with TRL's SFTTrainer: data loading, the trainer call, atomic saving.

The stage config (nebula_utils.stages.sft.SFTStageConfig) builds the `trl.SFTConfig`; this module
runs it and returns metrics (the stage logs them in its epilogue).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
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
    ds = _answered(ds, path)
    if len(ds) == 0:
        raise ValueError(f"{path}: the SFT data has no rows (TRL would fail on it with a bare StopIteration)")
    if max_samples and len(ds) > max_samples:
        ds = ds.shuffle(seed=seed).select(range(max_samples))
    return ds.select_columns(["messages"])


def _answered(ds: Any, path: str) -> Any:
    """The rows whose chat ends with an assistant turn. Prompt-only rows (10_data_sft_mix's IFEval
    constraint prompts, answered by a teacher in 11_distill) have nothing to train on: left out, counted."""
    keep = [i for i, m in enumerate(ds["messages"]) if m and m[-1]["role"] == "assistant"]
    if len(keep) < len(ds):
        print(f"{path}: {len(ds) - len(keep)} of {len(ds)} rows end with a user turn (no answer): left out")
        ds = ds.select(keep)
    return ds


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


@dataclass
class SFTJob:
    """A built, audited, not yet trained SFT run (prepare_sft); train_sft trains it."""

    trainer: Any
    tokenizer: Any
    dataset: Any
    audit: Any  # nebula_utils.train.loss_mask.LossMaskAudit, also in <run_dir>/loss_mask_audit.txt
    bf16: bool
    why_bf16: str
    model_flops: float
    resume_from: str | None  # the checkpoint folder training continues from, None = from step 0


def prepare_sft(cfg: Any, run_dir: str | Path) -> SFTJob:
    """Load the model and data, build the trainer and audit its loss mask (train.loss_mask): the
    audit is written to <run_dir>/loss_mask_audit.txt, and a run that would train no assistant token
    stops here with LossMaskError, before any training."""
    from transformers import AutoModelForCausalLM

    from ..inference.models import load_tokenizer, resolve_model_path
    from .loss_mask import audit_trainer, check_template
    from .throughput import flops_per_token, resolve_bf16

    run_dir = Path(run_dir)
    bf16, why_bf16 = resolve_bf16(cfg.bf16, "cuda" if cfg.use_cuda() else "cpu")
    tokenizer = load_tokenizer(cfg.model)
    check_template(tokenizer, cfg.model, cfg.assistant_only_loss)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(cfg.model), dtype="auto", **cfg.model_kwargs())
    check_packing_attention(model, cfg.packing)
    model_flops = flops_per_token(model, lora=cfg.use_lora)
    dataset = load_sft_dataset(cfg.data, cfg.max_samples, cfg.seed)
    trainer = make_trainer(cfg, model, dataset, tokenizer, run_dir / "checkpoints", bf16)
    audit = audit_trainer(trainer, dataset, cfg.model, out=run_dir / "loss_mask_audit.txt")
    resume = last_checkpoint(run_dir / "checkpoints")
    return SFTJob(trainer, tokenizer, dataset, audit, bf16, why_bf16, model_flops, resume)


def last_checkpoint(folder: Path) -> str | None:
    """The newest complete checkpoint-<step> folder under `folder` (an interrupted run's), or None.

    Complete = its trainer_state.json reads: transformers writes that file last (after the weights,
    optimizer, scheduler and RNG states), so a run killed while saving leaves the previous one
    (rotation to save_total_limit deletes it only after the new one is written)."""
    import re

    found = []
    for path in folder.glob("checkpoint-*") if folder.is_dir() else []:
        m = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if m and path.is_dir():
            try:
                json.loads((path / "trainer_state.json").read_text())
            except (OSError, ValueError):
                continue
            found.append((int(m.group(1)), path))
    return str(max(found)[1]) if found else None


def train_sft(cfg: Any, run_dir: str | Path, job: SFTJob | None = None) -> dict[str, Any]:
    """Train with TRL's SFTTrainer (`cfg`: nebula_utils.stages.sft.SFTStageConfig; `job`: from
    prepare_sft, built here when None); save the (merged) model with its model card to
    <run_dir>/model and the log history to <run_dir>/train_log.json.

    An interrupted run resumes from its newest checkpoint in <run_dir>/checkpoints (written every
    `cfg.save_steps` optimizer steps); once the final model is saved the checkpoints are removed.

    Returns metrics for the stage's epilogue: first/last/mean train loss, samples, tokens and
    padding, the fraction of tokens trained (loss-mask audit), the step training resumed from, and
    the throughput of the training loop (wall clock from the first step to the last, data loading,
    optimizer and logging included): tokens/s (every real token), target tokens/s (tokens that carry
    loss) and MFU against the measured matmul peak of the precision used (see
    nebula_utils.train.throughput). After a resume, the losses cover the whole run (the checkpoint
    holds the earlier log) but tokens and throughput only the steps trained in this process.
    """
    import shutil

    import torch

    from .model_card import card_for
    from .saving import save_trained
    from .throughput import TokenCounter, make_throughput_callback, peak_flops

    run_dir = Path(run_dir)
    job = job or prepare_sft(cfg, run_dir)
    trainer, bf16 = job.trainer, job.bf16
    device = "cuda" if cfg.use_cuda() else "cpu"
    precision = "bfloat16" if bf16 else "float32"
    peak = peak_flops(precision, device=device)
    counter = TokenCounter().attach(trainer.model)
    speed = make_throughput_callback(counter, job.model_flops, peak["flops_per_s"])
    trainer.callback_handler.callbacks.insert(0, speed)  # first, so the printer shows its numbers
    if job.resume_from:
        print(f"resuming from {job.resume_from}")
    result = trainer.train(resume_from_checkpoint=job.resume_from)
    counter.detach()
    history = trainer.state.log_history
    atomic_write_json(run_dir / "train_log.json", history)
    losses = [h["loss"] for h in history if "loss" in h]
    loop = speed.summary()
    print(
        f"SFT {precision}{' packed' if cfg.packing else ''}: {loop['tokens']} tokens in {loop['seconds']:.0f}s = "
        f"{loop['tokens_per_s']:.0f} tokens/s ({loop['target_tokens_per_s']:.0f} trained), MFU {loop['mfu']:.1%} of "
        f"{peak['flops_per_s'] / 1e9:.0f} GFLOP/s ({loop['mfu_cpu_time']:.1%} of the CPU time it got, "
        f"{loop['cpu_share']:.0%} of {torch.get_num_threads()} cores); padding {counter.padding_fraction:.1%}; "
        f"{job.why_bf16}"
    )
    steps, n = trainer.state.global_step, len(job.dataset)
    mfu = {
        "value": loop["mfu"],
        "n": steps,
        "precision": precision,
        "peak_flops_per_s": peak["flops_per_s"],
        "peak": peak["key"],
        "flops_per_token": job.model_flops,
        "mfu_cpu_time": loop["mfu_cpu_time"],
        "cpu_share": loop["cpu_share"],
        "bf16_reason": job.why_bf16,
    }
    resumed = int(Path(job.resume_from).name.rsplit("-", 1)[1]) if job.resume_from else 0
    metrics = {
        "train/loss_first": losses[0] if losses else None,
        "train/loss_last": losses[-1] if losses else None,
        "train/loss_mean": result.training_loss,
        "train/samples": n,
        "train/tokens": counter.tokens,
        "train/target_tokens": counter.target_tokens,
        "train/padding_fraction": counter.padding_fraction,
        "train/trained_token_fraction": job.audit.trained_fraction,
        "train/resumed_from_step": resumed,
        "train/steps": steps,
        "train/bf16": float(bf16),
        "timing/train_runtime_s": result.metrics.get("train_runtime"),
        "timing/train_tokens_per_s": loop["tokens_per_s"],
        "timing/train_target_tokens_per_s": loop["target_tokens_per_s"],
    }
    out = {k: {"value": v, "n": n} for k, v in metrics.items() if v is not None}
    out["train/trained_token_fraction"]["n"] = job.audit.dataset_tokens
    out |= {"timing/train_mfu": mfu}
    merged = trainer.model.merge_and_unload() if cfg.use_lora else None
    card = card_for(cfg, run_dir, "20_sft", out, "sft")
    save_trained(trainer, job.tokenizer, run_dir / "model", merged, card=card)  # gathers ZeRO-3/FSDP shards
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # the final model is saved: nothing to resume
    return out


def loss_table(run_dir: str | Path):
    """Training-loss history of a finished run as a DataFrame (step, loss, lr, grad_norm)."""
    import pandas as pd

    rows = json.loads(Path(run_dir, "train_log.json").read_text())
    return pd.DataFrame(
        [r for r in rows if "loss" in r], columns=["step", "epoch", "loss", "learning_rate", "grad_norm"]
    )
