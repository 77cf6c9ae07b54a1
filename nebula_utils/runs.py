"""A stage run: its folder, resolved config, seeds, metrics and manifests.

Layout of one run folder (`results/<pipeline>/<run_id>/`):
  notebook.ipynb   executed notebook (written by the runner / papermill)
  config.yaml      the resolved config (all keys, runtime ones included)
  run.json         run id, stage, status (running|complete), timings, library versions
  metrics.json     schema-versioned metrics: {name: {value, n, ci95}}; names under timing/ are
                   wall-clock measurements, the only ones allowed to differ between reruns
  manifests/       data manifests this run wrote or consumed
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .config import REPO_ROOT, build_config, field_types, make_run_id
from .io import atomic_write_json, atomic_write_yaml, read_json

METRICS_SCHEMA_VERSION = 1
RESULTS_ROOT = Path(os.environ.get("NEBULA_RESULTS", REPO_ROOT / "results"))


def set_seed_everywhere(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def set_threads(num_threads: int) -> None:
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", str(num_threads))
    torch.set_num_threads(num_threads)


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "peft", "datasets", "lm-eval", "vllm", "papermill"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def is_complete(run_dir: Path, run_id: str) -> bool:
    marker = Path(run_dir) / "run.json"
    if not marker.is_file():
        return False
    try:
        info = read_json(marker)
    except ValueError:
        return False
    return info.get("status") == "complete" and info.get("run_id") == run_id


@dataclass
class Run:
    stage: str
    config: Any
    run_id: str
    run_dir: Path
    started: float = field(default_factory=time.time)

    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)

    def _info(self, status: str) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "stage": self.stage,
            "status": status,
            "started": self.started,
            "config_hash": self.run_id.rsplit("-", 1)[-1],
            "versions": library_versions(),
        }

    def log_metrics(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Merge metrics into metrics.json. A value is a number or {value, n, ci95}."""
        path = self.path("metrics.json")
        doc = read_json(path) if path.is_file() else {
            "schema_version": METRICS_SCHEMA_VERSION, "run_id": self.run_id, "stage": self.stage, "metrics": {},
        }
        for name, value in metrics.items():
            entry = dict(value) if isinstance(value, Mapping) else {"value": value}
            entry.setdefault("n", None)
            entry.setdefault("ci95", None)
            doc["metrics"][name] = entry
        atomic_write_json(path, doc)
        return doc

    def write_manifest(self, name: str, manifest: Mapping[str, Any]) -> Path:
        return atomic_write_json(self.path("manifests", f"{name}.json"), dict(manifest))

    def finish(self, **extra: Any) -> None:
        info = self._info("complete") | {"finished": time.time(), "duration_s": time.time() - self.started}
        atomic_write_json(self.path("run.json"), info | extra)


def start_run(stage: str, namespace: Mapping[str, Any]) -> Run:
    """Called by a notebook right after its parameters cell: `run = start_run("20_sft", globals())`.

    Validates the parameters against the stage's dataclass, fixes the run id and folder, writes
    the resolved config, and sets seeds and thread counts.
    """
    from .stages import stage_config_class

    cls = stage_config_class(stage)
    values = {k: namespace[k] for k in field_types(cls) if k in namespace}
    config = build_config(cls, stage, values, source=f"parameters of notebook {stage}")
    run_id = config.run_id or make_run_id(stage, config.science())
    run_dir = Path(config.run_dir) if config.run_dir else RESULTS_ROOT / "interactive" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_yaml(run_dir / "config.yaml", config.to_dict() | {"run_id": run_id, "run_dir": str(run_dir)})
    run = Run(stage=stage, config=config, run_id=run_id, run_dir=run_dir)
    atomic_write_json(run_dir / "run.json", run._info("running"))
    set_threads(config.num_threads)
    set_seed_everywhere(config.seed)
    return run
