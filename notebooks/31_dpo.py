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

# %%

# %% [markdown]
# # 31 · DPO
#
# Direct Preference Optimization with TRL's `DPOTrainer`: raise the policy's log-probability of the
# chosen answer relative to the rejected one, measured against a frozen reference (the starting
# checkpoint; under LoRA its base weights, with the adapters disabled). Tülu 3 follows SFT with
# length-normalised DPO: `loss_type: sigmoid_norm` divides each answer's log-ratio by its token count.
#
# * **Curves** — loss, learning rate, grad norm, and the implicit rewards β·log π/π_ref of chosen and
#   rejected answers, their margin and the reward accuracy (share of pairs with chosen > rejected).
# * **Preference audit** — after training, the trained and the reference model pick between the
#   answers of hand-written pairs (short-correct vs long-vacuous, appropriate vs excessive refusal,
#   plain-correct vs polished-wrong, correction vs sycophancy), to catch reward hacking.

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
launcher: str = ""
model: str = "packaged:smollm2-135m-instruct"
max_samples: int = 0
max_length: int = 512
num_train_epochs: float = 1.0
max_steps: int = 0
per_device_train_batch_size: int = 4
gradient_accumulation_steps: int = 1
global_batch_size: int = 0
learning_rate: float = 5e-07
lr_scheduler_type: str = "linear"
warmup_ratio: float = 0.1
weight_decay: float = 0.0
use_lora: bool = False
lora_r: int = 16
lora_alpha: int = 32
lora_dropout: float = 0.05
lora_target_modules: list = []
gradient_checkpointing: bool = False
bf16: str = "auto"  # or true / false
attn_implementation: str = ""
logging_steps: int = 1
trl_overrides: dict = {}
data: str = ""
ref_model: str = ""
beta: float = 0.1
loss_type: str = "sigmoid"
precompute_ref_log_probs: bool = False
audit: bool = True
audit_batch_size: int = 8

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from nebula_utils.evaluate.preference_audit import audit_table, run_audit
from nebula_utils.launch import job as launch
from nebula_utils.runs import start_run
from nebula_utils.train.preference import curve_table, dpo_dataset, plot_curves

run = start_run("31_dpo", globals())
cfg = run.config
run.run_id

# %% [markdown]
# ## Pairs
# A few of the chosen/rejected pairs this stage trains on.

# %%
preview = dpo_dataset(cfg.data, cfg.max_samples, cfg.seed)
print(f"{len(preview)} pairs from {cfg.data}")
pd.DataFrame(
    {
        "prompt": [p[-1]["content"][:80] for p in preview["prompt"][:5]],
        "chosen": [c[0]["content"][:80] for c in preview["chosen"][:5]],
        "rejected": [r[0]["content"][:80] for r in preview["rejected"][:5]],
    }
)

# %% [markdown]
# ## Train

# %%
metrics = launch.train("31_dpo", cfg, run.run_dir)
pd.DataFrame(metrics).T

# %% [markdown]
# ## Training curves

# %%
plot_curves(run.run_dir, f"DPO ({cfg.loss_type}, β={cfg.beta:g}) · {run.run_id}")
plt.show()
curve_table(run.run_dir).tail()

# %% [markdown]
# ## Preference audit
# `reference` / `trained`: share of audit pairs where the model gives the preferred answer the higher
# mean log-probability per token; `implicit reward`: share where log π/π_ref favours the preferred
# answer (did training move toward it). 95% bootstrap intervals; n pairs per category.

# %%
if cfg.audit:
    model_dir, out = str(run.path("model")), run.path("audit.csv")
    frame, audit = run_audit(model_dir, cfg.reference(), cfg.device, cfg.audit_batch_size, out)
    metrics |= audit
    display(audit_table(audit))

# %%
run.finish(metrics=metrics)
