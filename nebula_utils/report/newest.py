"""The newest evaluation of each kind of trained model under a results root: what an ablation
notebook compares when it is opened as JupyterLab opens it (empty `runs`).

A 60_eval run names the checkpoint it scored in its config (`model`); the run folder that holds
that checkpoint is the training run that made it (lineage.owning_run). A caller's `label_of`
looks at that training run (its stage and config) and says which arm of an ablation it belongs
to, or None; the newest complete evaluation per label wins. 84_ablation_opd_vs_mopd labels plain
and routed distillation, 83_ablation_grpo_vs_opd GRPO and OPD from one starting checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..io import read_json
from .compare import find_eval_runs
from .lineage import owning_run


@dataclass(frozen=True)
class TrainedEval:
    """A complete 60_eval run and the run that trained the model it scored (None: a model that is
    no run's output, e.g. `packaged:smollm2-135m-instruct`)."""

    eval_dir: Path
    model: str  # the eval's `model` as written in its config
    finished: float  # run.json's finish time (0 when absent)
    trainer: Path | None
    stage: str  # the trainer's stage, "" without one
    config: Mapping[str, Any]  # the trainer's config.yaml, {} without one


def _config(run_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}


def trained_evals(root: str | Path) -> list[TrainedEval]:
    """Every complete 60_eval run under `root` with the training run that owns its model."""
    out = []
    for eval_dir in find_eval_runs(root):
        model = str(_config(eval_dir).get("model", ""))
        path = Path(model)
        trainer = owning_run(path.resolve()) if model and path.is_absolute() and path.exists() else None
        stage = str(read_json(trainer / "run.json").get("stage", "")) if trainer else ""
        finished = float(read_json(eval_dir / "run.json").get("finished") or 0)
        out.append(TrainedEval(eval_dir, model, finished, trainer, stage, _config(trainer) if trainer else {}))
    return out


def newest_by_label(
    evals: list[TrainedEval], label_of: Callable[[TrainedEval], Hashable | None]
) -> dict[Hashable, TrainedEval]:
    """label -> the newest evaluation `label_of` gives that label (evaluations it labels None are skipped)."""
    newest: dict[Hashable, TrainedEval] = {}
    for e in evals:
        label = label_of(e)
        if label is not None and (label not in newest or e.finished >= newest[label].finished):
            newest[label] = e
    return newest


def newest_eval_of(evals: list[TrainedEval], model: str | Path) -> TrainedEval | None:
    """The newest evaluation of exactly this checkpoint (paths compared resolved), or None."""
    want = str(Path(model).resolve()) if Path(model).is_absolute() else str(model)
    hits = [e for e in evals if (str(Path(e.model).resolve()) if Path(e.model).is_absolute() else e.model) == want]
    return max(hits, key=lambda e: e.finished) if hits else None
