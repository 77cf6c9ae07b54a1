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
# # 60 · Evaluation
#
# One model, one part of one suite (`params/suites/<suite>.yaml`). Every recipe stage is judged
# here, so every number comes with its sample size and a 95% bootstrap interval.
#
# * **Two harnesses.** Standard benchmarks (IFEval, GSM8K, MMLU, TruthfulQA, HumanEval) run
#   through **lm-evaluation-harness** — offline on task YAMLs that include the official task
#   files and only point them at local copies (`task_source: local`), online by official task
#   name. The workbench's own verifiable tasks (reasoning-gym math, IFEval-style constraint
#   prompts, the held-out HumanEval half) take the **fast path**: the shared generator and the
#   same verifiers that compute RL rewards. The fast path needs no `../shared`.
# * **dev / unseen.** Decisions are made on `dev`; `unseen` is read once at the end (Tülu 3).
# * **Averages.** The suite average is the unweighted mean of benchmark scores, also per
#   capability. A benchmark whose files are missing is skipped with its reason recorded.
# * Outputs: `metrics.json` (`eval/...`), `samples/<benchmark>.jsonl`, `eval_summary.json`.

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
model: str = "packaged:smollm2-135m-instruct"
suite: str = "instruct"
part: str = "dev"
benchmarks: list = []
limit: int = 0
backend: str = "auto"
batch_size: int = 0
tensor_parallel_size: int = 1
max_gen_toks: int = 512
apply_chat_template: bool = True
num_fewshot: int = -1
task_source: str = "local"
data_root: str = "../shared/data"
confirm_run_unsafe_code: bool = True
bootstrap_resamples: int = 1000

# %%
import matplotlib.pyplot as plt
import pandas as pd

from nebula_utils.evaluate import evaluate, load_suite, select
from nebula_utils.runs import start_run
from nebula_utils.stages.eval import plot_scores, results_table

run = start_run("60_eval", globals())
cfg = run.config
run.run_id

# %% [markdown]
# ## Benchmarks in this run

# %%
pd.DataFrame(
    [
        {"benchmark": b.name, "capability": b.capability, "harness": b.harness, "task": b.task or b.source}
        for b in select(load_suite(cfg.suite_path()), cfg.part, cfg.benchmarks)
    ]
)

# %% [markdown]
# ## Evaluate
# Scores per benchmark with n and the 95% percentile-bootstrap interval over items.

# %%
summary, metrics = evaluate(cfg, run.run_dir)
results_table(summary)

# %% [markdown]
# ## Averages
# Unweighted mean of benchmark scores, overall and per capability.

# %%
pd.Series(
    {"average": summary["average"]} | {f"capability/{k}": v for k, v in summary["capabilities"].items()}, name="score"
).to_frame()

# %%
ax = plot_scores(summary)
plt.tight_layout()
plt.savefig(run.path("scores.png"), dpi=120)
plt.show()

# %%
run.finish(metrics=metrics, parent_run=summary["model"]["parent_run"])
