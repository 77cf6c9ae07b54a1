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
# # 15 · Deduplication and benchmark decontamination
#
# Before any training reads a data version, this stage removes
#
# - **duplicates** inside the corpus: exact (equal after folding case, punctuation, whitespace)
#   and near (MinHash of word 3-grams, estimated Jaccard ≥ `near_threshold`, found with
#   datasketch's MinHashLSH), keeping the first row of each group (`filtered`);
# - **contamination**: rows whose prompt or answer overlaps an item of an evaluation set in the
#   benchmark quarantine registry (`params/quarantine.yaml`) — exact match, word 8-gram overlap
#   (Tülu 3's rule: half of the item's informative 8-grams), or MinHash near-duplicate. These
#   rows are `quarantined` with their hits in `quarantine/contaminated.jsonl`.
#
# Registry entries whose files are absent (no `../shared`) are recorded as skipped with the
# reason; the PyPI-backed entries (HumanEval eval split, reasoning-gym eval items) are always
# checked. The hit counts go into the new version's evaluation-isolation manifest, the counts
# in/out and drop reasons into its processing manifest.

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
data: str = ""
shared_data_dir: str = "../shared/data"
registry: str = "params/quarantine.yaml"
dedup_exact: bool = True
dedup_near: bool = True
near_threshold: float = 0.8
num_perm: int = 128
shingle_n: int = 3
ngram_n: int = 8
ngram_min_overlap: float = 0.5
ngram_min_matches: int = 3
ngram_max_df: int = 4
min_words: int = 5
minhash_threshold: float = 0.7
minhash_min_words: int = 20
drop_contaminated: bool = True

# %%
import matplotlib.pyplot as plt
import pandas as pd

from nebula_utils.data.versions import load_version, read_manifests
from nebula_utils.runs import start_run
from nebula_utils.stages import decontam as stage

run = start_run("15_decontam", globals())
cfg = run.config
ds = load_version(stage.repo_path(cfg.data))
print(run.run_id, len(ds), "rows from", cfg.data)

# %% [markdown]
# ## Duplicates inside the corpus

# %%
dedup = stage.dedup_rows(cfg, ds)
print(dedup.counts or "no duplicates")
pd.DataFrame(
    [
        {"row": ds[i]["id"], "duplicate_of": ds[d]["id"], "reason": r, "similarity": s}
        for i, d, r, s in dedup.pairs()[:10]
    ]
)

# %% [markdown]
# ## Contamination hits per benchmark
# `hits` = training rows that match the benchmark by any method; the `rows_by_*` columns split
# them by method and by the side of the training row that matched.

# %%
decon = stage.decontaminate(cfg, ds)
hits = stage.hits_frame(decon)
hits

# %%
stage.example_hits(ds, decon)

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
pd.Series({"kept": sum(dedup.keep), **dedup.counts}).plot.barh(ax=axes[0], title="dedup")
checked = hits[hits["status"] == "checked"].set_index("name")
checked[["rows_by_exact", "rows_by_ngram", "rows_by_minhash"]].plot.barh(
    ax=axes[1], title="contaminated rows per benchmark"
)
fig.tight_layout()
fig.savefig(run.path("decontam.png"), dpi=100)

# %% [markdown]
# ## The decontaminated data version

# %%
info = stage.write_decontaminated(
    cfg, ds, dedup, decon, run.path("data"), run.path("quarantine", "contaminated.jsonl")
)
manifests = read_manifests(info.path)
step = manifests["processing"]["steps"][-1]
print(info.num_rows, "rows, content hash", info.content_hash[:16])
pd.DataFrame([{k: step[k] for k in ("count_in", "count_out", "filtered", "quarantined")} | step["drop_reasons"]])

# %%
iso = manifests["evaluation_isolation"]
pd.DataFrame(iso["benchmarks"])[["name", "n_items", "hits"]].assign(total=iso["total_hits"])

# %%
run.finish(
    metrics={
        "rows_in": {"value": len(ds)},
        "rows_out": {"value": info.num_rows, "n": info.num_rows},
        "exact_duplicates": {"value": dedup.counts.get("exact_duplicate", 0)},
        "near_duplicates": {"value": dedup.counts.get("near_duplicate", 0)},
        "contaminated_rows": {"value": step["quarantined"]},
        "benchmarks_checked": {"value": len(iso["benchmarks"])},
        "benchmarks_skipped": {"value": len(iso["skipped"])},
        **{f"hits/{b['name']}": {"value": b["hits"], "n": b["n_items"]} for b in iso["benchmarks"]},
    },
    outputs={"data": info},
)
