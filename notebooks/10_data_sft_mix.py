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
# # 10 · Data: the SFT mix and the RL prompt pool
#
# This stage builds the training data of the pipeline from sources a fresh machine has without
# the Hugging Face Hub, and writes two **data versions** that later stages read:
#
# - `<run_dir>/sft`: chat samples with a reference answer — reasoning-gym math items with a
#   worked solution ending in `The final answer is $\boxed{…}$`, and HumanEval problems with
#   their canonical solutions. Only the HumanEval `train` half is used; the `eval` half (a fixed
#   SHA-256 split of the task ids) stays out of training for the evaluation stage. Plus
#   IFEval-style constraint prompts composed from lm-eval's instruction registry as
#   **prompt-only** rows (the chat ends with the user turn): no dataset answer exists, so the
#   teacher writes one in 11_distill and 12_filter keeps it only when the ifeval verifier passes
#   it. SFT training leaves prompt-only rows out.
# - `<run_dir>/rl`: prompts with a verifier and its reference — reasoning-gym math, IFEval-style
#   constraint prompts (another seed than the SFT ones), and HumanEval `train` problems not used
#   for SFT.
#
# Each version folder holds the rows (`datasets.save_to_disk`), a `version.json` with the
# content hash, and four manifests: source, processing (counts in/out and drop reasons per
# step), consumption (filled by the runs that read it) and evaluation isolation.
#
# The `../shared/data` files (GSM8K train, MMLU dev, the LLaMA-Factory Alpaca demo) are an
# optional extra: set `shared_data_dir` to that folder to add them.

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
sft_math_tasks: list[str] = ["chain_sum", "leg_counting", "fraction_simplification", "simple_geometry", "lcm"]
sft_math_per_task: int = 40
sft_code_n: int = 40
sft_ifeval_n: int = 64
sft_ifeval_max_instructions: int = 2
rl_math_tasks: list[str] = ["chain_sum", "simple_equations", "leg_counting"]
rl_math_per_task: int = 32
rl_ifeval_n: int = 64
rl_ifeval_max_instructions: int = 2
rl_code_n: int = 32
shared_data_dir: str = ""
shared_per_source: int = 100

# %%
import matplotlib.pyplot as plt
import pandas as pd

from nebula_utils.data import mixing
from nebula_utils.data.versions import load_version, read_manifests
from nebula_utils.runs import start_run
from nebula_utils.stages import data_sft_mix as stage

run = start_run("10_data_sft_mix", globals())
cfg = run.config
print(run.run_id, run.run_dir)

# %% [markdown]
# ## SFT parts
# One part per source. A reasoning-gym item whose reference answer fails the task's own scorer
# is dropped and counted (`fails_own_scorer`); malformed rows of an ingested file go to
# `<run_dir>/quarantine/<source>.jsonl`.

# %%
sft_parts = stage.sft_parts(cfg, run.path("quarantine"))
pd.DataFrame(
    [
        {"part": k, "rows": len(p.dataset), "in": p.step["count_in"], **p.step["drop_reasons"]}
        for k, p in sft_parts.items()
    ]
)

# %% [markdown]
# The mix concatenates the parts and shuffles them with the run seed; the processing manifest
# lists every step, and each step balances (in = out + filtered + quarantined).

# %%
sft_info = mixing.write_mixed_version(sft_parts, "sft", run.path("sft"), cfg.seed, name="sft_base")
sft_manifests = read_manifests(sft_info.path)
print(sft_info.num_rows, "rows, content hash", sft_info.content_hash[:16])
stage.processing_table(sft_manifests)

# %% [markdown]
# ## RL prompt pool

# %%
rl_parts = stage.rl_parts(cfg)
rl_info = mixing.write_mixed_version(rl_parts, "rl", run.path("rl"), cfg.seed, name="rl_pool")
rl_manifests = read_manifests(rl_info.path)
print(rl_info.num_rows, "prompts, content hash", rl_info.content_hash[:16])
stage.processing_table(rl_manifests)

# %% [markdown]
# ## What the mixes contain
# Rows and median lengths (characters) per task and source.

# %%
sft_frame = stage.row_lengths(load_version(sft_info.path))
rl_frame = stage.row_lengths(load_version(rl_info.path))
stage.mix_table(sft_frame)

# %%
stage.mix_table(rl_frame)

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
sft_frame["source"].value_counts().sort_index().plot.barh(ax=axes[0], title="SFT rows per source")
rl_frame["source"].value_counts().sort_index().plot.barh(ax=axes[1], title="RL prompts per source")
for task, group in sft_frame.groupby("task"):
    axes[2].hist(group["answer_chars"], bins=30, alpha=0.6, label=task)
axes[2].set(title="SFT answer length", xlabel="characters", ylabel="rows")
axes[2].legend()
fig.tight_layout()
fig.savefig(run.path("mix_distributions.png"), dpi=100)

# %% [markdown]
# ## Evaluation isolation
# Rows are checked by id and lineage against the held-out HumanEval `eval` split (a hit means a
# held-out problem leaked into training), and every row of a source derived from a benchmark
# counts as a hit (reasoning-gym's `gsm_symbolic` templates are GSM8K test problems).
# Text-overlap decontamination against the benchmarks is a separate step.

# %%
stage.isolation_table({"sft": sft_manifests, "rl": rl_manifests})

# %% [markdown]
# ## One sample per task

# %%
sft_rows = load_version(sft_info.path).to_pandas().drop_duplicates("task")
for _, row in sft_rows.iterrows():
    last = row["messages"][-1]
    answer = (
        last["content"][:300] if last["role"] == "assistant" else "(prompt-only: the teacher answers in 11_distill)"
    )
    print(f"--- {row['task']} ({row['source']})\n{row['messages'][0]['content'][:300]}\n>>> {answer}\n")

# %%
rl_rows = load_version(rl_info.path).to_pandas().drop_duplicates("source")
rl_rows[["task", "source", "verifier", "prompt", "reference"]]

# %%
quarantined = sum(s["quarantined"] for m in (sft_manifests, rl_manifests) for s in m["processing"]["steps"])
hits = sft_manifests["evaluation_isolation"]["total_hits"] + rl_manifests["evaluation_isolation"]["total_hits"]
run.finish(
    metrics={
        "sft_rows": {"value": sft_info.num_rows, "n": sft_info.num_rows},
        "rl_prompts": {"value": rl_info.num_rows, "n": rl_info.num_rows},
        "quarantined_rows": {"value": quarantined},
        "isolation_hits": {"value": hits},
    },
    outputs={"sft": sft_info, "rl": rl_info},
)
