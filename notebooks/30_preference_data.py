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
# # 30 · Preference data
#
# Chosen/rejected pairs for DPO and KTO, from the **candidate groups** that 11_distill and 12_filter
# keep whole (every candidate with its scores), or sampled **on policy** as Tülu 3 does: the current
# policy answers each prompt k times, the rule verifiers score the answers, best is paired with worst.
#
# * **Signal and margin** — candidates are ordered by `signal` (the verifier score, 12_filter's judge,
#   or a reward key); a pair needs `signal(chosen) − signal(rejected) ≥ min_margin`.
# * **Only useful answers are chosen** — not truncated, and passing the verifier when one scored it,
#   so a judge that likes a long answer the verifier fails cannot make it the chosen one.
# * **Length bias** — pairs are length-matched (`max_length_ratio` on word counts), except that a
#   *long but useless* rejected answer is kept on purpose: that pair teaches against verbosity.
#   The length bias of the input's pairs and of the written pairs is measured below.

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
backend: str = "auto"
batch_size: int = 8
tensor_parallel_size: int = 1
temperature: float = 0.8
top_p: float = 0.95
max_new_tokens: int = 256
data: str = ""
source: str = "auto"
max_prompts: int = 0
signal: str = "verifier"
min_margin: float = 0.5
pass_threshold: float = 1.0
max_length_ratio: float = 1.5
keep_long_useless: bool = True
policy: str = "packaged:smollm2-135m-instruct"
k: int = 4
verifier_workers: int = 2

# %%
import pandas as pd

from nebula_utils.data.preference import build_pairs
from nebula_utils.runs import start_run
from nebula_utils.stages import preference_data as stage

run = start_run("30_preference_data", globals())
cfg = run.config
print(run.run_id, run.run_dir)

# %% [markdown]
# ## Candidate groups
# From `data` directly (`groups`), or answered by the policy (`on_policy`).

# %%
rows, manifests, select_step, source = stage.load_input(cfg)
generator = None
if source == "on_policy":
    groups, generator = stage.sample_on_policy(cfg, rows, manifests["version"]["schema"])
else:
    groups = rows
print(f"source: {source}; {len(groups)} groups, {sum(len(g['candidates']) for g in groups)} candidates")
pd.DataFrame(
    [
        {"id": g["id"], "task": g["task"], "candidates": len(g["candidates"]), "input reason": g["preference_reason"]}
        for g in groups[:8]
    ]
)

# %% [markdown]
# ## Pairs
# Each pair's `preference_reason` names the signal values, the word counts and the guard that admitted it.

# %%
pairs, drops = build_pairs(groups, cfg.rules())
print(f"{len(pairs)} pairs from {len(groups)} groups; dropped: {dict(drops)}")
pd.DataFrame(
    [
        {
            "task": p["task"],
            "chosen": p["candidates"][p["chosen"]]["content"][:80],
            "rejected": p["candidates"][p["rejected"]]["content"][:80],
            "reason": p["preference_reason"],
        }
        for p in pairs[:8]
    ]
)

# %% [markdown]
# ## Length bias
# `chosen_longer`: share of pairs whose chosen answer has more words (0.5 = no bias);
# `log_length_ratio`: mean log(words chosen / words rejected) (0 = no bias), before ("in") and after ("out").

# %%
metrics = stage.pair_metrics(groups, pairs, len(groups), drops)
fig = stage.plot_lengths(groups, pairs, cfg.max_length_ratio, run.path("pair_lengths.png"))
pd.DataFrame(metrics).T

# %%
info = stage.write_pairs(cfg, pairs, drops, len(groups), manifests, select_step, run.path("pairs"), generator)
print(f"wrote {info.num_rows} pairs to {info.path}")

# %%
run.finish(metrics=metrics, outputs={"pairs": info})
