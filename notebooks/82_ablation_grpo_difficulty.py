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
# # 82 · Ablation: GRPO by prompt difficulty at an equal budget
#
# **Question.** With the same GRPO budget (steps × prompts per step × group size), does training
# on *medium*-difficulty prompts help more than training on *easy* or *hard* ones?
#
# **The paper's claim.** GRPO on medium-difficulty prompts lifts NebulaExp's Reasoning branch from
# **73.88 to 75.17** (+1.29 points). The mechanism: 13_difficulty grades each prompt by the
# starting policy's pass rate; a prompt it always solves (easy) or never solves (hard) gives a group
# whose completions all get the same reward, so zero advantage and no gradient. Medium prompts give
# informative groups.
#
# **The grid** (`params/ablations/grpo_difficulty.yaml`): one variant per band, everything else
# equal; each variant's final model is evaluated on the suite's `dev` part (the `unseen` part is
# never read by an ablation). Every number below comes from the variants' run folders: pairs by
# item id, 95% paired-bootstrap intervals, and the minimum detectable effect (MDE) of each comparison.

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
runs: list = []
labels: list = []
baseline: str = "medium"
base_run: str = ""
report_name: str = "ablation_grpo_difficulty"
bootstrap_resamples: int = 1000
target_effect: float = 0.0129

# %%
import matplotlib.pyplot as plt
from IPython.display import HTML, Markdown, display

from nebula_utils.io import atomic_write_text
from nebula_utils.report import compare as rp
from nebula_utils.report import html as rh
from nebula_utils.report import lineage as lin
from nebula_utils.report import plots
from nebula_utils.runs import start_run
from nebula_utils.stages import ablation_grpo_difficulty as ab

run = start_run("82_ablation_grpo_difficulty", globals())
cfg = run.config
bands, rows = ab.load_variants(cfg)
trees = [lin.lineage(r.path) for r in bands]
baseline_label = bands[rp.baseline_index(bands, cfg.baseline)].label if bands else ""
if not bands:
    display(Markdown(ab.NO_RUNS))

# %% [markdown]
# ## The variants
# Each band's GRPO run: the budget must be equal across bands (a band with fewer prompts than the
# budget needs cycles through its pool); `zero-variance groups` is the mean fraction of groups per
# step whose completions all got the same reward.

# %%
grid = ab.grid_table(bands, trees)
budgets = set(grid.get("budget (completions)", []))
if bands:
    print("equal budget: " + (f"yes, {budgets.pop()} completions per band" if len(budgets) == 1 else f"NO: {budgets}"))
    display(HTML(rh.frame_html(grid)))

# %% [markdown]
# ## Lift of each band over the starting model
# Each band's final model against the model GRPO started from (the paper's comparison), on the
# suite's dev benchmarks and their unweighted average.

# %%
lift = (
    rp.comparison(rows, "base", cfg.bootstrap_resamples, cfg.seed, cfg.target_effect)
    if len(rows) > len(bands)
    else None
)
if lift is not None:
    display(Markdown(rp.results_text(lift, "base", cfg.target_effect)))
    display(HTML(rh.results_table(lift, rows, "base")))
    plots.plot_deltas(lift)
    plt.show()

# %% [markdown]
# ## The bands against each other
# Every band against the `baseline` band, paired by item: this is the ablation's own question.

# %%
pairwise = rp.comparison(bands, cfg.baseline, cfg.bootstrap_resamples, cfg.seed, cfg.target_effect) if bands else None
if pairwise is not None:
    display(Markdown(rp.results_text(pairwise, baseline_label, cfg.target_effect)))
    display(HTML(rh.results_table(pairwise, bands, baseline_label, number=2)))
    plots.plot_deltas(pairwise)
    plt.show()

# %% [markdown]
# ## Training signal per band
# Mean reward and the fraction of zero-variance groups at every step: the mechanism the paper's
# claim rests on (easy and hard pools should show more zero-variance groups than medium).

# %%
ab.plot_training(bands, trees)
plt.show()

# %% [markdown]
# ## Evaluation power
# The smallest change each comparison could have detected (MDE) and the items per benchmark a
# change of `target_effect` (default: the paper's +1.29 points) would need.

# %%
if pairwise is not None:
    display(HTML(rh.power_table(pairwise, baseline_label, cfg.target_effect)))

# %% [markdown]
# ## Conclusion
# Read from the suite-average intervals only: *up* / *down* when the 95% interval excludes 0,
# *no detectable effect* otherwise, with the MDE saying how large a change could have shown.

# %%
display(Markdown(ab.conclusion(lift, pairwise, baseline_label, cfg.target_effect) if bands else ab.NO_RUNS))

# %%
for name, table in (("pairwise", pairwise), ("lift", lift)):
    if table is not None:
        atomic_write_text(run.path(f"{name}.csv"), table.to_csv(index=False))
run.finish(
    metrics={"ablation/variants": {"value": len(bands), "n": len(bands)}} | ab.ablation_metrics(lift, pairwise),
    report_html=str(
        ab.AblationGRPODifficultyConfig.html_report_path({"report_name": cfg.report_name, "run_dir": str(run.run_dir)})
    ),
)
