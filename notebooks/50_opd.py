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
# # 50 · On-policy distillation (OPD), one teacher
#
# NebulaExp reports that single-teacher on-policy distillation with **4K samples** beats RL by
# 3.26 points on IFEval (+4.43 on the average). This notebook runs one OPD stage with TRL's
# `DistillationTrainer`:
#
# * the **student samples** a completion for each prompt (on-policy: it learns on its own mistakes);
# * the loss is the generalized JSD between the student's and the teacher's next-token
#   distributions at every token of that completion; `beta = 1` is the **reverse KL**
#   (mode-seeking: the student is pushed off tokens the teacher finds unlikely);
# * the **budget is counted in samples** (`num_samples`: completions trained on), the optimizer
#   steps follow from the batch size, so "OPD with 4K samples" is `num_samples: 4096`.
#
# Teacher and student must share a tokenizer (the distributions are compared id by id): checked
# before any model loads. Prompts come from an `rl` or `sft` data version (an sft row's answer is
# dropped: the student writes its own). The stage records the data version it consumed.

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
launcher: str = ""
model: str = "packaged:smollm2-135m-instruct"
teacher: str = ""
data: str = ""
max_prompts: int = 0
num_samples: int = 256
per_device_train_batch_size: int = 4
gradient_accumulation_steps: int = 2
global_batch_size: int = 0
learning_rate: float = 2.0e-5
lr_scheduler_type: str = "constant_with_warmup"
warmup_ratio: float = 0.05
weight_decay: float = 0.0
max_completion_length: int = 128
temperature: float = 1.0
top_p: float = 1.0
top_k: int = 0
beta: float = 1.0
gradient_checkpointing: bool = False
attn_implementation: str = ""
tensor_parallel_size: int = 1
logging_steps: int = 1
trl_overrides: dict = {}

# %%
import matplotlib.pyplot as plt
import pandas as pd

from nebula_utils.launch import job as launch
from nebula_utils.runs import start_run
from nebula_utils.stages.opd import budget_table, plot_curves
from nebula_utils.train.distill import load_prompts, loss_table

run = start_run("50_opd", globals())
cfg = run.config
print(f"student {cfg.model}\nteacher {cfg.teacher}")
run.run_id

# %% [markdown]
# ## Prompts and budget
# The prompts the student answers (by task), and the sample budget as optimizer steps.

# %%
prompts = load_prompts(cfg.data, cfg.max_prompts, cfg.seed)
display(pd.Series(prompts["task"]).value_counts().rename("prompts").to_frame())
budget_table(cfg, len(prompts)).to_frame("value")

# %% [markdown]
# ## Train

# %%
metrics = launch.train("50_opd", cfg, run.run_dir)
pd.DataFrame(metrics).T

# %% [markdown]
# ## Training curves
# The divergence falls as the student moves toward the teacher on its own samples; a collapsing
# entropy or completion length would flag mode collapse.

# %%
plot_curves(loss_table(run.run_dir), f"OPD · {run.run_id}")
plt.show()

# %%
run.finish(metrics=metrics)
