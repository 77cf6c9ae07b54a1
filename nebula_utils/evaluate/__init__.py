"""Evaluation: suites of benchmarks, lm-evaluation-harness on local task mirrors, and a fast
verifiable path over the workbench's own task generators and verifiers (used by stage 60_eval).

Importing this package is light (no torch, no lm-eval): those load when an evaluation runs.
"""

from .harness import Evaluation, evaluate, model_lineage
from .suites import Benchmark, load_suite, quarantine_registry, select, write_quarantine

__all__ = [
    "Benchmark",
    "Evaluation",
    "evaluate",
    "load_suite",
    "model_lineage",
    "quarantine_registry",
    "select",
    "write_quarantine",
]
