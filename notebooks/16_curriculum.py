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
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 16 · Curriculum: the SFT mixes and the RL pool
#
# The Instruct branch of NebulaExp-8B runs **three SFT stages** in a row: a broad *base* mix, a
# *complex* mix (multi-constraint instructions, code, multi-step math) and a small *patch* mix
# aimed at weak spots (built by 17_patch from the weaknesses measured after stage 2). The
# Reasoning branch runs GRPO on **medium-difficulty** prompts. This stage cuts the first two mixes
# and the RL pool out of the curated data versions written by the curation notebooks (1x):
#
# - a mix with `mix_complexity: complex` takes only the hard and multi-constraint rows of every
#   capability — at least `min_if_instructions` IF instructions, at least `min_code_statements`
#   statements of code, at least `min_math_steps` computation lines of math, or a `hard`
#   difficulty label — and chooses **before** the others,
#   with per-task quotas, so every capability present is in it;
# - every mix is a data version of its own (`<run_dir>/<mix>`), a child of the curated version,
#   with two more processing steps — `select:<mix>` (which rows it may take, the others counted
#   by reason) and `mix:<mix>` (equal per-task quotas, shuffled with the run seed);
# - from the second mix on, the mix step carries a **change log** against the previous mix: the
#   count per task before and after, with the reason;
# - mixes are disjoint when `exclusive` is on, so no sample is trained on twice.

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
data: str = ""
rl_data: str = ""
mixes: list[str] = ["base", "complex"]
mix_tasks: dict[str, list[str]] = {"base": [], "complex": ["complex_if", "code", "math_reasoning"]}
mix_difficulties: dict[str, list[str]] = {"base": [], "complex": []}
mix_shares: dict[str, float] = {"base": 0.6, "complex": 0.4}
mix_complexity: dict[str, str] = {"complex": "complex"}
min_if_instructions: int = 2
min_math_steps: int = 3
min_code_statements: int = 4
exclusive: bool = True
rl_difficulties: list[str] = ["medium"]
rl_size: int = 0

# %%
import pandas as pd

from nebula_utils.data.versions import read_manifests
from nebula_utils.runs import start_run
from nebula_utils.stages import curriculum as stage

run = start_run("16_curriculum", globals())
cfg = run.config
print(run.run_id, run.run_dir)

# %% [markdown]
# ## Which rows are complex, and why

# %%
stage.complexity_table(cfg)

# %% [markdown]
# ## The SFT mixes
# Rows per task in each mix; the base mix spreads over every task, the complex one holds the hard
# rows of each capability.

# %%
mixes = stage.build_curriculum(cfg, run.run_dir)
counts = stage.task_counts(mixes)
counts

# %%
ax = counts.T.plot.bar(stacked=True, figsize=(8, 4), title="SFT curriculum: rows per task and mix")
ax.set(xlabel="mix (training order)", ylabel="rows")
ax.figure.tight_layout()
ax.figure.savefig(run.path("curriculum_tasks.png"), dpi=100)

# %% [markdown]
# ## What each mix took, and why the rest was left out
# The `select` step of every mix balances: rows in = rows kept + rows left out by reason.

# %%
pd.DataFrame(
    [
        {
            "mix": name,
            **read_manifests(info.path)["processing"]["steps"][-2]["drop_reasons"],
            "selected": read_manifests(info.path)["processing"]["steps"][-2]["count_out"],
            "rows": info.num_rows,
        }
        for name, info in mixes.items()
    ]
).fillna(0)

# %% [markdown]
# ## Mixing change log
# Each mix against the one trained before it.

# %%
stage.changelog_table(mixes)

# %% [markdown]
# ## The RL pool
# Prompts whose difficulty label (pass rate of the reference policy, from 13_difficulty) is in
# `rl_difficulties`; prompts every sample solves or none does carry no GRPO signal.

# %%
rl_info = stage.build_rl_pool(cfg, run.path("rl_pool")) if cfg.rl_data else None
if rl_info is not None:
    display(read_manifests(rl_info.path)["processing"]["steps"][-2])
    display(stage.task_counts({"rl_pool": rl_info}))

# %%
metrics = {f"rows/{name}": {"value": info.num_rows, "n": info.num_rows} for name, info in mixes.items()}
if rl_info is not None:
    metrics["rows/rl_pool"] = {"value": rl_info.num_rows, "n": rl_info.num_rows}
run.finish(metrics=metrics, outputs=mixes | ({"rl_pool": rl_info} if rl_info is not None else {}))
