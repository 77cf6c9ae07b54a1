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
#   user turns.
# * **LoRA or full** — `use_lora` trains adapters (merged into the saved model so every later stage
#   and the evaluation see a plain checkpoint).
# * **Packing and bf16** — `packing` puts several samples into one row with no padding (each still
#   attends only to itself); `bf16: auto` trains in bf16 autocast where this machine's bf16
#   matmuls measure faster than fp32. The metrics report tokens/s, the padding fraction and the
#   model FLOP utilisation (MFU) against the measured matmul peak of the precision used.
# * The stage records the data version it consumed in that version's consumption manifest.

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
model: str = "packaged:smollm2-135m-instruct"
data: str = ""
max_samples: int = 0
max_length: int = 512
num_train_epochs: float = 1.0
max_steps: int = 0
per_device_train_batch_size: int = 4
gradient_accumulation_steps: int = 1
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
logging_steps: int = 5
trl_overrides: dict = {}

# %%
import matplotlib.pyplot as plt
import pandas as pd

from nebula_utils.runs import start_run
from nebula_utils.train.sft import load_sft_dataset, loss_table, train_sft

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
# ## Train

# %%
metrics = train_sft(cfg, run.run_dir)
pd.DataFrame(metrics).T

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
