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
# # 20 · Supervised fine-tuning
#
# The first post-training stage of both recipes: NebulaExp-8B's Instruct branch runs three SFT
# stages (base mix → complex mix → patch), Tülu 3 one. This notebook runs **one** SFT stage with
# TRL's `SFTTrainer`; a pipeline chains several by passing the previous stage's `model` folder.
#
# * **Loss masking** — with `assistant_only_loss` the loss covers assistant tokens only (the chat
#   template's `{% generation %}` markers delimit them), so the model is not trained to produce
#   user turns. A **loss-mask audit** runs before training: one example as TRL prepared it, trained
#   tokens marked ⟦like this⟧, the fraction of tokens trained, and a stop with a clear error if no
#   assistant token would be trained (e.g. a template without `{% generation %}` markers).
# * **LoRA or full** — `use_lora` trains adapters (merged into the saved model so every later stage
#   and the evaluation see a plain checkpoint).
# * **Packing and bf16** — `packing` puts several samples into one row with no padding (each still
#   attends only to itself); `bf16: auto` trains in bf16 autocast where this machine's bf16
#   matmuls measure faster than fp32. The metrics report tokens/s, the padding fraction and the
#   model FLOP utilisation (MFU) against the measured matmul peak of the precision used.
# * **Checkpoints and resume** — every `save_steps` optimizer steps a checkpoint goes to
#   `checkpoints/`; an interrupted run (the runner's rerun keeps that folder) continues from the
#   newest one. The final `model/` is a standard Hugging Face folder with a model card (README.md)
#   naming the parent checkpoint, the data versions with their content hashes, the params, the run
#   id and the training metrics.
# * The stage records the data version it consumed in that version's consumption manifest.

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
launcher: str = ""
model: str = "packaged:smollm2-135m-instruct"
data: str = ""
max_samples: int = 0
max_length: int = 512
num_train_epochs: float = 1.0
max_steps: int = 0
per_device_train_batch_size: int = 4
gradient_accumulation_steps: int = 1
global_batch_size: int = 0
learning_rate: float = 2.0e-5
lr_scheduler_type: str = "cosine"
warmup_ratio: float = 0.05
weight_decay: float = 0.0
assistant_only_loss: bool = True
packing: bool = False
bf16: str = "auto"  # or true / false
use_lora: bool = False
lora_r: int = 16
lora_alpha: int = 32
lora_dropout: float = 0.05
lora_target_modules: list = []
gradient_checkpointing: bool = False
attn_implementation: str = ""
logging_steps: int = 5
save_steps: int = 100
trl_overrides: dict = {}

# %%
import matplotlib.pyplot as plt
import pandas as pd

from nebula_utils.launch import job as launch
from nebula_utils.runs import start_run
from nebula_utils.train.sft import load_sft_dataset, loss_table, prepare_sft, train_sft

run = start_run("20_sft", globals())
cfg = run.config
run.run_id

# %% [markdown]
# ## Training data
# A few rows of the data version this stage consumes.

# %%
preview = load_sft_dataset(cfg.data, cfg.max_samples, cfg.seed)
print(f"{len(preview)} samples from {cfg.data}")
pd.DataFrame(
    {
        "first turn": [m[0]["content"][:120] for m in preview["messages"][:5]],
        "turns": [len(m) for m in preview["messages"][:5]],
    }
)

# %% [markdown]
# ## Loss-mask audit
# The model, data and trainer are built here; the example below went through TRL's own
# preparation (chat template, assistant masks, truncation). Tokens inside ⟦ ⟧ carry loss. The audit
# is saved as `loss_mask_audit.txt` in the run folder; a run that would train no assistant token
# stops in this cell.

# %%
job = None if cfg.launcher else prepare_sft(cfg, run.run_dir)  # a launched job audits in its own log
print(job.audit.report() if job else f"launcher {cfg.launcher}: the job prepares and audits (launch.log)")
if job and job.resume_from:
    print(f"an interrupted run left {job.resume_from}: training continues from there")

# %% [markdown]
# ## Train

# %%
metrics = train_sft(cfg, run.run_dir, job) if job else launch.train("20_sft", cfg, run.run_dir)
pd.DataFrame(metrics).T

# %% [markdown]
# ## Model card
# `model/README.md`, written with the weights (its last section, the resolved params, is left out here).

# %%
print(run.path("model", "README.md").read_text().split("## Resolved params")[0])

# %% [markdown]
# ## Training loss

# %%
losses = loss_table(run.run_dir)
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(losses["step"], losses["loss"], marker="o")
ax.set(xlabel="step", ylabel="train loss", title=f"SFT loss · {run.run_id}")
plt.show()

# %%
run.finish(metrics=metrics)
