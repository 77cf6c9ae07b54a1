"""Parameter groups several stages share (declared once, documented once)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config import ConfigError, check_trl_overrides, doc

BF16_SETTINGS = ("auto", True, False)  # a training stage's `bf16` key

BACKENDS = ("auto", "transformers", "vllm")


ATTENTION_IMPLEMENTATIONS = ("", "sdpa", "flash_attention_2", "eager")


@dataclasses.dataclass
class ScaleFields:
    """Efficiency knobs every training stage shares (20_sft, 31_dpo, 32_kto, 33_rsft, 40_grpo, 50_opd,
    51_mopd); `nebula plan` reads the same fields."""

    attn_implementation: str = doc(
        '"" = the library default (transformers picks sdpa) | sdpa | flash_attention_2 (needs the flash-attn '
        "package and CUDA) | eager (materialises the s x s scores: the planner counts their memory)"
    )
    global_batch_size: int = doc(
        "0 = off; else the optimizer-step batch over all processes, as papers state it (sequences; DPO: pairs; "
        "GRPO: completions): the per-process knob (gradient_accumulation_steps; GRPO: prompts_per_step) is "
        "derived = global_batch_size / (per-process unit x processes), an error when it does not divide "
        "(nebula_utils.train.batch.split_global_batch)"
    )

    def check_scale(self, unit_key: str = "per_device_train_batch_size") -> None:
        self.one_of("attn_implementation", ATTENTION_IMPLEMENTATIONS)
        self.at_least("global_batch_size", 0)
        unit = getattr(self, unit_key)
        if self.global_batch_size and self.global_batch_size % unit:
            raise ConfigError(
                f"key 'global_batch_size': {self.global_batch_size} is not a multiple of {unit_key} = {unit}"
            )

    def accumulation(self, processes: int | None = None) -> int:
        """gradient_accumulation_steps, derived from global_batch_size when set; `processes`: the
        training processes (None = this job's accelerate world size)."""
        if not self.global_batch_size:
            return self.gradient_accumulation_steps
        from ..train.batch import split_global_batch, world_size

        return split_global_batch(self.global_batch_size, self.per_device_train_batch_size, processes or world_size())

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for from_pretrained: the attention kernel when one is named."""
        return {"attn_implementation": self.attn_implementation} if self.attn_implementation else {}


@dataclasses.dataclass
class EngineFields:
    """The generation engine's parallelism (stages that sample with make_generator, and GRPO/OPD's vLLM rollouts)."""

    tensor_parallel_size: int = doc(
        "runtime-only: vLLM: GPUs one engine shards the model over (tensor parallel: weights and kv heads split); "
        "1 = one GPU per engine. Ignored by the transformers backend. `nebula plan` sizes this step's memory with it"
    )

    def check_engine(self) -> None:
        self.at_least("tensor_parallel_size", 1)


@dataclasses.dataclass
class SamplingFields(EngineFields):
    """Generation knobs of the stages that sample from a model (distillation, difficulty grading)."""

    backend: str = doc("auto (vLLM when installed and CUDA is present, else transformers) | transformers | vllm")
    batch_size: int = doc(
        "transformers backend: rows decoded together by the continuous-batching engine; 0 = the size measured "
        "once per machine and model (nebula_utils.inference.tuning: 128 rows in bf16 for SmolLM2 on the 2-core "
        "dev machine)"
    )
    temperature: float = doc("sampling temperature; 0 = greedy")
    top_p: float = doc("nucleus sampling mass")
    max_new_tokens: int = doc("token budget per answer; longer answers end with finish_reason 'length'")

    def check_sampling(self) -> None:
        self.check_engine()
        self.one_of("backend", BACKENDS)
        self.at_least("batch_size", 0)
        self.at_least("temperature", 0.0)
        self.within("top_p", 0.0, 1.0)
        self.above("top_p", 0.0)
        self.at_least("max_new_tokens", 1)

    def sampling(self, n: int, logprobs: bool = False) -> Any:
        """n samples per prompt with these knobs, seeded by the stage seed."""
        from ..inference.generation import SamplingParams

        return SamplingParams(
            n=n,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            logprobs=logprobs,
        )

    def make_generator(self, spec: str, label: str) -> Any:
        """The stage's sampler for `spec`: its backend, device, batch size and tensor parallelism;
        `label` names the progress lines (`distill 120/480 · 96 tok/s · ETA 3m10s`)."""
        from ..inference.generation import make_generator

        return make_generator(
            spec,
            self.backend,
            self.device,
            self.batch_size,
            tensor_parallel_size=self.tensor_parallel_size,
            label=label,
        )


def build_trl_config(stage: Any, config_cls: type, output_dir: Any, bf16: bool | None = None, **specific: Any) -> Any:
    """`config_cls` (trl.SFTConfig, DPOConfig, ...) from a training stage's shared knobs (the
    TrainFields names, which 20_sft shares), the stage's `specific` ones and its `trl_overrides` (an
    unknown name fails here, before any model is loaded). `bf16`: the resolved precision, or None to
    resolve `stage.bf16` here."""
    check_trl_overrides(stage.trl_overrides, config_cls)
    from ..train.throughput import resolve_bf16

    cuda = stage.use_cuda()
    if bf16 is None:
        # TRL defaults to bf16=True; decided per machine from flags and a measured matmul instead.
        # Measured on the demo's DPO (SmolLM2-135M, 2 cores): fp32 ran at 50-72 tokens/s.
        bf16 = resolve_bf16(stage.bf16, "cuda" if cuda else "cpu")[0]
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        seed=stage.seed,
        data_seed=stage.seed,
        max_length=stage.max_length,
        num_train_epochs=stage.num_train_epochs,
        max_steps=stage.max_steps if stage.max_steps > 0 else -1,
        per_device_train_batch_size=stage.per_device_train_batch_size,
        gradient_accumulation_steps=stage.accumulation(),
        learning_rate=stage.learning_rate,
        lr_scheduler_type=stage.lr_scheduler_type,
        warmup_steps=stage.warmup_ratio,  # transformers 5: a float < 1 is a ratio of total steps
        weight_decay=stage.weight_decay,
        activation_checkpointing=stage.gradient_checkpointing,  # TRL defaults it on; transformers 5 name
        logging_steps=stage.logging_steps,
        bf16=bf16,
        use_cpu=not cuda,
        report_to="none",
        save_strategy="no",  # the stage saves the final model itself, atomically
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    kwargs.update(specific)
    kwargs.update(stage.trl_overrides)
    return config_cls(**kwargs)


@dataclasses.dataclass
class TrainFields(ScaleFields):
    """Optimiser, schedule and LoRA knobs of the stages that train with a TRL trainer (DPO, KTO, RSFT).

    Same names, meanings and YAML defaults style as 20_sft, so a pipeline moves a setting between
    stages unchanged; everything else the TRL config offers goes through `trl_overrides`, checked by
    name against that config class when the trainer is built.
    """

    model: str = doc("the policy to train: model spec or an upstream checkpoint folder (e.g. @20_sft/model)")
    max_samples: int = doc("0 = every row; else a seeded sample of this many")
    max_length: int = doc("tokens per sequence (prompt + answer) after the chat template; longer ones are truncated")
    num_train_epochs: float = doc("passes over the data (ignored when max_steps > 0)")
    max_steps: int = doc("optimizer steps; > 0 overrides num_train_epochs, 0 = use epochs")
    per_device_train_batch_size: int = doc("examples (DPO: pairs) per device per forward pass")
    gradient_accumulation_steps: int = doc("forward passes per optimizer step")
    learning_rate: float = doc("peak learning rate (AdamW)")
    lr_scheduler_type: str = doc("transformers scheduler name: cosine, linear, constant, ...")
    warmup_ratio: float = doc("fraction of the steps spent warming up the learning rate")
    weight_decay: float = doc("AdamW weight decay")
    use_lora: bool = doc("train LoRA adapters (merged into the saved model) instead of every weight")
    lora_r: int = doc("LoRA rank")
    lora_alpha: int = doc("LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = doc("dropout on the LoRA path")
    lora_target_modules: list[str] = doc("module names to adapt; [] = all linear layers")
    gradient_checkpointing: bool = doc("recompute activations in backward: less memory, ~30% more compute")
    bf16: bool | str = doc(
        "bf16 autocast: auto (CUDA with bf16; a CPU with amx_bf16/avx512_bf16 whose measured bf16 matmul is "
        ">= 1.5x fp32, as 20_sft decides: nebula_utils.train.throughput.resolve_bf16) | true | false (fp32)"
    )
    logging_steps: int = doc("runtime-only: log the training curves every this many steps")
    trl_overrides: dict[str, Any] = doc(
        "any other field of the stage's TRL config, checked by name when the trainer is built"
    )

    def check_training(self) -> None:
        self.check_scale()
        self.above("num_train_epochs", 0.0)
        for key in ("max_samples", "max_steps", "weight_decay"):
            self.at_least(key, 0)
        self.above("learning_rate", 0.0)
        self.within("warmup_ratio", 0.0, 1.0)
        self.within("lora_dropout", 0.0, 1.0)
        for key in ("max_length", "per_device_train_batch_size", "gradient_accumulation_steps", "lora_r"):
            self.at_least(key, 1)
        self.at_least("lora_alpha", 1)
        self.at_least("logging_steps", 1)
        self.one_of("bf16", BF16_SETTINGS)

    def use_cuda(self) -> bool:
        from ..inference.models import pick_device

        return pick_device(self.device) == "cuda"

    def trl_kwargs(self, config_cls: type, output_dir: Any, **specific: Any) -> Any:
        """`config_cls` (e.g. trl.DPOConfig) from the shared knobs: see build_trl_config."""
        return build_trl_config(self, config_cls, output_dir, **specific)

    def lora_config(self) -> Any:
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


@dataclasses.dataclass
class LaunchFields:
    """How the training stages run their heavy step (nebula_utils.launch.job)."""

    launcher: str = doc(
        'runtime-only: "" = train in the notebook\'s kernel; else an accelerate config file (e.g. '
        "params/accelerate/8gpu_zero3.yaml): the train step runs as an `accelerate launch` job whose log "
        "the notebook streams, writing into the same run folder (same run id at every scale)"
    )

    def check_launcher(self) -> None:
        if self.launcher:
            from ..launch.job import launcher_path

            launcher_path(self.launcher)  # a missing file fails at plan time, not after the data cells
            if self.device.startswith("cuda:"):  # device: a StageConfig field
                raise ConfigError(
                    f"key 'device': {self.device} would put every process of the job on one GPU; "
                    "with a launcher use auto or cuda (each process takes its own)"
                )


def check_comparison(cfg: Any) -> None:
    """The value checks every comparison notebook shares (81-84, 90_report): one label per run when
    both are given, enough bootstrap resamples for stable CI endpoints, a plain report file name,
    and a target effect that is a score fraction in (0, 1)."""
    if cfg.labels and cfg.runs and len(cfg.labels) != len(cfg.runs):
        raise ConfigError(f"key 'labels': {len(cfg.labels)} labels for {len(cfg.runs)} runs")
    cfg.at_least("bootstrap_resamples", 100)
    if not cfg.report_name or "/" in cfg.report_name:
        raise ConfigError(f"key 'report_name': a file name without '/', got {cfg.report_name!r}")
    cfg.above("target_effect", 0.0)
    cfg.within("target_effect", 0.0, 1.0)


def variants_and_base(cfg: Any, find: Any, what: str) -> tuple[list[Any], list[Any]]:
    """(variant rows, every row) of an ablation notebook with a `base_run`: the variants' eval runs,
    the starting model's first as 'base' when known. With empty `runs` (the notebook opened as is),
    `find(results root)` -> (runs, labels, base_run) or None; ([], []) when it finds nothing."""
    from ..paths import results_root
    from ..report import compare as rp

    runs, labels, base_run = cfg.runs, cfg.labels, cfg.base_run
    if not runs:
        found = find(results_root())
        if found is None:
            return [], []
        runs, labels, base_run = found
        print(f"runs: {what} under {results_root()}")
    variants = rp.load_runs(runs, labels)
    return variants, ([rp.load_run(base_run, "base")] if base_run else []) + variants
