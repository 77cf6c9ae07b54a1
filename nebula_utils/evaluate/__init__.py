"""Evaluation: suites of benchmarks, lm-evaluation-harness on local task mirrors, and a fast
verifiable path over the workbench's own task generators and verifiers (stage 60_eval).

Importing this package is light (no torch, no lm-eval): those load when an evaluation runs.
"""

from .stage import EvalStageConfig, Evaluation, evaluate, model_lineage, plot_scores, results_table
from .suites import Benchmark, load_suite, quarantine_registry, select, write_quarantine

__all__ = ["Benchmark", "EvalStageConfig", "Evaluation", "evaluate", "load_suite", "model_lineage", "plot_scores",
           "quarantine_registry", "results_table", "select", "write_quarantine"]
