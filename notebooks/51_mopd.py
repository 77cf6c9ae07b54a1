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
# # 51 · Multi-teacher on-policy distillation (MOPD)
#
# NebulaExp fuses **four domain-specialist teachers** into one student with MOPD: **10K samples,
# +4.18 on the average**. Each prompt is distilled from the teacher of its domain, picked by the
# task label 14_classify_sample gave it (`teachers`: task → teacher; other tasks → `teacher`).
#
# The loss and the rest of the machinery are TRL's `DistillationTrainer` (see 50_opd); the subclass
# `nebula_utils.train.mopd.MOPDTrainer` only chooses, row by row, whose next-token distribution the
# student is compared to. Splitting a batch by teacher leaves the loss a sum over the same tokens,
# so with one teacher this stage is plain OPD exactly (a test checks identical losses and weights).
# At most `max_resident_teachers` teachers sit on the device at once (memory of the largest
# teacher, not the sum); the others wait in CPU memory or on disk.
#
# The full-scale recipe (`backend: vllm_servers`) uses TRL's experimental async trainer with one
# vLLM server per teacher; it needs a GPU cluster and is not run or tested here.

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
teachers: dict = {}
route_by: str = "task"
max_resident_teachers: int = 1
teacher_offload: str = "cpu"
backend: str = "local"
teacher_servers: dict = {}
student_server: str = ""

# %%
import json

import matplotlib.pyplot as plt
import pandas as pd

from nebula_utils.launch import job as launch
from nebula_utils.runs import start_run
from nebula_utils.stages.mopd import plot_teacher_divergence, teacher_frame
from nebula_utils.stages.opd import budget_table, plot_curves
from nebula_utils.train.distill import load_prompts, loss_table
from nebula_utils.train.mopd import route_prompts, routing_table

run = start_run("51_mopd", globals())
cfg = run.config
print(f"student {cfg.model}")
cfg.teacher_table()

# %% [markdown]
# ## Routing and budget
# Prompts per task label and the teacher each label is routed to.

# %%
prompts = route_prompts(load_prompts(cfg.data, cfg.max_prompts, cfg.seed), cfg.teachers, cfg.route_by, cfg.data)
display(routing_table(prompts, cfg.route_by))
budget_table(cfg, len(prompts)).to_frame("value")

# %% [markdown]
# ## Train

# %%
metrics = launch.train("51_mopd", cfg, run.run_dir)  # backend local or vllm_servers
pd.DataFrame(metrics).T

# %% [markdown]
# ## Per teacher
# Rows and completion tokens each teacher scored, and its mean divergence per token. The teacher
# pool's counters show how often a teacher was loaded and moved onto the device.

# %%
teacher_frame(metrics)

# %%
log = json.loads(run.path("train_log.json").read_text())
plot_teacher_divergence(log, cfg.teacher_ids(), f"MOPD per teacher · {run.run_id}")
plt.show()

# %%
plot_curves(loss_table(run.run_dir), f"MOPD · {run.run_id}")
plt.show()

# %%
run.finish(metrics=metrics)
