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
# # 32 · KTO
#
# Kahneman-Tversky Optimization with TRL's `KTOTrainer`: it learns from **unpaired** thumbs-up /
# thumbs-down labels, the kind of feedback products collect, instead of pairs. Here the labels
# come from the preference pairs with the pairing thrown away: each chosen answer is *desirable*,
# each rejected one *undesirable*, shuffled so that the trainer never sees which two belong together.
# The loss compares each answer's log-ratio against the reference with a batch estimate of the
# policy's KL to the reference (the KTO paper's reference point).
#
# The curves, the checkpoint and the preference audit are the same as in 31_dpo.

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
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
loss_type: str = "kto"
desirable_weight: float = 1.0
undesirable_weight: float = 1.0
audit: bool = True
audit_batch_size: int = 8

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from nebula_utils.evaluate.preference_audit import audit_table, run_audit
from nebula_utils.runs import start_run
from nebula_utils.train.preference import curve_table, kto_dataset, plot_curves, train_kto

run = start_run("32_kto", globals())
cfg = run.config
run.run_id

# %% [markdown]
# ## Unpaired examples
# The desirable and undesirable answers in the order the trainer reads them.

# %%
preview = kto_dataset(cfg.data, cfg.max_samples, cfg.seed)
print(f"{len(preview)} examples from {cfg.data}: {sum(preview['label'])} desirable")
pd.DataFrame(
    {
        "prompt": [p[-1]["content"][:80] for p in preview["prompt"][:6]],
        "completion": [c[0]["content"][:80] for c in preview["completion"][:6]],
        "desirable": preview["label"][:6],
    }
)

# %% [markdown]
# ## Train

# %%
metrics = train_kto(cfg, run.run_dir)
pd.DataFrame(metrics).T

# %% [markdown]
# ## Training curves
# KTO logs the rewards of desirable (`chosen`) and undesirable (`rejected`) answers, their margin and
# the batch KL estimate; it has no pairwise reward accuracy.

# %%
plot_curves(run.run_dir, f"KTO (β={cfg.beta:g}) · {run.run_id}")
plt.show()
curve_table(run.run_dir).tail()

# %% [markdown]
# ## Preference audit
# As in 31_dpo: `reference` / `trained` policy preference (mean log-prob per token) and the
# `implicit reward` log π/π_ref, per category with 95% bootstrap intervals.

# %%
if cfg.audit:
    model_dir, out = str(run.path("model")), run.path("audit.csv")
    frame, audit = run_audit(model_dir, cfg.reference(), cfg.device, cfg.audit_batch_size, out)
    metrics |= audit
    display(audit_table(audit))

# %%
run.finish(metrics=metrics)
