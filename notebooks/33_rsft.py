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
# # 33 · Rejection-sampling fine-tuning (RSFT)
#
# The bridge between SFT and RL in industrial pipelines: the current policy answers each verifiable
# prompt k times, the rule verifiers score the answers, the best **passing** answer per prompt is
# kept, and the policy is fine-tuned on its own verified outputs with the SFT trainer of 20_sft.
#
# * **Effective sample rate** per task = kept / generated (at most 1/k), beside the pass rate
#   (passing / generated) and the prompt coverage (prompts with a kept answer), with 95% intervals:
#   where the rate is 0 the policy cannot yet bootstrap itself on that task.
# * The kept answers are written as an `sft` data version, so the lineage of the checkpoint runs
#   back through the prompts it was sampled on.

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
learning_rate: float = 2e-05
lr_scheduler_type: str = "cosine"
warmup_ratio: float = 0.05
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
backend: str = "auto"
batch_size: int = 8
tensor_parallel_size: int = 1
temperature: float = 0.8
top_p: float = 0.95
max_new_tokens: int = 256
data: str = ""
max_prompts: int = 32
k: int = 4
min_score: float = 1.0
allow_truncated: bool = False
verifier_workers: int = 2
assistant_only_loss: bool = True
packing: bool = False
audit: bool = True
audit_batch_size: int = 8

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from nebula_utils.evaluate.preference_audit import audit_table, run_audit
from nebula_utils.io import atomic_write_text
from nebula_utils.runs import start_run
from nebula_utils.stages import rsft as stage
from nebula_utils.train import rsft
from nebula_utils.train.preference import plot_curves

run = start_run("33_rsft", globals())
cfg = run.config
run.run_id

# %% [markdown]
# ## Sample k answers per prompt and keep the best verified one

# %%
records, manifests, select_step = stage.load_records(cfg)
policy = cfg.make_generator(cfg.model, "rsft: sample")
sampling = cfg.sampling(cfg.k, logprobs=True)
groups, kept, samples, timing = rsft.timed_rejection_sample(
    policy, records, sampling, cfg.min_score, cfg.verifier_workers, cfg.allow_truncated
)
atomic_write_text(run.path("samples.csv"), pd.DataFrame(samples).to_csv(index=False))
print(f"{len(records)} prompts x {cfg.k} samples: kept an answer for {len(kept)} prompts")
pd.DataFrame(
    [
        {
            "task": r["task"],
            "prompt": r["messages"][-2]["content"][:80],
            "kept answer": r["messages"][-1]["content"][:80],
        }
        for r in kept[:6]
    ]
)

# %% [markdown]
# ## Effective sample rate per task

# %%
metrics = rsft.sample_rates(samples) | timing
display(rsft.rate_table(metrics))
if not kept:
    raise ValueError(f"no sampled answer passed its verifier (min_score={cfg.min_score}): nothing to fine-tune on")
info = stage.write_kept(cfg, kept, len(records), manifests, select_step, policy, run.path("data"))
del policy  # free the sampling copy of the weights before training
print(f"wrote {info.num_rows} kept answers to {info.path}")

# %% [markdown]
# ## Fine-tune on the kept answers
# 20_sft's trainer (`train.sft.train_sft`), configured from 20_sft's defaults and this stage's knobs.

# %%
metrics |= rsft.train_rsft(cfg.sft_config(info.path), run.run_dir)
plot_curves(run.run_dir, f"RSFT · {run.run_id}")
plt.show()

# %% [markdown]
# ## Preference audit
# The starting policy is the reference: `implicit reward` says whether fine-tuning on its own
# verified answers moved it toward the preferred answers of the audit pairs.

# %%
if cfg.audit:
    model_dir, out = str(run.path("model")), run.path("audit.csv")
    frame, audit = run_audit(model_dir, cfg.reference(), cfg.device, cfg.audit_batch_size, out)
    metrics |= audit
    display(audit_table(audit))

# %%
run.finish(metrics=metrics, outputs={"data": info}, consumed=[info.path])  # the fine-tuning read it
