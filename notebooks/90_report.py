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
# live objects, so a report can be rebuilt at any time from what the runs wrote. Items are paired
# by id across the runs' `samples/*.jsonl`; every change carries its paired 95% bootstrap interval
# and its **minimum detectable effect** (MDE), so a flat result says whether nothing changed or
# the benchmark had too few items to tell.

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
target_effect: float = 0.05

# %%
import matplotlib.pyplot as plt
from IPython.display import HTML, Markdown, display

from nebula_utils.io import atomic_write_json, atomic_write_text
from nebula_utils.paths import results_root
from nebula_utils.report import compare as rp
from nebula_utils.report import html as rh
from nebula_utils.report import lineage as lin
from nebula_utils.report import plots
from nebula_utils.runs import start_run
from nebula_utils.stages.report import display_bases, html_path

run = start_run("90_report", globals())
cfg = run.config
paths = cfg.runs or [str(p) for p in rp.find_eval_runs(results_root())]
results = rp.load_runs(paths, cfg.labels)
base_label = results[rp.baseline_index(results, cfg.baseline)].label
lineages = [lin.lineage(r.path) for r in results]
bases = display_bases(run.run_dir)
long = rp.comparison(results, cfg.baseline, cfg.bootstrap_resamples, cfg.seed, cfg.target_effect)

# %% [markdown]
# ## Results

# %%
display(Markdown(rp.results_text(long, base_label, cfg.target_effect)))
display(HTML(rh.results_table(long, results, base_label)))

# %% [markdown]
# **Figure 1.** Change against the baseline per benchmark and for the suite average: the point is
# the paired difference of means, the whiskers its 95% bootstrap interval, the grey band ±MDE.
# Green: the interval excludes 0 upwards; red: downwards; grey: flat.

# %%
plots.plot_deltas(long)
plt.show()

# %% [markdown]
# ## Evaluation power
# The MDE is the smallest change whose paired 95% interval would exclude 0 at the variance these
# runs show, `1.96 · sd(paired differences) / √n` (derivation and the fallbacks for identical runs
# and 0/1 items: `nebula_utils/stats.py`). A change of exactly the MDE is detected about half
# the time; 80% power needs 1.43 × the MDE.

# %%
display(HTML(rh.power_table(long, base_label, cfg.target_effect)))

# %% [markdown]
# ## Runs and lineage
# Paths are relative to the repository (`<results>/` marks a results root outside it). Each
# lineage opens to the checkpoints, training runs and data versions (rows, content hash,
# sources, processing steps, consumers, evaluation-isolation hits) behind the row.

# %%
display(HTML(rh.runs_table(results, lineages, bases)))
display(HTML(rh.lineage_html(results, lineages, bases)))

# %% [markdown]
# **Figure 2.** Train loss of every training run in each row's lineage (nearest first).

# %%
plots.plot_training_curves(results, lineages)
plt.show()

# %% [markdown]
# **Table 4.** Preference audit of the rows trained by a preference stage (31_dpo, 32_kto, 33_rsft):
# share of hand-written pairs where the model prefers the right answer (higher mean log-probability
# per token) before (`reference`) and after training (`trained`), and where the implicit reward
# log π/π_ref favours it, with 95% bootstrap intervals. Categories: short-correct vs long-vacuous,
# appropriate vs excessive refusal, plain-correct vs polished-wrong, correction vs sycophancy;
# a gain in style categories with a loss on `factual_plain_vs_polished_wrong` is reward hacking.

# %%
audit = rp.audit_frame(results, lineages)
display(HTML(rh.frame_html(audit)) if len(audit) else Markdown("_No preference-trained run in these lineages._"))

# %% [markdown]
# **Figure 3.** Capability trade-off: each run's mean score on two capabilities with 95%
# intervals; the baseline is the hollow marker, and runs at the same place are set side by side.

# %%
plots.plot_tradeoff(long, cfg.tradeoff_axes)
plt.show()

# %% [markdown]
# **Figure 4.** Data funnel: rows in (light) and kept (dark) at every processing step of the data
# versions behind these runs (a derived version's funnel starts with its parents' steps).

# %%
funnel = rp.funnel_table(lin.data_versions(lineages, leaves_only=True))
plots.plot_funnel(funnel)
plt.show()

# %%
atomic_write_text(run.path("comparison.csv"), long.to_csv(index=False))
atomic_write_json(run.path("lineage.json"), {r.label: tree for r, tree in zip(results, lineages)})
run.finish(
    metrics={"report/runs": {"value": len(results), "n": len(results)}} | rp.delta_metrics(long),
    report_html=str(html_path(cfg.report_name, run.run_dir)),
)

# %% [markdown]
# Every number above is in `comparison.csv` in this run's folder (one row per run and column:
# score and interval, change and interval, mark, MDE and the rule that chose it). The runner
# (`nebula run`) renders this notebook, code hidden, to `results/reports/<report_name>.html`;
# after a plain papermill run use `nebula render <executed notebook> --out <file>.html`.
