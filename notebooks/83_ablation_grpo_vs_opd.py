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
# # 83 · Ablation: GRPO vs OPD at an equal sample budget, from the same SFT checkpoint
#
# **Question.** Starting from the same SFT checkpoint and training on the same number of student
# completions, does on-policy distillation from a teacher (OPD) improve instruction following and
# reasoning more than RL with verifiable rewards (GRPO)?
#
# **The paper's claim.** NebulaExp reports that single-teacher OPD with **4K samples beats RL by
# 3.26 points on IFEval and by 4.43 on the average**.
#
# **The grid** (`params/ablations/grpo_vs_opd.yaml`). Its base pipeline trains both arms from one
# `20_sft` checkpoint on the same RL prompts; the grid switches which arm's model the evaluation
# step scores, so both training runs are shared by the variants and run once. The budget is
# counted in **student completions trained on**: GRPO's `max_steps × prompts_per_step ×
# num_generations` against OPD's `num_samples`; the demo also matches optimizer steps and
# completions per step. GRPO then sees `num_generations` times fewer distinct prompt visits (its
# group of completions per prompt is what gives it an advantage signal). Budget and start are
# checked below from the training runs themselves. Evaluation: the verifiable suite's `dev` part
# (math reasoning, instruction following, code); every change carries its paired 95% bootstrap
# interval and its minimum detectable effect (MDE).

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
runs: list = []
labels: list = []
baseline: str = "grpo"
base_run: str = ""
report_name: str = "grpo_vs_opd"
bootstrap_resamples: int = 1000
target_effect: float = 0.05
claim_points: float = 4.43
claim_if_points: float = 3.26

# %%
import matplotlib.pyplot as plt
from IPython.display import HTML, Markdown, display

from nebula_utils.io import atomic_write_json, atomic_write_text
from nebula_utils.report import compare as rp
from nebula_utils.report import html as rh
from nebula_utils.report import lineage as lin
from nebula_utils.report import plots
from nebula_utils.runs import start_run
from nebula_utils.stages import ablation_grpo_vs_opd as ab
from nebula_utils.stages.report import display_bases

run = start_run("83_ablation_grpo_vs_opd", globals())
cfg = run.config
arms, rows = ab.load_arms(cfg)
trees = [lin.lineage(r.path) for r in arms]
bases = display_bases(run.run_dir)
base_label = arms[rp.baseline_index(arms, cfg.baseline)].label if arms else ""
if not arms:
    display(Markdown(ab.NO_RUNS))

# %% [markdown]
# ## Equal budgets, same start
# Each arm's training run (found through its evaluation's lineage): the checkpoint it started
# from, the completions it trained on, optimizer steps, prompt visits, token cap, learning rate,
# and its training signal from the first to the last step.

# %%
budgets = ab.budget_table([r.label for r in arms], trees)
same_budget, same_start = ab.equal_budgets(budgets), ab.same_start(budgets)
if arms:
    display(HTML(rh.frame_html(ab.short_starts(budgets, bases))))
    print("equal budgets" if same_budget else "BUDGETS DIFFER: this is not an equal-budget comparison")
    print("same start checkpoint" if same_start else "STARTS DIFFER: the arms did not start from one checkpoint")

# %% [markdown]
# ## The arms against each other
# The other arm against the baseline arm, paired by item: the ablation's own question.

# %%
pairwise = rp.comparison(arms, cfg.baseline, cfg.bootstrap_resamples, cfg.seed, cfg.target_effect) if arms else None
if pairwise is not None:
    display(Markdown(rp.results_text(pairwise, base_label, cfg.target_effect)))
    display(HTML(rh.results_table(pairwise, arms, base_label)))
    plots.plot_deltas(pairwise)
    plt.show()

# %% [markdown]
# ## Each arm against the starting checkpoint
# The lift of each arm over the SFT model both started from (when its evaluation is known).

# %%
lift = (
    rp.comparison(rows, "base", cfg.bootstrap_resamples, cfg.seed, cfg.target_effect)
    if len(rows) > len(arms)
    else None
)
if lift is not None:
    display(Markdown(rp.results_text(lift, "base", cfg.target_effect)))
    display(HTML(rh.results_table(lift, rows, "base", number=2)))
    plots.plot_benchmark_bars(lift)
    plt.show()

# %% [markdown]
# ## Training signal
# GRPO's mean verifier reward and OPD's divergence to its teacher at every optimizer step.

# %%
if arms:
    ab.plot_training(arms, trees)
    plt.show()

# %% [markdown]
# ## Evaluation power
# The smallest change the arms' comparison could have detected (MDE) per benchmark and
# capability, and the items per benchmark a change of `target_effect` would need.

# %%
if pairwise is not None:
    display(HTML(rh.power_table(pairwise, base_label, cfg.target_effect, number=3)))

# %% [markdown]
# ## Conclusion
# Read from the intervals: up or down when the paired 95% interval excludes 0, otherwise no
# detectable effect, with the MDE saying how large a change could have shown; the average and
# instruction following are set against the paper's numbers.

# %%
conclusion = ab.conclusion(pairwise, lift, cfg) if arms else ab.NO_RUNS
if arms and not (same_budget and same_start):
    conclusion = (
        "**Caution: the budgets or the starts differ**, so this is not the controlled comparison. " + conclusion
    )
display(Markdown(conclusion))

# %% [markdown]
# ## Runs and lineage

# %%
if arms:
    display(HTML(rh.runs_table(rows, [lin.lineage(r.path) for r in rows], bases)))
    display(HTML(rh.lineage_html(arms, trees, bases)))

# %%
if pairwise is not None:
    atomic_write_text(run.path("comparison.csv"), pairwise.to_csv(index=False))
    atomic_write_json(run.path("budgets.json"), budgets.to_dict(orient="records"))
atomic_write_text(run.path("conclusion.md"), conclusion + "\n")
run.finish(
    metrics={
        "ablation/arms": {"value": len(arms), "n": len(arms)},
        "ablation/equal_budget": int(same_budget),
        "ablation/same_start": int(same_start),
    }
    | (ab.ablation_metrics(pairwise, lift) if pairwise is not None else {}),
    report_html=str(
        ab.GRPOvsOPDConfig.html_report_path({"report_name": cfg.report_name, "run_dir": str(run.run_dir)})
    ),
)
