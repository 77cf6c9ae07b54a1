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
# # 00 · Environment
#
# Every pipeline starts by recording where it ran: library versions, devices, thread counts, and
# whether the models the later stages need can be loaded **offline**. Results from different
# machines are only comparable when this page says they are.
#
# * `models` lists model specs (`tiny-random`, `packaged:smollm2-135m-instruct`, a local folder, a
#   Hub id). Packaged and tiny models are built into the cache here once, so later stages start fast.
# * On CPU, the thread count matters: generation-heavy trainers ran up to 40× slower on 2 cores
#   without `OMP_NUM_THREADS` set.

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
models: list = ["tiny-random"]

# %%
import pandas as pd

from nebula_utils.runs import library_versions, start_run
from nebula_utils.stages.environment import device_report, model_report

run = start_run("00_environment", globals())
run.run_id

# %% [markdown]
# ## Libraries and devices

# %%
versions = library_versions()
devices = device_report()
pd.DataFrame({"version": versions}).T

# %%
pd.Series(devices, name="value").to_frame()

# %% [markdown]
# ## Models
# Each spec is resolved to a local Hugging Face folder (converted from GGUF or built on first use).

# %%
models_table = pd.DataFrame(model_report(models))
models_table

# %%
run.finish(
    metrics={"env/models_ok": {"value": float(models_table["ok"].mean()), "n": len(models_table)}},
    manifests={"environment": {"versions": versions, "devices": devices, "models": models_table.to_dict("records")}},
)
