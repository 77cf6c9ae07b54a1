"""On-policy distillation (OPD) with TRL's `DistillationTrainer`: prompts, the sample budget, the
shared-tokenizer check, the trainer call and atomic saving.

The student generates one completion per prompt and step; the loss is TRL's chunked generalized
JSD between the student's and the teacher's next-token distributions at every completion token
(`beta=1`: reverse KL, mode-seeking). Nothing here re-implements the loss: TRL computes it.

The stage config (nebula_utils.stages.opd.OPDStageConfig) builds the `trl.DistillationConfig`;
this module runs it and returns metrics for the stage's epilogue. The multi-teacher variant
(MOPD) subclasses the trainer in nebula_utils.train.mopd and reuses everything here.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import atomic_write_json
from .batch import world_size


class TokenizerMismatch(ValueError):
    """A teacher's vocabulary differs from the student's; str() is one line naming both."""


@dataclass(frozen=True)
class Budget:
    """The sample budget as optimizer steps: each step trains on `samples_per_step` completions
    (one per prompt: TRL's DistillationTrainer samples n=1), so `samples` >= the requested budget
    by less than one step."""

    requested: int
    samples_per_step: int
    max_steps: int

    @property
    def samples(self) -> int:
        return self.max_steps * self.samples_per_step


def sample_budget(
    num_samples: int, per_device_train_batch_size: int, gradient_accumulation_steps: int, num_processes: int = 1
) -> Budget:
    """Steps for a budget of `num_samples` completions: ceil(num_samples / samples per step)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    per_step = per_device_train_batch_size * gradient_accumulation_steps * num_processes
    return Budget(num_samples, per_step, math.ceil(num_samples / per_step))


# --------------------------------------------------------------------------- prompts


def prompt_of(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation up to its last user turn (an sft row's answer is dropped: the student writes its own)."""
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    return list(messages[: last_user + 1])


def load_prompts(path: str, max_prompts: int = 0, seed: int = 0):
    """Rows {id, task, prompt (chat messages ending with a user turn), ...} from an rl or sft data
    version folder or a .jsonl with `messages` (or `prompt`) per line; a seeded subset of
    `max_prompts` (0 = all). A row without a user turn names the file and the row."""
    import datasets

    p = Path(path)
    if (p / "version.json").is_file():
        from ..data.mixing import select_from_version

        ds = select_from_version(p, max_prompts, seed, schemas=("rl", "sft"))[0]
    elif p.is_file() and p.suffix == ".jsonl":
        ds = datasets.load_dataset("json", data_files=str(p), split="train")
        if max_prompts and len(ds) > max_prompts:
            ds = ds.shuffle(seed=seed).select(range(max_prompts))
    else:
        raise FileNotFoundError(f"{path}: no prompts (expected an rl or sft data version folder or a .jsonl file)")
    column = "messages" if "messages" in ds.column_names else "prompt"
    if column not in ds.column_names:
        raise ValueError(f"{path}: prompts need a 'messages' or 'prompt' column, found {ds.column_names}")
    prompts = []
    for i, row in enumerate(ds[column]):
        chat = [{"role": "user", "content": row}] if isinstance(row, str) else prompt_of(row)
        if not chat:
            raise ValueError(f"{path}: row {i} ({ds[i].get('id', '?')}) has no user turn")
        prompts.append(chat)
    keep = [c for c in ("id", "task") if c in ds.column_names]
    out = ds.select_columns(keep).add_column("prompt", prompts)
    if "id" not in keep:
        out = out.add_column("id", [f"row{i}" for i in range(len(out))])
    if "task" not in keep:
        out = out.add_column("task", [""] * len(out))
    return out


# --------------------------------------------------------------------------- models


def check_shared_tokenizer(student: str, teachers: Mapping[str, str]) -> None:
    """Raise TokenizerMismatch unless every teacher's tokenizer has exactly the student's vocabulary
    (token -> id) and its model the same logit width: the divergence compares the two
    distributions id by id, so a different vocabulary would silently train on the wrong tokens."""
    from transformers import AutoConfig

    from ..inference.models import load_tokenizer, resolve_model_path

    want = load_tokenizer(student).get_vocab()
    width = AutoConfig.from_pretrained(resolve_model_path(student)).get_text_config().vocab_size
    for name, spec in teachers.items():
        got = load_tokenizer(spec).get_vocab()
        if got != want:
            diff = sorted(set(got.items()) ^ set(want.items()), key=lambda kv: kv[1])[0]
            raise TokenizerMismatch(
                f"teacher '{name}' ({spec}) does not share the student's tokenizer ({student}): {len(got)} vs "
                f"{len(want)} tokens, e.g. {diff[0]!r} is id {got.get(diff[0])} vs {want.get(diff[0])}; "
                "distillation compares next-token distributions id by id, so both need the same vocabulary"
            )
        teacher_width = AutoConfig.from_pretrained(resolve_model_path(spec)).get_text_config().vocab_size
        if teacher_width != width:
            raise TokenizerMismatch(
                f"teacher '{name}' ({spec}) has {teacher_width} logits per position but the student ({student}) "
                f"has {width}: both models need the same vocabulary size"
            )


def load_causal_lm(spec: str, dtype: str = "auto", **kwargs: Any):
    from transformers import AutoModelForCausalLM

    from ..inference.models import resolve_model_path

    return AutoModelForCausalLM.from_pretrained(resolve_model_path(spec), dtype=dtype, **kwargs)


def student_tokenizer(spec: str):
    """The student's tokenizer, left-padded as TRL's generation needs."""
    from ..inference.models import load_tokenizer

    tok = load_tokenizer(spec)
    tok.padding_side = "left"
    return tok


# --------------------------------------------------------------------------- training


def train_opd(cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """Single-teacher OPD (`cfg`: nebula_utils.stages.opd.OPDStageConfig): save the student to
    <run_dir>/model and the log history to <run_dir>/train_log.json; return the epilogue's metrics."""
    from trl import DistillationTrainer

    from .progress import ProgressCallback

    check_shared_tokenizer(cfg.model, {"teacher": cfg.teacher})
    prompts = load_prompts(cfg.data, cfg.max_prompts, cfg.seed)
    budget = sample_budget(
        cfg.num_samples or len(prompts), cfg.per_device_train_batch_size, cfg.accumulation(), world_size()
    )
    tokenizer = student_tokenizer(cfg.model)
    trainer = DistillationTrainer(
        model=load_causal_lm(cfg.model, **cfg.model_kwargs()),
        teacher_model=load_causal_lm(cfg.teacher, **cfg.model_kwargs()),
        args=cfg.to_trl(Path(run_dir) / "checkpoints", budget.max_steps),
        train_dataset=prompts,
        processing_class=tokenizer,
        callbacks=[ProgressCallback("opd")],
    )
    return run_and_save(trainer, tokenizer, run_dir, budget, len(prompts), cfg, "50_opd")


def run_and_save(
    trainer: Any, tokenizer: Any, run_dir: str | Path, budget: Budget, prompts: int, cfg: Any = None, stage: str = ""
) -> dict[str, Any]:
    """Train, write train_log.json and model/ (atomically, from every process of a launched job, with
    a model card when `cfg` is given: train.model_card), and summarise the run as metrics."""
    from .model_card import card_for
    from .saving import save_trained

    run_dir = Path(run_dir)
    started = time.process_time()
    result = trainer.train()
    cpu_s = time.process_time() - started
    if trainer.state.global_step < budget.max_steps:
        # transformers counts a step only when its gradient accumulation completes: prompts fewer than
        # one step's forward passes x batch give 0 steps and no error (seen: 1 prompt, 2 x 2 per step).
        raise ValueError(
            f"trained {trainer.state.global_step} of {budget.max_steps} optimizer steps: {prompts} prompts cannot "
            f"fill one step of {budget.samples_per_step} samples (per_device_train_batch_size x "
            "gradient_accumulation_steps x processes); add prompts or lower those knobs"
        )
    history = trainer.state.log_history
    atomic_write_json(run_dir / "train_log.json", history)
    metrics = training_metrics(history, result.metrics, budget, prompts, cpu_s)
    card = card_for(cfg, run_dir, stage, metrics, stage.split("_", 1)[-1]) if cfg is not None else None
    save_trained(trainer, tokenizer, run_dir / "model", card=card)
    return metrics


def training_metrics(
    history: list[dict], result: Mapping[str, Any], budget: Budget, prompts: int, cpu_s: float = 0.0
) -> dict[str, Any]:
    """First/last/mean divergence, samples, completion lengths; timings under timing/."""
    rows = [h for h in history if "loss" in h]
    losses = [h["loss"] for h in rows]
    lengths = [h["completions/mean_length"] for h in rows if "completions/mean_length" in h]
    clipped = [h["completions/clipped_ratio"] for h in rows if "completions/clipped_ratio" in h]
    runtime = float(result.get("train_runtime", 0.0))
    steps = budget.max_steps
    values = {
        "train/loss_first": (losses[0] if losses else None, budget.samples_per_step),
        "train/loss_last": (losses[-1] if losses else None, budget.samples_per_step),
        "train/loss_mean": (result.get("train_loss"), budget.samples),
        "train/samples": (budget.samples, budget.samples),
        "train/steps": (steps, steps),
        "train/prompts": (prompts, prompts),
        "train/completion_mean_tokens": (sum(lengths) / len(lengths) if lengths else None, budget.samples),
        "train/completion_clipped_ratio": (sum(clipped) / len(clipped) if clipped else None, budget.samples),
        "timing/train_runtime_s": (runtime, steps),
        "timing/seconds_per_step": (runtime / steps if steps else None, steps),
        "timing/samples_per_s": (budget.samples / runtime if runtime else None, budget.samples),
        "timing/process_cpu_s": (cpu_s or None, steps),
    }
    return {k: {"value": v, "n": n} for k, (v, n) in values.items() if v is not None}


def loss_table(run_dir: str | Path):
    """The training log of a finished run as a DataFrame: step, divergence (loss), entropy,
    completion length, step time."""
    import pandas as pd

    rows = json.loads(Path(run_dir, "train_log.json").read_text())
    frame = pd.DataFrame([r for r in rows if "loss" in r])
    cols = [
        "step",
        "loss",
        "entropy",
        "completions/mean_length",
        "completions/clipped_ratio",
        "step_time",
        "grad_norm",
    ]
    return frame[[c for c in cols if c in frame.columns]]
