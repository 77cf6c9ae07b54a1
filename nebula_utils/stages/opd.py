"""Stage 50_opd: single-teacher on-policy distillation (OPD) with TRL's `DistillationTrainer`.

The student samples its own completions to prompts of an `rl` or `sft` data version (prompts
only: an sft row's last assistant turn is dropped); the loss is a generalized JSD between the
student's and the teacher's next-token distributions on the student's tokens (`beta=1`: reverse
KL). The budget is counted in samples (one completion per prompt and step), so "OPD with 4K
samples" is `num_samples: 4096`; the optimizer steps follow from the batch size (see
`nebula_utils.train.distill.sample_budget`). Teacher and student must share a tokenizer
(checked before any model loads). The trainer call lives in nebula_utils.train.distill.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..config import ConfigError, StageConfig, check_trl_overrides, doc
from ._shared import EngineFields, LaunchFields, ScaleFields


@dataclass
class OPDStageConfig(ScaleFields, EngineFields, LaunchFields, StageConfig):
    upstream: ClassVar[dict[str, str]] = {"data": "16_curriculum/rl_pool"}
    builtin_inputs: ClassVar[dict[str, str]] = {"data": "rl"}
    upstream_models: ClassVar[dict[str, str]] = {"teacher": "20_sft/model"}

    model: str = doc("the student: model spec or checkpoint folder (e.g. a 20_sft run's model/)")
    teacher: str = doc(
        "the teacher: model spec or checkpoint folder; must share the student's tokenizer; "
        '"" = the newest complete 20_sft model under the results root'
    )
    data: str = doc('rl or sft data version (prompts only); "" = the newest 16_curriculum/rl_pool')
    max_prompts: int = doc("0 = every prompt of `data`; else a seeded sample of this many")
    num_samples: int = doc(
        "the budget: sampled completions trained on (one per prompt and step); 0 = one pass over the prompts"
    )
    per_device_train_batch_size: int = doc("prompts per forward pass")
    gradient_accumulation_steps: int = doc("forward passes per optimizer step (samples/step = batch x this)")
    learning_rate: float = doc("peak learning rate (AdamW)")
    lr_scheduler_type: str = doc("transformers scheduler name: cosine, linear, constant, ...")
    warmup_ratio: float = doc("fraction of the steps spent warming up the learning rate")
    weight_decay: float = doc("AdamW weight decay")
    max_completion_length: int = doc("tokens the student samples per prompt")
    temperature: float = doc("student sampling temperature, also the softmax temperature of the divergence")
    top_p: float = doc("nucleus sampling mass of the student's rollouts")
    top_k: int = doc("top-k of the student's rollouts; 0 = off")
    beta: float = doc(
        "generalized JSD interpolation: 0 = forward KL, 0.5 = JSD, 1 = reverse KL (on-policy distillation)"
    )
    gradient_checkpointing: bool = doc("recompute activations in backward: less memory, ~30% more compute")
    logging_steps: int = doc("runtime-only: log the loss every this many steps")
    trl_overrides: dict[str, Any] = doc("any other trl.DistillationConfig field, checked by name (e.g. use_vllm)")

    def check(self) -> None:
        self.check_teacher_is_not_the_student()
        self.check_launcher()
        self.check_scale()
        self.check_engine()
        for key in ("max_prompts", "num_samples", "top_k", "warmup_ratio", "weight_decay"):
            self.at_least(key, 0)
        for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "max_completion_length"):
            self.at_least(key, 1)
        self.at_least("logging_steps", 1)
        self.above("learning_rate", 0.0)
        self.above("temperature", 0.0)
        self.above("top_p", 0.0)
        self.within("top_p", 0.0, 1.0)
        self.within("beta", 0.0, 1.0)
        self.within("warmup_ratio", 0.0, 1.0)

    def check_teacher_is_not_the_student(self) -> None:
        if self.teacher == self.model:
            raise ConfigError(
                "key 'teacher': the teacher is the student itself; the divergence is 0 and nothing trains"
            )

    def use_cuda(self) -> bool:
        from ..inference.models import pick_device

        return pick_device(self.device).startswith("cuda")

    def to_trl(self, output_dir: str | Path, max_steps: int):
        """trl.DistillationConfig for `max_steps` optimizer steps (from the sample budget)."""
        from trl import DistillationConfig

        check_trl_overrides(self.trl_overrides, DistillationConfig)
        cuda = self.use_cuda()
        kwargs: dict[str, Any] = dict(
            output_dir=str(output_dir),
            seed=self.seed,
            data_seed=self.seed,
            max_steps=max_steps,
            per_device_train_batch_size=self.per_device_train_batch_size,
            gradient_accumulation_steps=self.accumulation(),
            # vLLM rollouts (trl_overrides use_vllm: true, vllm_mode: colocate): GPUs per student engine
            vllm_tensor_parallel_size=self.tensor_parallel_size,
            learning_rate=self.learning_rate,
            lr_scheduler_type=self.lr_scheduler_type,
            warmup_steps=self.warmup_ratio,  # transformers 5: a float < 1 is a ratio of total steps
            weight_decay=self.weight_decay,
            max_completion_length=self.max_completion_length,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            beta=self.beta,
            # TRL turns checkpointing on by default; `activation_checkpointing` is the transformers 5 name.
            activation_checkpointing=self.gradient_checkpointing,
            logging_steps=self.logging_steps,
            bf16=cuda,  # TRL defaults to bf16=True; fp32 off CUDA (unmeasured here in bf16; 20_sft measures it)
            use_cpu=not cuda,
            report_to="none",
            save_strategy="no",  # the stage saves the final model itself, atomically
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        kwargs.update(self.trl_overrides)
        return DistillationConfig(**kwargs)


def budget_table(cfg: OPDStageConfig, prompts: int) -> Any:
    """The sample budget as steps, for the notebook: requested, per step, steps, trained, epochs."""
    import pandas as pd

    from ..train.distill import sample_budget

    b = sample_budget(cfg.num_samples or prompts, cfg.per_device_train_batch_size, cfg.accumulation(1))
    return pd.Series(
        {
            "prompts": prompts,
            "samples requested": b.requested,
            "samples per step": b.samples_per_step,
            "optimizer steps": b.max_steps,
            "samples trained": b.samples,
            "passes over the prompts": round(b.samples / max(1, prompts), 2),
        }
    )


def plot_curves(frame: Any, title: str) -> Any:
    """Divergence to the teacher, student entropy and completion length per step (one figure)."""
    import matplotlib.pyplot as plt

    panels = [
        ("loss", "divergence to teacher (nats/token)"),
        ("entropy", "student entropy (nats/token)"),
        ("completions/mean_length", "completion length (tokens)"),
    ]
    panels = [(c, label) for c, label in panels if c in frame.columns]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3), squeeze=False)
    for ax, (column, label) in zip(axes[0], panels):
        ax.plot(frame["step"], frame[column], marker="o", ms=3)
        ax.set(xlabel="optimizer step", ylabel=label)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
