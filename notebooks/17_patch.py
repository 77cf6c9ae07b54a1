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
# # 17 · Targeted patch: the third SFT stage's mix, from measured weaknesses
#
# NebulaExp's Instruct branch ends its SFT with a small **patch** mix aimed at the weak spots the
# first two stages left. Here the weak spots are measured on the model itself:
#
# 1. the model after SFT stage 2 (`model`) answers the verifiable training-side prompts of the
#    curated corpus (`data`, 15_decontam's output; `prompts_per_category` of each task, so every
#    category is measured on the same n) `n_samples` times; the real verifiers (math
#    answer, IFEval checkers, HumanEval tests in the sandbox) score every answer — the grading
#    13_difficulty uses;
# 2. the **pass rate per task category** is reported with n (prompts) and a 95% bootstrap CI;
# 3. the worst categories (at most `max_categories`, pass rate at most `max_pass_rate`) are the
#    weaknesses; their prompts the model fails (pass rate ≤ `fail_at_most`) join the patch mix with
#    their own **verified** answer (the teacher's or the dataset's answer that passed 12_filter's
#    gates, verified again here);
# 4. the patch version's manifest says which weakness each row targets (`targets` of the
#    `mix:patch` step, and `targets.jsonl`), and its change log compares it with the previous mix.

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
model: str = ""
data: str = ""
previous_mix: str = ""
prompts_per_category: int = 16
n_samples: int = 4
max_categories: int = 2
max_pass_rate: float = 0.9
fail_at_most: float = 0.5
max_rows: int = 32
backend: str = "auto"
batch_size: int = 0
tensor_parallel_size: int = 1
temperature: float = 0.7
top_p: float = 0.95
max_new_tokens: int = 256
verifier_workers: int = 2

# %%
import pandas as pd

from nebula_utils.data.versions import read_manifests
from nebula_utils.runs import start_run
from nebula_utils.stages import patch as stage

run = start_run("17_patch", globals())
cfg = run.config
print(run.run_id, run.run_dir)

# %% [markdown]
# ## Score the current model on the training-side prompts

# %%
measured = stage.measure(cfg)
print(
    f"{len(measured.scored.prompts)} prompts scored x {cfg.n_samples} samples,",
    f"{len(measured.scored.quarantined)} quarantined; generator {measured.generator['backend']}",
)
pd.DataFrame(measured.scored.prompts).head(10)

# %% [markdown]
# ## Pass rate per category (n = prompts, 95% CI over prompts)

# %%
rates = stage.rate_frame(measured.rates)
rates["weak"] = rates["task"].isin(measured.weak)
rates

# %%
fig = stage.plot_rates(measured.rates, measured.weak, run.path("category_rates.png"))

# %% [markdown]
# ## The patch mix: failed prompts of the weak categories, with their verified answers
# The scoring step balances: rows in = patch candidates + rows left out by reason.

# %%
info = stage.write_patch(cfg, measured, run.run_dir)
steps = read_manifests(info.path)["processing"]["steps"][-3:]
pd.DataFrame([{k: s[k] for k in ("name", "count_in", "count_out", "drop_reasons")} for s in steps])

# %%
targets = pd.read_json(run.path("targets.jsonl"), lines=True) if info.num_rows else pd.DataFrame()
print(info.num_rows, "patch rows; change log:", steps[-1]["params"].get("changelog"))
targets.head(12)

# %%
run.finish(metrics=stage.metrics(measured, info), outputs={"patch": info})
