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
# # 12 · Multi-dimensional cross-verification filtering
#
# Each candidate of each distilled group (stage 11) gets a score and a verdict per dimension:
#
# | gate | what it checks |
# |---|---|
# | `format` | prompt roles, non-empty, not truncated (finish reason `length`), code parses, JSON parses when asked for |
# | `verifier` | the rule verifier: math answer vs ground truth (math-verify), IFEval checkers, HumanEval tests in the sandbox |
# | `agreement` | self-consistency: share of the k teacher samples with an equivalent final answer (math-like tasks) |
# | `heuristics` | length, echo of the prompt, degenerate repetition, language of the prose |
# | `judge` | optional LLM-judge rating (`judge_model`) |
#
# A sample is **kept only when the independent signals agree**: every dimension its task requires
# (`keep_rules`) applied and passed, and no other applicable dimension failed. Dropped groups keep
# their reason (`<gate>:<code>`) in `dropped.jsonl` and in the processing manifest, whose counts
# balance (in = kept + dropped).

# %% tags=["parameters"]
seed: int = 0
device: str = "auto"
num_threads: int = 2
run_dir: str = ""
run_id: str = ""
data: str = ""
keep_rules: dict = {
    "math_reasoning": ["format", "verifier", "agreement", "heuristics"],
    "code": ["format", "verifier", "heuristics"],
    "complex_if": ["format", "verifier", "heuristics"],
    "default": ["format", "heuristics"],
}
min_verifier_score: float = 1.0
min_agreement: float = 0.6
min_words: int = 1
max_words: int = 4000
language: str = "en"
min_language_prob: float = 0.5
judge_model: str = ""
min_judge_score: float = 0.5
teacher_only: bool = False
verifier_workers: int = 2

# %%
import pandas as pd

from nebula_utils.data import crossverify
from nebula_utils.data.versions import read_manifests
from nebula_utils.runs import start_run
from nebula_utils.stages import filter as stage

run = start_run("12_filter", globals())
cfg = run.config
print(run.run_id, run.run_dir)

# %% [markdown]
# ## Score every candidate on every dimension

# %%
groups = stage.load_groups(cfg)
result = crossverify.cross_verify(groups, cfg.rules(), judge=stage.make_judge(cfg))
frame = crossverify.dimension_frame(result)
print(f"{len(groups)} groups, {len(frame)} candidates")
frame.head(12)

# %% [markdown]
# ## The filter funnel and the score distributions
# The funnel applies the gates in order: the effective sample rate after a gate is the share of
# all candidates that passed it and every gate before it (a dimension that does not apply to a
# candidate lets it through unless its task requires it).

# %%
pd.DataFrame(crossverify.funnel(result))

# %%
fig = stage.plot_funnel_and_scores(result, run.path("filter_funnel.png"))

# %% [markdown]
# ## Why candidates and groups were dropped

# %%
reasons = frame.groupby(["task", "reason"]).size().rename("candidates").reset_index()
reasons

# %%
pd.Series(crossverify.drop_counts(result), name="groups", dtype=int).sort_values(ascending=False).to_frame()

# %% [markdown]
# ## Outputs
# `sft`: kept groups as SFT samples (the curated corpus that 14_classify_sample → 15_decontam →
# 16_curriculum cut the SFT mixes from); `preference`: groups with both a kept and a dropped
# candidate as chosen/rejected pairs. Both add one balanced step to the distill manifests. A kept
# teacher answer is always the SFT answer; with `teacher_only` off, the dataset's own answer is the
# fallback when it passes the same gates. Whose answer each task's SFT rows carry:

# %%
infos = stage.write_outputs(cfg, groups, result, run.run_dir)
steps = {name: read_manifests(info.path)["processing"]["steps"][-1] for name, info in infos.items()}
pd.DataFrame(
    [
        {
            "version": n,
            "in": s["count_in"],
            "out": s["count_out"],
            "filtered": s["filtered"],
            "drop_reasons": s["drop_reasons"],
        }
        for n, s in steps.items()
    ]
)

# %%
pd.DataFrame(steps["sft"].get("answer_from", {})).T

# %%
kept = int(frame["kept"].sum())
run.finish(
    metrics={
        "groups_in": {"value": len(groups)},
        "groups_kept": {"value": infos["sft"].num_rows, "n": len(groups)},
        "group_keep_rate": {"value": infos["sft"].num_rows / len(groups) if groups else None, "n": len(groups)},
        "candidate_keep_rate": {"value": kept / len(frame) if len(frame) else None, "n": len(frame)},
        "preference_pairs": {"value": infos["preference"].num_rows},
    },
    outputs=infos,
)
