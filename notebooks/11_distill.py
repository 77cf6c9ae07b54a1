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
# # 11 · Response distillation and instruction synthesis
#
# A **teacher** model answers every prompt of a data version `k` times. The whole candidate
# group is kept — each candidate with its generator, sampling params and scores — as a
# `preference`-schema data version `<run_dir>/distill`, so that the cross-verification stage
# (12) can compare the samples with each other and with the verifiers, and preference stages can
# reuse the groups.
#
# Scores that come for free are recorded at once: the prompt's rule verifier (math answer vs
# ground truth, IFEval checkers, HumanEval tests in the sandbox) and the teacher's mean token
# log-probability. `chosen`/`rejected` rank by verifier score, then log-prob; a group no signal
# separates is marked `tie:`.
#
# **Synthesis school** (`synthesis`) adds new prompts before distillation:
# * `self_instruct` — the model sees a few seed tasks and writes a new one (ROUGE-L < 0.7 to the pool).
# * `evol_instruct` — the model rewrites a seed prompt into a harder one (add constraints, deepen,
#   concretise, more reasoning steps, breadth mutation); failed evolutions are eliminated by
#   heuristics and, with `evol_model_check`, by asking the model whether the prompt makes sense.
# * `magpie` — the model gets only its chat template's user-turn prefix and writes the query.

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
data: str = ""
max_prompts: int = 32
teacher: str = "packaged:smollm2-135m-instruct"
backend: str = "auto"
batch_size: int = 0
tensor_parallel_size: int = 1
k: int = 4
temperature: float = 0.7
top_p: float = 0.95
max_new_tokens: int = 256
include_original: bool = True
synthesis: str = "none"
synth_n: int = 16
synth_model: str = ""
synth_temperature: float = 1.0
synth_max_new_tokens: int = 96
synth_allow_truncated: bool = False
evol_operations: list = ["add_constraints", "deepening", "concretizing", "reasoning_steps", "breadth"]
evol_model_check: bool = True
verifier_workers: int = 2

# %%
import matplotlib.pyplot as plt
import pandas as pd

from nebula_utils.data.distillation import distill, prompt_records
from nebula_utils.data.mixing import select_from_version
from nebula_utils.data.versions import load_version, read_manifests
from nebula_utils.runs import start_run
from nebula_utils.stages import distill as stage

run = start_run("11_distill", globals())
cfg = run.config
print(run.run_id, run.run_dir)

# %% [markdown]
# ## Prompts
# The prompts of the input version (a seeded sample of `max_prompts`).

# %%
selected, parent_manifests, select_step = select_from_version(cfg.data, cfg.max_prompts, cfg.seed)
records = prompt_records(selected, parent_manifests["version"]["schema"])
print(f"{len(records)} prompts from {cfg.data} ({parent_manifests['version']['schema']} schema)")
pd.DataFrame(records)[["id", "task", "verifier"]].value_counts(["task", "verifier"], dropna=False).to_frame("prompts")

# %% [markdown]
# ## Synthesis
# Every attempt is listed with its verdict; the step's drop reasons count the rejected ones.

# %%
teacher, synth_model = stage.make_generators(cfg)
synth = stage.synthesize(cfg, synth_model, records)
steps = [select_step] + ([synth.step] if synth else [])
if synth:
    print(f"{cfg.synthesis}: {len(synth.records)} of {len(synth.attempts)} attempts kept", synth.step["drop_reasons"])
    display(pd.DataFrame(synth.attempts).head(10))

# %% [markdown]
# ## Distillation
# `k` samples per prompt from the teacher (backend chosen automatically: vLLM on a GPU with vLLM
# installed, else transformers).

# %%
prompts = records + (synth.records if synth else [])
groups = distill(teacher, prompts, cfg.sampling(cfg.k, logprobs=True), cfg.include_original, cfg.verifier_workers)
info = stage.write_distilled(
    cfg, groups, parent_manifests, steps, run.path("distill"), teacher, synth_model if synth else None
)
print(
    info.num_rows,
    "groups, content hash",
    info.content_hash[:16],
    "·",
    teacher.spec()["backend"],
    f"{teacher.stats.tokens_per_s:.1f} generated tokens/s",
)

# %%
manifests = read_manifests(info.path)
pd.DataFrame(
    [
        {"step": s["name"], "in": s["count_in"], "out": s["count_out"], "drop_reasons": s["drop_reasons"]}
        for s in manifests["processing"]["steps"]
    ]
)

# %% [markdown]
# ## The candidate groups
# One row per candidate: finish reason (`length` = truncated at `max_new_tokens`), tokens,
# scores, and whether it was ranked chosen or rejected.

# %%
frame = stage.candidate_frame(load_version(info.path))
frame.head(12)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
frame.groupby(["task", "finish_reason"]).size().unstack(fill_value=0).plot.barh(
    ax=axes[0], stacked=True, title="finish reason per task"
)
teacher_rows = frame[frame["generator"] != "dataset"]
axes[1].hist(teacher_rows["tokens"].dropna(), bins=20)
axes[1].set(title="teacher answer length", xlabel="generated tokens", ylabel="candidates")
fig.tight_layout()
fig.savefig(run.path("distill_candidates.png"), dpi=100)

# %%
first = load_version(info.path)[0]
print(first["prompt"][-1]["content"][:300], "\n")
for i, cand in enumerate(first["candidates"]):
    print(f"--- candidate {i} ({cand['generator']}) scores={cand['scores']}\n{cand['content'][:300]}\n")
print("preference:", first["chosen"], ">", first["rejected"], "·", first["preference_reason"])

# %%
run.finish(
    metrics=stage.summary_metrics(frame)
    | {
        "prompts": {"value": len(records)},
        "synthesized_prompts": {"value": len(synth.records) if synth else 0},
        "groups": {"value": info.num_rows, "n": info.num_rows},
        "candidates": {"value": len(frame)},
        "timing/teacher_tokens_per_s": {"value": teacher.stats.tokens_per_s},
    },
    outputs={"distill": info},
    generator=teacher.spec(),
)
