"""Stage 40_grpo: GRPO with verifiable rewards (RLVR) on a difficulty-banded prompt pool.

NebulaExp's Instruct branch ends with GRPO after its SFT stages; its Reasoning branch trains
GRPO on medium-difficulty prompts (pass rate between 13_difficulty's thresholds) from the base
model; Tülu 3 ends with RLVR. The stage config holds the knobs an RL ablation changes (group
size, KL beta, clipping, loss type, completion length, temperature, learning rate, steps, the
pool's difficulty bands); any other `trl.GRPOConfig` field goes through `trl_overrides`, checked
by name. The trainer lives in nebula_utils.train.grpo.

Rollouts (`rollout`): `transformers` generates with the policy itself (CPU or GPU);
`vllm_colocate` runs a vLLM engine in the training process, sharing the GPU
(`vllm_gpu_memory_utilization` of its memory); `vllm_server` sends prompts to a separate
`trl vllm-serve --model <model>` process at `vllm_server_url` and pushes weights to it after
every step. `auto` = vllm_colocate when vLLM is installed and CUDA is present, else transformers.
The vLLM modes need CUDA and the `gpu` extra; they are not exercised by the CPU test suite.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..config import ConfigError, StageConfig, check_trl_overrides, doc
from ._shared import EngineFields, LaunchFields, ScaleFields

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")  # TRL 1.16 loss_type values used here
SCALE_REWARDS = ("group", "batch", "none")
ROLLOUTS = ("auto", "transformers", "vllm_colocate", "vllm_server")
BANDS = ("easy", "medium", "hard")  # nebula_utils.data.difficulty.LABELS


@dataclass
class GRPOStageConfig(ScaleFields, EngineFields, LaunchFields, StageConfig):
    upstream: ClassVar[dict[str, str]] = {"data": "16_curriculum/rl_pool"}
    builtin_inputs: ClassVar[dict[str, str]] = {"data": "rl"}

    model: str = doc("policy to start from: model spec or an upstream checkpoint folder (e.g. @20_sft/model)")
    data: str = doc('rl data version (prompts + verifier + reference); "" = the newest 16_curriculum/rl_pool')
    difficulties: list[str] = doc(
        "difficulty bands to train on (easy | medium | hard, 13_difficulty's labels); [] = every prompt"
    )
    tasks: list[str] = doc("tasks to train on (math_reasoning, complex_if, code, ...); [] = every task")
    max_prompts: int = doc("0 = every prompt of the bands; else a seeded sample of this many")
    heldout_prompts: int = doc("prompts held out of training: initial vs final policy pass rate and hacking flags")
    heldout_samples: int = doc("completions per held-out prompt for that check")
    reward_weights: dict[str, float] = doc(
        "verifier -> reward weight (math, ifeval, code, format); each row's verifier needs one"
    )
    format_weight: float = doc("weight of the answer-format reward (explicit final answer, parsable code); 0 = off")
    verifier_workers: int = doc("sandboxes alive at once when scoring code rows")
    num_generations: int = doc("group size G: completions sampled per prompt (advantages are relative within a group)")
    prompts_per_step: int = doc(
        "prompts per optimizer step and training process; the step trains on prompts_per_step x num_generations "
        "completions (x the processes under an accelerate launcher)"
    )
    gradient_accumulation_steps: int = doc("forward/backward passes the step's completions are split into")
    max_steps: int = doc("optimizer steps (the budget: max_steps x prompts_per_step x num_generations completions)")
    learning_rate: float = doc("peak learning rate (AdamW)")
    lr_scheduler_type: str = doc("transformers scheduler name: constant, cosine, linear, ...")
    warmup_ratio: float = doc("fraction of the steps spent warming up the learning rate")
    weight_decay: float = doc("AdamW weight decay")
    beta: float = doc("KL coefficient against the starting policy; 0 = no reference model and no KL term")
    epsilon: float = doc("PPO clipping range of the importance ratio, lower side (1 - epsilon)")
    epsilon_high: float = doc("upper clipping bound 1 + epsilon_high (DAPO: 0.28); 0 = same as epsilon")
    loss_type: str = doc("TRL loss aggregation: grpo | dr_grpo | dapo | bnpo | cispo | sapo")
    scale_rewards: str = doc("advantage scaling: group (divide by the group's std) | batch | none (Dr. GRPO)")
    num_iterations: int = doc("PPO epochs per generated batch (mu); 1 = fully on-policy")
    max_completion_length: int = doc("token budget per completion; longer ones are truncated")
    temperature: float = doc(
        "rollout sampling temperature (13_difficulty grades at 0.7 by default: keep them equal so a band means the same)"
    )
    top_p: float = doc("rollout nucleus sampling mass")
    mask_truncated_completions: bool = doc("leave truncated completions out of the loss (DAPO)")
    filter_zero_variance: bool = doc(
        "mask completions of zero-variance groups (all right or all wrong) out of the loss; they are counted either way"
    )
    rollout: str = doc("auto | transformers | vllm_colocate | vllm_server (see the module docstring)")
    vllm_server_url: str = doc('vllm_server: base URL of `trl vllm-serve`, e.g. "http://localhost:8000"')
    vllm_gpu_memory_utilization: float = doc("vllm_colocate: share of GPU memory the vLLM engine may take")
    gradient_checkpointing: bool = doc("recompute activations in backward: less memory, ~30% more compute")
    logging_steps: int = doc("runtime-only: log metrics every this many steps")
    trl_overrides: dict[str, Any] = doc("any other trl.GRPOConfig field, checked by name when the trainer is built")

    def check(self) -> None:
        self.check_launcher()
        self.check_scale("num_generations")
        self.check_engine()
        self.all_in("difficulties", BANDS)
        self.one_of("loss_type", LOSS_TYPES)
        self.one_of("scale_rewards", SCALE_REWARDS)
        self.one_of("rollout", ROLLOUTS)
        from ..verifiers.base import VERIFIERS

        if not self.reward_weights:
            raise ConfigError("key 'reward_weights': give at least one verifier a weight")
        unknown = sorted(set(self.reward_weights) - set(VERIFIERS))
        if unknown:
            raise ConfigError(f"key 'reward_weights': unknown verifier {unknown[0]!r} (known: {', '.join(VERIFIERS)})")
        self.at_least("num_generations", 2)  # advantages compare completions within a group
        for key in ("prompts_per_step", "gradient_accumulation_steps", "max_steps", "num_iterations"):
            self.at_least(key, 1)
        for key in ("max_completion_length", "heldout_samples", "verifier_workers", "logging_steps"):
            self.at_least(key, 1)
        for key in ("max_prompts", "heldout_prompts", "beta", "format_weight", "weight_decay", "epsilon_high"):
            self.at_least(key, 0)
        if not self.global_batch_size:
            self.micro_batch(self.prompts_per_step)
        self.above("learning_rate", 0.0)
        self.above("temperature", 0.0)
        self.within("top_p", 0.0, 1.0)
        self.above("top_p", 0.0)
        self.within("epsilon", 0.0, 1.0)
        self.within("warmup_ratio", 0.0, 1.0)
        self.within("vllm_gpu_memory_utilization", 0.0, 1.0)
        if self.rollout == "vllm_server" and not self.vllm_server_url:
            raise ConfigError("key 'vllm_server_url': rollout vllm_server needs the server's base URL")

    def step_prompts(self, processes: int | None = None) -> int:
        """Prompts per process and optimizer step: prompts_per_step, or derived from global_batch_size
        (completions over all processes) = global_batch_size / (num_generations x processes)."""
        if not self.global_batch_size:
            return self.prompts_per_step
        from ..train.batch import split_global_batch, world_size

        return split_global_batch(self.global_batch_size, self.num_generations, processes or world_size())

    def micro_batch(self, prompts: int) -> int:
        """Completions per forward/backward pass: the step's prompts x num_generations split into
        gradient_accumulation_steps passes (an error when they do not split)."""
        completions = prompts * self.num_generations
        if completions % self.gradient_accumulation_steps:
            raise ConfigError(
                f"key 'gradient_accumulation_steps': {completions} completions per step "
                f"({prompts} prompts x num_generations) do not split into {self.gradient_accumulation_steps} passes"
            )
        return completions // self.gradient_accumulation_steps

    def use_cuda(self) -> bool:
        from ..inference.models import pick_device

        return pick_device(self.device).startswith("cuda")

    def resolved_rollout(self) -> str:
        """transformers | vllm_colocate | vllm_server; a vLLM mode without CUDA is a clear error."""
        from ..inference.generation import vllm_available

        if self.rollout == "auto":
            return "vllm_colocate" if vllm_available() and self.use_cuda() else "transformers"
        if self.rollout.startswith("vllm") and not (self.use_cuda() and vllm_available()):
            raise ConfigError(f"key 'rollout': {self.rollout} needs CUDA and the vllm package (pip install -e .[gpu])")
        return self.rollout

    def to_trl(self, output_dir: str | Path, reward_weights: list[float]):
        from trl import GRPOConfig

        check_trl_overrides(self.trl_overrides, GRPOConfig)
        cuda = self.use_cuda()
        rollout = self.resolved_rollout()
        kwargs: dict[str, Any] = dict(
            output_dir=str(output_dir),
            seed=self.seed,
            data_seed=self.seed,
            max_steps=self.max_steps,
            per_device_train_batch_size=self.micro_batch(self.step_prompts()),
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            num_generations=self.num_generations,
            learning_rate=self.learning_rate,
            lr_scheduler_type=self.lr_scheduler_type,
            warmup_steps=self.warmup_ratio,  # transformers 5: a float < 1 is a ratio of total steps
            weight_decay=self.weight_decay,
            beta=self.beta,
            epsilon=self.epsilon,
            epsilon_high=self.epsilon_high or self.epsilon,
            loss_type=self.loss_type,
            scale_rewards=self.scale_rewards,
            num_iterations=self.num_iterations,
            max_completion_length=self.max_completion_length,
            temperature=self.temperature,
            top_p=self.top_p,
            mask_truncated_completions=self.mask_truncated_completions,
            reward_weights=reward_weights,
            use_vllm=rollout != "transformers",
            vllm_mode="server" if rollout == "vllm_server" else "colocate",
            vllm_server_base_url=self.vllm_server_url or None,
            vllm_gpu_memory_utilization=self.vllm_gpu_memory_utilization,
            vllm_tensor_parallel_size=self.tensor_parallel_size,  # vllm_colocate: GPUs per engine
            # TRL defaults to checkpointing on; on CPU at 135M it only costs time.
            activation_checkpointing=self.gradient_checkpointing,
            # TRL defaults to bf16=True; fp32 off CUDA (GRPO in bf16 on CPU is unmeasured; 20_sft measures it).
            bf16=cuda,
            use_cpu=not cuda,
            logging_steps=self.logging_steps,
            report_to="none",
            save_strategy="no",  # the stage saves the final policy itself, atomically
            disable_tqdm=True,
            dataloader_num_workers=0,
            remove_unused_columns=False,  # the reward functions read `verifier` and `reference`
        )
        kwargs.update(self.trl_overrides)
        return GRPOConfig(**kwargs)


# --------------------------------------------------------------------------- notebook tables and plots


def pool_table(bands: dict[str, int], train: Any, heldout: Any):
    """Prompts per difficulty band in the input version, and per task/verifier in the train and held-out splits."""
    import pandas as pd

    split = pd.concat(
        [
            pd.DataFrame({"task": d["task"], "verifier": d["verifier"], "split": name})
            for name, d in (("train", train), ("heldout", heldout))
            if len(d)
        ]
    )
    table = split.groupby(["task", "verifier", "split"]).size().unstack(fill_value=0)
    return pd.Series(bands, name="prompts in the version").rename_axis("difficulty").to_frame(), table


STEP_PANELS = (  # (title, [(log key or prefix*, label)])
    ("reward per verifier", [("rewards/*/mean", None)]),
    ("pass rate", [("pass_rate", "all"), ("verifiers/*/pass_rate", None)]),
    ("completion length (tokens)", [("completions/mean_length", "mean"), ("completions/max_length", "max")]),
    ("KL to the start policy", [("kl", "kl")]),
    ("clipped tokens (fraction)", [("clip_ratio/region_mean", "region"), ("completions/clipped_ratio", "truncated")]),
    (
        "zero-variance groups (fraction)",
        [
            ("zero_variance/frac_groups", "all"),
            ("zero_variance/all_pass_frac", "all right"),
            ("zero_variance/all_fail_frac", "all wrong"),
        ],
    ),
    ("throughput (tokens/s)", [("tokens_per_s", "prompt+completion"), ("generated_tokens_per_s", "generated")]),
    ("loss", [("loss", "loss")]),
)


def _series(steps: Any, key: str, label: str | None) -> list[tuple[str, Any]]:
    if "*" not in key:
        return [(label or key, steps[key])] if key in steps and steps[key].notna().any() else []
    head, _, tail = key.partition("*")
    cols = [c for c in steps.columns if c.startswith(head) and c.endswith(tail) and steps[c].notna().any()]
    return [(c[len(head) : len(c) - len(tail)], steps[c]) for c in cols]


def plot_steps(steps: Any, title: str = ""):
    """One panel per logged quantity against the optimizer step (train_log.json rows)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(16, 6.5), sharex=True)
    for ax, (name, keys) in zip(axes.flat, STEP_PANELS):
        lines = [s for key, label in keys for s in _series(steps, key, label)]
        for label, values in lines:
            ax.plot(steps["step"], values.astype(float), marker="o", ms=3, label=label)
        if not lines:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
        elif len(lines) > 1:
            ax.legend(fontsize=7)
        ax.set_title(name, fontsize=10)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def heldout_table(summary: dict[str, Any]):
    """Initial vs final policy on the held-out prompts: value [95% CI] per metric, n = prompts."""
    import pandas as pd

    def cell(m: dict | None) -> str:
        return "—" if not m else f"{m['value']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"

    rows = []
    for name in ("pass_rate", "hacking_rate"):
        parts = {p: summary.get(f"heldout/{name}_{p}") for p in ("initial", "final", "delta")}
        present = [m for m in parts.values() if m]
        if present:
            rows.append({"metric": name, **{p: cell(m) for p, m in parts.items()}, "prompts": present[-1]["n"]})
    return pd.DataFrame(rows, columns=["metric", "initial", "final", "delta", "prompts"])


def hacking_table(rows: list[dict[str, Any]]):
    """Completions flagged per exploit signature and policy (initial / final)."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["policy", "hacking", "verifier"])
    flagged = frame[frame["hacking"].notna()]
    if flagged.empty:
        return pd.DataFrame({"completions": [len(frame)], "flagged": [0]})
    return flagged.groupby(["policy", "verifier", "hacking"]).size().rename("completions").reset_index()
