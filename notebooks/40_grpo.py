# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 40 · GRPO with verifiable rewards (RLVR)
#
# The last stage of both NebulaExp branches: the Instruct branch runs GRPO after its SFT stages
# (paper: Instruct average 60.99 → 61.85), the Reasoning branch runs it on **medium**-difficulty
# prompts from the base model (73.88 → 75.17); Tülu 3 ends with RLVR. TRL's `GRPOTrainer`
# samples `num_generations` completions per prompt, the workbench's verifiers score them (math,
# IFEval, code in the sandbox, format: the same code as the evaluation's fast path), and each
# completion's advantage is its reward relative to its group.
#
# * **Prompt pool** — an `rl` data version, filtered to the `difficulties` bands graded by
#   13_difficulty (a prompt the policy always or never solves gives a group with zero variance:
#   no gradient). `heldout_prompts` of the pool are kept out of training for a before/after check.
# * **Zero-variance groups** are counted every step (all right / all wrong) and, with
#   `filter_zero_variance`, masked out of the loss (TRL 1.16 has no such option: a trainer subclass
#   does it, see `nebula_utils/train/grpo.py`).
# * **Reward hacking** — the audit set of known exploits is run through the verifiers this run
#   rewarded with, and the final policy's held-out completions are checked for the exploits' signatures.
# * Rollouts through transformers on CPU; `rollout: vllm_colocate | vllm_server` uses TRL's vLLM
#   modes on a GPU (`nebula params 40_grpo`).

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
launcher: str = ""
model: str = "packaged:smollm2-135m-instruct"
data: str = ""
difficulties: list = []
tasks: list = []
max_prompts: int = 0
heldout_prompts: int = 16
heldout_samples: int = 2
reward_weights: dict = {"math": 1.0, "ifeval": 1.0, "code": 1.0, "format": 1.0}
format_weight: float = 0.0
verifier_workers: int = 2
num_generations: int = 4
prompts_per_step: int = 4
gradient_accumulation_steps: int = 1
global_batch_size: int = 0
max_steps: int = 20
learning_rate: float = 2.0e-6
lr_scheduler_type: str = "constant"
warmup_ratio: float = 0.0
weight_decay: float = 0.0
beta: float = 0.04
epsilon: float = 0.2
epsilon_high: float = 0.0
loss_type: str = "dapo"
scale_rewards: str = "group"
num_iterations: int = 1
max_completion_length: int = 128
temperature: float = 0.7
top_p: float = 1.0
mask_truncated_completions: bool = False
filter_zero_variance: bool = False
rollout: str = "auto"
vllm_server_url: str = ""
vllm_gpu_memory_utilization: float = 0.3
tensor_parallel_size: int = 1
gradient_checkpointing: bool = False
attn_implementation: str = ""
logging_steps: int = 1
trl_overrides: dict = {}

# %%
import matplotlib.pyplot as plt
import pandas as pd

from nebula_utils.launch import job as launch
from nebula_utils.runs import start_run
from nebula_utils.stages import grpo as stage
from nebula_utils.train import grpo as rl

run = start_run("40_grpo", globals())
cfg = run.config
run.run_id

# %% [markdown]
# ## Prompt pool
# Prompts per difficulty band in the input version (before the `difficulties` filter), then the
# train and held-out split per task and verifier.

# %%
pool, bands = rl.load_rl_prompts(cfg.data, cfg.difficulties, cfg.max_prompts, cfg.seed, cfg.tasks)
rl.check_verifiers(pool, cfg.reward_weights)
train_ds, heldout = rl.split_heldout(pool, cfg.heldout_prompts, cfg.seed)
band_counts, split_counts = stage.pool_table(bands, train_ds, heldout)
print(
    f"difficulties {cfg.difficulties or 'all'}, tasks {cfg.tasks or 'all'}: {len(train_ds)} prompts, {len(heldout)} held out"
)
display(band_counts)
split_counts

# %% [markdown]
# ## Train
# The held-out prompts are sampled with the starting policy first, then GRPO runs for
# `max_steps` steps of `prompts_per_step` × `num_generations` completions, then the final policy
# is sampled on the same held-out prompts.

# %%
metrics = launch.train("40_grpo", cfg, run.run_dir)  # in the kernel, or an accelerate job (`launcher`)
samples = rl.read_heldout(run.run_dir)
pd.DataFrame(metrics).T

# %% [markdown]
# ## Per-step curves
# Reward per verifier (TRL's `rewards/reward_<name>/mean`), pass rate (all rows and per
# verifier), completion length, KL to the starting policy (logged when `beta` > 0), the fraction
# of tokens whose ratio was clipped and of truncated completions, the fraction of zero-variance
# groups (all right / all wrong), and throughput. Every row is in `train_log.json`.

# %%
steps = rl.step_table(run.run_dir)
fig = stage.plot_steps(steps, f"GRPO · {run.run_id}")
fig.savefig(run.path("steps.png"), dpi=100)
plt.show()

# %% [markdown]
# ## Held-out prompts: starting vs final policy
# Pass rate and rate of completions flagged as suspected exploits, as the mean over prompts of
# each prompt's mean over its samples; the change is paired by prompt (95% bootstrap over
# prompts). With a few held-out prompts this is a sanity check, not the evaluation: 60_eval is.

# %%
heldout_metrics = rl.heldout_summary(samples, seed=cfg.seed)
stage.heldout_table(heldout_metrics)

# %% [markdown]
# ## Reward-hacking audit
# First the fixed audit set (`nebula_utils/assets/reward_hacking_audit.jsonl`: known exploits
# with the verdict each must get, and controls that must still score) through the verifiers this
# run rewarded with. Then the held-out completions of both policies, flagged when their verifier
# gave a reason that only an exploit gets (answer spraying, hedging, echoing the prompt,
# degenerate repetition, keyword stuffing, early exit, empty or over-long answers; ordinary wrong
# answers are not flags). A flag rate that rises with training is the sign of a policy learning to
# game its reward.

# %%
audit = rl.audit_verifiers()
print(f"audit set: {audit['as_expected']}/{audit['cases']} verdicts as expected")
display(pd.DataFrame(audit["failures"], columns=["id", "verifier", "attack", "score", "reason"]))
stage.hacking_table(samples)

# %%
audit_metrics = {"audit/verdicts_as_expected": {"value": audit["as_expected"] / audit["cases"], "n": audit["cases"]}}
run.finish(metrics=metrics | heldout_metrics | audit_metrics)
