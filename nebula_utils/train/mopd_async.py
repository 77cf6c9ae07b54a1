"""The full-scale MOPD path: TRL's experimental `AsyncDistillationTrainer` with one vLLM server per
teacher. NOT exercised here (it needs CUDA, vLLM, flash-attention kernels and running servers);
tests only check that the params map onto `AsyncDistillationConfig` fields that exist.

Start one server per teacher (`vllm serve <teacher> --logprobs-mode processed_logprobs
--max-logprobs -1 --port <p>`) and one for the student, list them in the 51_mopd params
(`backend: vllm_servers`, `teacher_servers: {default: http://..., math_reasoning: http://...}`,
`student_server: http://...`). Differences from the local backend, from TRL's documentation:
the teachers report their top `teacher_top_k` logprobs (plus a tail bucket), not the full
vocabulary, and at `beta != 0` the support narrows to the teacher's top-1 and the sampled token,
so its loss approximates the local one; rollouts run asynchronously (bounded staleness). The sample
budget becomes `num_train_epochs = num_samples / prompts` (the async trainer stops on the prompt
count; its `max_steps` is only a ceiling).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import check_trl_overrides


def async_config(cfg: Any, output_dir: str | Path, prompts: int) -> Any:
    """trl.experimental.async_distillation.AsyncDistillationConfig from a 51_mopd config."""
    from trl.experimental.async_distillation import AsyncDistillationConfig

    check_trl_overrides(cfg.trl_overrides, AsyncDistillationConfig)
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        seed=cfg.seed,
        num_train_epochs=(cfg.num_samples or prompts) / prompts,
        max_steps=-1,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.accumulation(),
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        beta=cfg.beta,
        teacher_temperature=cfg.temperature,
        teacher_server_urls={tid: cfg.teacher_servers[tid] for tid in cfg.teacher_ids()},
        vllm_server_base_url=cfg.student_server,
        logging_steps=cfg.logging_steps,
        report_to="none",
        save_strategy="no",
    )
    return AsyncDistillationConfig(**(kwargs | cfg.trl_overrides))


def train_mopd_async(cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """Run MOPD against vLLM servers; same outputs as the local backend (model/, train_log.json)."""
    import torch

    from ..inference.models import resolve_model_path
    from .distill import Budget, check_shared_tokenizer, load_prompts, run_and_save, student_tokenizer
    from .mopd import route_prompts, teacher_specs

    if not torch.cuda.is_available():
        raise RuntimeError("backend 'vllm_servers' needs CUDA and vLLM servers; use backend 'local' on this machine")
    from trl.experimental.async_distillation import AsyncDistillationTrainer

    prompts = route_prompts(load_prompts(cfg.data, cfg.max_prompts, cfg.seed), cfg.teachers, cfg.route_by, cfg.data)
    check_shared_tokenizer(cfg.model, teacher_specs(cfg.teacher, cfg.teachers))
    tokenizer = student_tokenizer(cfg.model)
    args = async_config(cfg, Path(run_dir) / "checkpoints", len(prompts))
    trainer = AsyncDistillationTrainer(
        model=resolve_model_path(cfg.model), args=args, train_dataset=prompts, processing_class=tokenizer
    )
    per_step = cfg.per_device_train_batch_size * cfg.accumulation()
    budget = Budget(cfg.num_samples or len(prompts), per_step, -(-(cfg.num_samples or len(prompts)) // per_step))
    return run_and_save(trainer, tokenizer, run_dir, budget, len(prompts), cfg, "51_mopd")
