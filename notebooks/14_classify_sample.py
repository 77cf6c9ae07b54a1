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
# # 14 · Task classification and diversity-aware sampling
#
# NebulaExp-8B's data pipeline labels every prompt with a task category and samples the mix with
# per-category quotas and a diversity objective, so that no category drowns the others and
# near-identical prompts do not crowd out rare ones. This stage:
#
# 1. **classifies** each row's prompt into the task vocabulary (general chat, knowledge QA,
#    complex instruction following, code, math/reasoning, safety): high-precision rules first,
#    then a logistic regression on all-MiniLM-L6-v2 embeddings trained on labelled prompts from
#    real sources; its accuracy is measured on a held-out part of those prompts (95% bootstrap CI);
# 2. **samples** `target_fraction` of the rows with proportional per-task quotas, picking inside
#    each task (`selection`) by k-center greedy (farthest point first: the smallest *maximum*
#    distance, rare prompts first) or by k-means medoids (the row nearest each of k centroids: the
#    smallest *mean* distance, dense regions in proportion) on the embeddings;
# 3. compares the **coverage** of both pickers (distance of every row to its nearest selected
#    row) with random samples under the same quotas, and writes a child data version.

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
data: str = ""
shared_data_dir: str = "../shared/data"
classifier_per_class: int = 40
classifier_holdout: float = 0.3
classifier_C: float = 4.0
relabel: bool = True
target_fraction: float = 0.5
min_per_category: int = 1
selection: str = "kmeans"
random_baseline_seeds: int = 5
embed_batch_size: int = 64

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from nebula_utils.data.versions import load_version, read_manifests
from nebula_utils.runs import start_run
from nebula_utils.stages import classify_sample as stage
from nebula_utils.stats import bootstrap_mean

run = start_run("14_classify_sample", globals())
cfg = run.config
print(run.run_id, run.run_dir)

# %% [markdown]
# ## Classifier: labelled prompts and held-out accuracy
# The classifier is fit on the training part of the labelled prompts, scored on the held-out
# part, then refit on all of them to label the data. The trained classifier (with its held-out
# result) and the row embeddings are cached under `~/.cache/nebula`, keyed by a hash of all
# their inputs, so a rerun skips gathering and embedding the labelled prompts.

# %%
classified = stage.classify_rows(cfg)
accuracy = bootstrap_mean(classified.heldout["correct"], seed=cfg.seed)
accuracy_emb = bootstrap_mean(classified.heldout["correct_embedding_only"], seed=cfg.seed)
print("labelled prompts per source group:", classified.groups, "| from cache:", classified.from_cache)
pd.DataFrame(
    [
        {"classifier": "rules + embedding", **accuracy.as_metric()},
        {"classifier": "embedding only", **accuracy_emb.as_metric()},
    ]
)

# %%
pd.crosstab(
    pd.Series(classified.heldout["truth"], name="true task"),
    pd.Series(classified.heldout["predicted"], name="predicted"),
)

# %% [markdown]
# ## The data's rows: source label vs predicted task, and what decided

# %%
rows = pd.DataFrame(
    {
        "source_task": classified.ds["task"],
        "predicted": classified.labels,
        "by": classified.how,
        "prompt_chars": [len(p) for p in classified.prompts],
    }
)
pd.crosstab(rows["source_task"], rows["predicted"])

# %%
rows["by"].value_counts().to_frame("rows")

# %% [markdown]
# ## Diversity-aware sample

# %%
sample = stage.diversity_sample(cfg, classified)
random_mean = np.array([r["mean"] for r in sample["random"]])
random_max = np.array([r["max"] for r in sample["random"]])
coverage = pd.DataFrame(
    [{"selection": m, **cov} for m, cov in sample["by_method"].items()]
    + [{"selection": f"random (mean of {len(random_mean)})", "mean": random_mean.mean(), "max": random_max.mean()}]
)
print("quotas:", sample["quotas"], "| written:", cfg.selection, sample["coverage"])
coverage

# %%
rows["selected"] = False
rows.loc[sample["selected"], "selected"] = True
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
pd.crosstab(rows["predicted"], rows["selected"]).plot.barh(ax=axes[0], title="rows per predicted task")
axes[1].hist([rows["prompt_chars"], rows.loc[rows["selected"], "prompt_chars"]], bins=20, label=["all", "selected"])
axes[1].set(title="prompt length", xlabel="characters", ylabel="rows")
axes[1].legend()
coverage.set_index("selection")[["mean", "max"]].plot.bar(
    ax=axes[2], rot=0, title="distance to nearest selected (lower = better)"
)
fig.tight_layout()
fig.savefig(run.path("classify_sample.png"), dpi=100)

# %% [markdown]
# ## The sampled data version

# %%
info = stage.write_sampled(cfg, classified, sample, run.path("data"))
manifests = read_manifests(info.path)
print(info.num_rows, "rows, content hash", info.content_hash[:16])
pd.DataFrame(manifests["processing"]["steps"])[["name", "count_in", "count_out", "filtered", "quarantined"]]

# %%
load_version(info.path).to_pandas()["task"].value_counts().to_frame("rows")

# %%
run.finish(
    metrics={
        "classifier_heldout_accuracy": accuracy.as_metric(),
        "classifier_heldout_accuracy_embedding_only": accuracy_emb.as_metric(),
        "rows_in": {"value": len(classified.ds)},
        "rows_out": {"value": info.num_rows, "n": info.num_rows},
        "relabelled_rows": {"value": manifests["processing"]["steps"][-1]["relabelled"]},
        "coverage_mean_selected": {"value": sample["coverage"]["mean"]},
        "coverage_max_selected": {"value": sample["coverage"]["max"]},
        **{f"coverage_{k}_{m}": {"value": cov[k]} for m, cov in sample["by_method"].items() for k in ("mean", "max")},
        "coverage_mean_random": {"value": float(random_mean.mean()), "n": len(random_mean)},
        "coverage_max_random": {"value": float(random_max.mean()), "n": len(random_max)},
    },
    outputs={"data": info},
)
