"""Stage 60_eval: evaluate one model on one part of one suite (the one harness every stage is
compared on: lm-eval tasks and the fast verifiable path, each score with n and a 95% CI).

The harness itself is nebula_utils.evaluate.harness; this module holds the config and the
notebook's table/plot helpers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import StageConfig, doc
from ..paths import repo_path

BACKENDS = ("auto", "hf", "vllm")
TASK_SOURCES = ("local", "official")


@dataclass
class EvalStageConfig(StageConfig):
    model: str = doc('model spec or checkpoint folder to evaluate; pipelines pass "@20_sft/model"')
    suite: str = doc("a suite under params/suites/ (instruct | reasoning | verifiable) or a suite YAML path")
    part: str = doc("dev (read for every decision) | unseen (read once, at the end) | all")
    benchmarks: list[str] = doc("[] = every benchmark of the suite part; else these names")
    limit: int = doc("items per benchmark, 0 = all")
    backend: str = doc("auto (vLLM when installed and on CUDA, else hf) | hf | vllm")
    batch_size: int = doc(
        "fast path: rows decoded together (0 = measured once per machine and model); lm-eval's hf model: "
        "its batch size (0 means 8 there)"
    )
    tensor_parallel_size: int = doc(
        "runtime-only: vLLM backend (fast path and lm-eval's vllm model): GPUs one engine shards the model over; "
        "1 = one GPU. "
        "`nebula plan` sizes this step's memory with it"
    )
    max_gen_toks: int = doc(
        "cap on generated tokens per item: each task's own budget (lm-eval task YAML; verifiable suite's "
        "per-benchmark max_gen_toks) is capped at this; 0 = each task's own"
    )
    apply_chat_template: bool = doc("lm-eval: chat template + multi-turn few-shot (the fast path always chats)")
    num_fewshot: int = doc("lm-eval few-shot examples; -1 = each task's official default")
    task_source: str = doc("local (task YAMLs mirrored on data_root files) | official (Hub task names, online)")
    data_root: str = doc("benchmark files for lm-eval mirrors (repo-relative); a missing file skips that benchmark")
    confirm_run_unsafe_code: bool = doc("code benchmarks execute model-written code (in the sandbox)")
    bootstrap_resamples: int = doc("bootstrap resamples of each 95% CI")

    def check(self) -> None:
        self.one_of("part", ("dev", "unseen", "all"))
        self.one_of("backend", BACKENDS)
        self.one_of("task_source", TASK_SOURCES)
        self.at_least("limit", 0)
        self.at_least("max_gen_toks", 0)
        self.at_least("batch_size", 0)
        self.at_least("tensor_parallel_size", 1)
        self.at_least("num_fewshot", -1)
        self.at_least("bootstrap_resamples", 100)

    def data_path(self) -> Path:
        return repo_path(self.data_root).resolve()

    def suite_path(self) -> Path:
        """A suite name means params/suites/<name>.yaml; a .yaml value is a path."""
        from ..paths import SUITES_DIR

        return repo_path(self.suite) if self.suite.endswith((".yaml", ".yml")) else SUITES_DIR / f"{self.suite}.yaml"

    def resolved_backend(self) -> str:
        from ..inference.generation import vllm_available

        return ("vllm" if vllm_available() else "hf") if self.backend == "auto" else self.backend


def results_table(summary: dict[str, Any]):
    """One row per benchmark (score, 95% CI, n, capability, metric) plus skipped ones with reasons."""
    import pandas as pd

    rows = [
        {
            "benchmark": name,
            "capability": v["capability"],
            "score": v["score"],
            "ci95_low": v["ci95"][0],
            "ci95_high": v["ci95"][1],
            "n": v["n"],
            "metric": v["metric"],
            "note": "",
        }
        for name, v in summary["benchmarks"].items()
    ]
    rows += [{"benchmark": name, "note": f"skipped: {reason}"} for name, reason in summary["skipped"].items()]
    return pd.DataFrame(
        rows, columns=["benchmark", "capability", "score", "ci95_low", "ci95_high", "n", "metric", "note"]
    )


def plot_scores(summary: dict[str, Any], ax=None):
    """Bar plot of benchmark scores with their 95% bootstrap intervals; returns the axes."""
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(summary["benchmarks"])
    scores = np.array([summary["benchmarks"][n]["score"] for n in names], dtype=float)
    ci = np.array([summary["benchmarks"][n]["ci95"] for n in names], dtype=float).reshape(-1, 2)
    ax = ax or plt.subplots(figsize=(max(4, 1.1 * len(names)), 3))[1]
    ax.bar(names, scores, yerr=np.abs(np.stack([scores - ci[:, 0], ci[:, 1] - scores])), capsize=4)
    ax.set(ylim=(0, 1), ylabel="score (95% CI)", title=f"{summary['suite']} / {summary['part']}")
    ax.tick_params(axis="x", rotation=30)
    return ax
