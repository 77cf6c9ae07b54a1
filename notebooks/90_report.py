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
# # 90 · Report
#
# Compares finished runs — usually evaluation runs of a base model and of the checkpoints trained
# from it, or the variants of an ablation grid — by reading their folders under `results/`, never
# live objects, so a report can be rebuilt at any time from what the runs wrote.
#
# * **Table** — one row per run: each benchmark's score, the suite average (unweighted mean of the
#   benchmark scores) and per-capability averages, each with its delta against the baseline run.
#   **▲ up / ▼ down** when the 95% paired-bootstrap interval of the delta excludes 0, **≈ flat**
#   when it contains 0. Items are paired by id across the runs' `samples/*.jsonl`.
# * **Lineage** — for each row, the checkpoints, training runs and data versions (with their
#   manifests) that produced it.
# * **Plots** — training curves of the parent training runs, benchmark scores with confidence
#   intervals, a capability trade-off, and the data funnel (rows in/out per processing step).

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
runs: list = []
labels: list = []
baseline: int = 0
report_name: str = "report"
bootstrap_resamples: int = 1000
tradeoff_axes: list = []

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from nebula_utils.io import atomic_write_json, atomic_write_text
from nebula_utils.paths import results_root
from nebula_utils.report import compare as rp
from nebula_utils.report import lineage as lin
from nebula_utils.report import plots
from nebula_utils.runs import start_run
from nebula_utils.stages.report import html_path

run = start_run("90_report", globals())
cfg = run.config
paths = cfg.runs or [str(p) for p in rp.find_eval_runs(results_root())]
results = rp.load_runs(paths, cfg.labels)
lineages = [lin.lineage(r.path) for r in results]
long = rp.comparison(results, cfg.baseline, cfg.bootstrap_resamples, cfg.seed)
print(f"{len(results)} runs; baseline: {results[rp.baseline_index(results, cfg.baseline)].label}")

# %% [markdown]
# ## Results
# Cells read `score (delta vs baseline, mark)`. `config hash` identifies the resolved config of the
# row's run; `data version` is the nearest data version in its lineage (`<run>/<version>@<content hash>`).

# %%
rp.summary_table(results, long, lineages)

# %% [markdown]
# ## Deltas with their 95% intervals
# `n_paired` items were paired by id; `benchmarks_paired` benchmarks entered an average's delta.

# %%
long[long["mark"] != "baseline"].round(4).reset_index(drop=True)

# %% [markdown]
# ## Lineage
# What produced each row: checkpoints → training runs → data versions (sources, processing steps,
# consumers, evaluation-isolation hits) → the runs that wrote them and their parent versions.

# %%
for result, tree in zip(results, lineages):
    display(Markdown(f"**{result.label}** — `{result.path}`"))
    display(lin.lineage_table(tree))

# %% [markdown]
# ## Training curves
# Train loss of every training run in each row's lineage (nearest first).

# %%
plots.plot_training_curves(results, lineages)
plt.show()

# %% [markdown]
# ## Benchmark scores

# %%
plots.plot_benchmark_bars(long)
plt.show()

# %% [markdown]
# ## Capability trade-off

# %%
plots.plot_tradeoff(long, cfg.tradeoff_axes)
plt.show()

# %% [markdown]
# ## Data funnel
# Rows in and out of every processing step of the data versions behind these runs (a derived
# version's funnel starts with its parents' steps).

# %%
funnel = rp.funnel_table(lin.data_versions(lineages, leaves_only=True))
plots.plot_funnel(funnel)
plt.show()
funnel

# %%
atomic_write_text(run.path("comparison.csv"), long.to_csv(index=False))
atomic_write_json(run.path("lineage.json"), {r.label: tree for r, tree in zip(results, lineages)})
run.finish(
    metrics={"report/runs": {"value": len(results), "n": len(results)}} | rp.delta_metrics(long),
    report_html=str(html_path(cfg.report_name, run.run_dir)),
)

# %% [markdown]
# The runner (`nebula run`) renders this executed notebook, code hidden, to
# `results/reports/<report_name>.html`; after a plain papermill run use
# `nebula render <executed notebook> --out <file>.html`.
