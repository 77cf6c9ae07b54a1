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
# # 81 · Ablation: SFT stages — base → +complex → +patch
#
# **Question.** Does each of the Instruct branch's three SFT stages earn its place? The base mix
# (broad), then the complex mix (multi-step math, code, multi-constraint instructions), then the
# patch built from the weaknesses measured after stage 2 (17_patch).
#
# **The paper's claim.** NebulaExp's three SFT stages take Qwen3-8B-nothink from **55.01 to 60.99**
# on the Instruct average (+5.98 points); the stages are reported together.
#
# **Rows** are the evaluation runs of the model before SFT and after each stage (the demo's
# `60_eval_base`, `60_eval_sft_base`, `60_eval_sft_complex`, `60_eval_sft`; empty `runs` = the
# newest ones under the results root). Each stage is compared with **the stage before it** over the
# same items (paired 95% bootstrap interval, minimum detectable effect), on the suite average and
# on its **target capabilities**: the tasks of the mix it trained on, or the patch's measured weak
# categories. The conclusion is read from the intervals.

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
runs: list = []
labels: list = []
report_name: str = "sft_stages"
bootstrap_resamples: int = 1000
target_effect: float = 0.05
claim_points: float = 5.98

# %%
import matplotlib.pyplot as plt
from IPython.display import HTML, Markdown, display

from nebula_utils.io import atomic_write_text
from nebula_utils.report import compare as rp
from nebula_utils.report import html as rh
from nebula_utils.report import lineage as lin
from nebula_utils.report import plots
from nebula_utils.report.verdict import conclusion_text, verdict
from nebula_utils.runs import start_run
from nebula_utils.stages import ablation_sft_stages as stage
from nebula_utils.stages.report import display_bases, html_path

run = start_run("81_ablation_sft_stages", globals())
cfg = run.config
results = rp.load_runs(*stage.variant_runs(cfg))
labels = [r.label for r in results]
lineages = [lin.lineage(r.path) for r in results]
longs = stage.chain(results, cfg.bootstrap_resamples, cfg.seed, cfg.target_effect)
targets = [stage.stage_targets(tree) for tree in lineages[1:]]
print("stages:", " -> ".join(labels), "| targets:", dict(zip(labels[1:], targets)))

# %% [markdown]
# ## Each stage against the one before it
# The average and the stage's target capabilities; `mark` is up / down when the paired 95% interval
# excludes 0, flat otherwise (then the MDE says how large a change could have shown).

# %%
table = stage.stage_rows(labels, longs, targets)
table

# %% [markdown]
# **Figure 1.** Change against the previous stage, per benchmark and for the average: the point is
# the paired difference of means, the whiskers its 95% bootstrap interval, the grey band ±MDE.

# %%
for long in longs:
    plots.plot_deltas(long)
    plt.show()

# %% [markdown]
# **Figure 2.** Scores per benchmark with 95% intervals, every stage.

# %%
everything = rp.comparison(results, 0, cfg.bootstrap_resamples, cfg.seed, cfg.target_effect)
plots.plot_benchmark_bars(everything)
plt.show()

# %%
display(HTML(rh.results_table(everything, results, labels[0])))

# %% [markdown]
# ## Evaluation power (every stage against the first row)

# %%
display(HTML(rh.power_table(everything, labels[0], cfg.target_effect)))

# %% [markdown]
# ## Conclusion
# Per stage, from the interval of its change against the previous stage (average, then its
# targets); then the whole chain, first row to last, against the paper's +5.98 points.

# %%
lines = [
    conclusion_text(verdict(long, label, col))
    for label, long, cols in zip(labels[1:], longs, targets)
    for col in ["average", *cols]
]
whole = conclusion_text(verdict(everything, labels[-1]), cfg.claim_points, "three SFT stages, 55.01 -> 60.99")
conclusion = "\n\n".join(lines + [whole])
display(Markdown(conclusion))

# %% [markdown]
# ## Runs and lineage

# %%
bases = display_bases(run.run_dir)
display(HTML(rh.runs_table(results, lineages, bases)))
display(HTML(rh.lineage_html(results, lineages, bases)))

# %%
atomic_write_text(run.path("stages.csv"), table.to_csv(index=False))
atomic_write_text(run.path("conclusion.md"), conclusion + "\n")
run.finish(
    metrics={"report/runs": {"value": len(results), "n": len(results)}} | stage.chain_metrics(table),
    report_html=str(html_path(cfg.report_name, run.run_dir)),
)
