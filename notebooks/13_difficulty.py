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
# # 13 · Difficulty grading and the medium RL pool
#
# A **reference policy** answers every RL prompt `n_samples` times; the prompt's verifier scores
# each answer, and the **pass rate** grades the prompt:
#
# * fine bins: exactly 0, (0, .25], (.25, .5], (.5, .75], (.75, 1), exactly 1;
# * labels: `hard` (pass rate ≤ `hard_at_most`), `easy` (> `easy_above`), `medium` in between.
#
# The reasoning branch runs GRPO on the **medium** pool (`<run_dir>/rl`): a prompt the policy
# always or never solves gives every sample of a GRPO group the same reward, hence zero advantage
# and no gradient. `<run_dir>/graded` keeps every graded prompt with its pass rate and label.

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
data: str = ""
max_prompts: int = 0
policy: str = "packaged:smollm2-135m-instruct"
backend: str = "auto"
batch_size: int = 0
tensor_parallel_size: int = 1
n_samples: int = 8
temperature: float = 0.7
top_p: float = 0.95
max_new_tokens: int = 256
hard_at_most: float = 0.25
easy_above: float = 0.75
pool_labels: list = ["medium"]
verifier_workers: int = 2

# %%
import pandas as pd

from nebula_utils.data.difficulty import grade
from nebula_utils.data.mixing import select_from_version
from nebula_utils.data.versions import read_manifests
from nebula_utils.runs import start_run
from nebula_utils.stages import difficulty as stage

run = start_run("13_difficulty", globals())
cfg = run.config
print(run.run_id, run.run_dir)

# %% [markdown]
# ## Sample and verify

# %%
selected, _, select_step = select_from_version(cfg.data, cfg.max_prompts, cfg.seed, schemas=("rl",))
rows = list(selected)
policy = cfg.make_generator(cfg.policy, "grade")
graded = grade(
    policy,
    rows,
    cfg.sampling(cfg.n_samples),
    hard_at_most=cfg.hard_at_most,
    easy_above=cfg.easy_above,
    workers=cfg.verifier_workers,
)
print(
    f"{len(graded.rows)} prompts graded, {len(graded.quarantined)} quarantined ·",
    f"{policy.spec()['backend']} {policy.stats.tokens_per_s:.1f} tokens/s",
)
pd.DataFrame(graded.samples).head(10)

# %% [markdown]
# ## Pass-rate distribution

# %%
stage.bin_table(graded)

# %%
fig = stage.plot_pass_rates(graded, cfg, run.path("pass_rates.png"))

# %%
labels = pd.DataFrame(graded.rows)
labels.groupby(["task", "difficulty"]).size().unstack(fill_value=0) if len(labels) else labels

# %% [markdown]
# ## The RL pool

# %%
infos = stage.write_versions(cfg, graded, select_step, policy, run.run_dir)
pd.DataFrame(
    [
        {
            "step": s["name"],
            "in": s["count_in"],
            "out": s["count_out"],
            "quarantined": s["quarantined"],
            "drop_reasons": s["drop_reasons"],
        }
        for s in read_manifests(infos["rl"].path)["processing"]["steps"][-3:]
    ]
)

# %%
rates = [s["pass_rate"] for s in graded.samples]
run.finish(
    metrics={
        "prompts_graded": {"value": len(graded.rows)},
        "quarantined": {"value": len(graded.quarantined)},
        "mean_pass_rate": {"value": sum(rates) / len(rates) if rates else None, "n": len(rates)},
        "pool_size": {"value": infos["rl"].num_rows, "n": len(graded.rows)},
        "timing/policy_tokens_per_s": {"value": policy.stats.tokens_per_s},
    },
    outputs=infos,
)
