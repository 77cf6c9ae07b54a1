"""Ablation grids: one base pipeline, a grid of parameter values, one pipeline variant per grid point,
and a final report across the variants.

Format (`params/ablations/<name>.yaml`):

    ablation: sft_lr                        # results/<ablation>/<run id>/, shared by all variants
    description: one line
    base: params/pipelines/smoke.yaml       # relative to the repository root (or absolute)
    overrides: {20_sft.max_steps: 8}        # optional, applied to every variant
    drop: [60_eval_unseen]                  # optional: base steps no variant runs (an ablation is a
                                            # decision, and decisions never read the unseen part)
    grid:                                   # the cartesian product of the value lists
      20_sft.learning_rate: [1.0e-5, 2.0e-5]  # <step>.<key>: that step only
      seed: [0, 1]                          # <key>: every step whose stage declares the key
    report:                                 # optional: a report step comparing the variants
      notebook: 90_report                   # optional; an ablation notebook (e.g. 84_ablation_opd_vs_mopd)
                                            # takes the same runs/labels/baseline/report_name params
      step: 60_eval_sft                     # the step of each variant whose run folder is a row
      baseline: 0                           # index of a variant, or its label
      params: {bootstrap_resamples: 1000}   # any other 90_report parameter
      notebook: 82_ablation_grpo_difficulty # optional: an ablation notebook instead of 90_report; it
                                            # takes runs/labels/baseline/report_name like 90_report,
                                            # and its params may name a step every variant shares
                                            # (`base_run: "@60_eval_base"`)

Each variant is the base pipeline with the grid point applied. Every step's run id comes from its
resolved config (see pipeline.py), and all variants write into one results folder, so a step whose
config a grid axis does not touch (the environment check and the data mix above, when only the
SFT learning rate varies) has the same run id in every variant and runs once. The base pipeline's
own 90_report steps are dropped: the ablation's report compares the variants instead.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError, coerce, field_types, load_yaml
from .paths import PARAMS_DIR, repo_path
from .pipeline import Pipeline, Step, build_step, expand_extends, pipeline_from_doc
from .stages import stage_config_class

ABLATION_KEYS = {"ablation", "description", "base", "overrides", "drop", "grid", "report"}
REPORT_KEYS = {"step", "baseline", "labels", "params", "notebook"}
REPORT_NOTEBOOK = "90_report"


@dataclass
class Variant:
    label: str
    point: dict[str, Any]  # grid axis -> value
    pipeline: Pipeline


@dataclass
class Ablation:
    name: str
    description: str
    source: Path
    variants: list[Variant]
    report: Step | None

    @property
    def root(self) -> Path:
        return self.variants[0].pipeline.steps[0].run_dir.parent

    def plan(self) -> list[tuple[str, Step]]:
        """(variant label, step) in execution order, each run id once (the first variant that needs it)."""
        seen: set[str] = set()
        out = []
        for variant in self.variants:
            for step in variant.pipeline.steps:
                if step.run_id not in seen:
                    seen.add(step.run_id)
                    out.append((variant.label, step))
        if self.report is not None:
            out.append(("report", self.report))
        return out


def is_ablation_file(path: str | Path) -> bool:
    return "grid" in load_yaml(path)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _apply(doc: dict[str, Any], axis: str, value: Any, where: str) -> None:
    """Set `axis` (`<step>.<key>` or `<key>`) to `value` in the pipeline doc, checking the type."""
    step_name, _, key = axis.rpartition(".")
    hits = 0
    for raw in doc["steps"]:
        name = str(raw.get("name", raw.get("notebook")))
        if step_name and name != step_name:
            continue
        known = field_types(stage_config_class(str(raw["notebook"])))
        if key not in known:
            if step_name:
                raise ConfigError(f"{where}: step '{step_name}' ({raw['notebook']}) has no parameter '{key}'")
            continue
        raw["params"] = dict(raw.get("params") or {}) | {key: coerce(value, known[key], where)}
        hits += 1
    if not hits:
        what = f"no step named '{step_name}'" if step_name else f"no step declares '{key}'"
        raise ConfigError(f"{where}: {what} in the base pipeline")


def _labels(axes: list[str], points: list[tuple]) -> list[str]:
    short = [a.rpartition(".")[2] for a in axes]
    names = [s if short.count(s) == 1 else a for s, a in zip(short, axes)]
    return [",".join(f"{n}={_fmt(v)}" for n, v in zip(names, point)) for point in points]


def _read(path: Path) -> tuple[dict[str, Any], dict[str, list], Path]:
    doc = load_yaml(path)
    unknown = sorted(set(doc) - ABLATION_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(ABLATION_KEYS))})")
    if not doc.get("base"):
        raise ConfigError(f"{path}: 'base' (a pipeline file) is required")
    base = repo_path(doc["base"])
    grid = doc.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{path}: 'grid' must be a non-empty mapping of parameter -> list of values")
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid '{axis}' must be a non-empty list of values")
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(f"{path}: grid '{axis}' repeats a value")
    return doc, grid, base


def _report_step(
    doc: dict[str, Any], path: Path, variants: list[Variant], root: Path, params_dir: Path
) -> Step | None:
    spec = doc.get("report")
    if spec is None:
        return None
    if not isinstance(spec, dict) or "step" not in spec:
        raise ConfigError(f"{path}: 'report' needs 'step' (the step of each variant to compare)")
    bad = sorted(set(spec) - REPORT_KEYS)
    if bad:
        raise ConfigError(f"{path}: report: unknown key '{bad[0]}' (allowed: {', '.join(sorted(REPORT_KEYS))})")
    rows = {f"variant{i}": v.pipeline.step(spec["step"]) for i, v in enumerate(variants)}
    # `@<step>` in the report's params may name a step whose run is the same in every variant.
    shared = {
        s.name: s
        for s in variants[0].pipeline.steps
        if all(any(o.run_id == s.run_id and o.name == s.name for o in v.pipeline.steps) for v in variants)
    }
    done = shared | rows
    params = {
        "runs": [f"@{k}" for k in rows],
        "labels": spec.get("labels") or [v.label for v in variants],
        "baseline": spec.get("baseline", 0),
        "report_name": doc["ablation"],
    } | (spec.get("params") or {})
    notebook = str(spec.get("notebook", REPORT_NOTEBOOK))
    raw = {"notebook": notebook, "name": notebook, "params": params}
    return build_step(raw, f"{path}: report", {}, done, root, params_dir)


def _drop_steps(base: dict[str, Any], drop: Any, path: Path) -> None:
    """Remove the base pipeline's report steps and the steps named in `drop`."""
    if not isinstance(drop, list) or not all(isinstance(d, str) for d in drop):
        raise ConfigError(f"{path}: 'drop' must be a list of step names")
    names = [str(s.get("name", s.get("notebook"))) for s in base["steps"] if isinstance(s, dict)]
    unknown = [d for d in drop if d not in names]
    if unknown:
        raise ConfigError(
            f"{path}: drop: no step named '{unknown[0]}' in the base pipeline (steps: {', '.join(names)})"
        )
    base["steps"] = [
        s
        for s in base["steps"]
        if not (
            isinstance(s, dict) and (s.get("notebook") == REPORT_NOTEBOOK or s.get("name", s.get("notebook")) in drop)
        )
    ]


def load_ablation(path: str | Path, results_root: str | Path | None = None, params_dir: Path = PARAMS_DIR) -> Ablation:
    path = Path(path)
    doc, grid, base_path = _read(path)
    name = str(doc.get("ablation") or path.stem)
    doc["ablation"] = name
    base = expand_extends(load_yaml(base_path), base_path)
    base["steps"] = list(base.get("steps") or [])
    _drop_steps(base, doc.get("drop") or [], path)
    for axis, value in (doc.get("overrides") or {}).items():
        _apply(base, axis, value, f"{path}: overrides '{axis}'")
    axes = list(grid)
    points = list(itertools.product(*(grid[a] for a in axes)))
    variants = []
    for label, point in zip(_labels(axes, points), points):
        variant_doc = copy.deepcopy(base)
        for axis, value in zip(axes, point):
            _apply(variant_doc, axis, value, f"{path}: grid '{axis}' value {value!r}")
        pipeline = pipeline_from_doc(variant_doc, base_path, results_root, params_dir, name=name)
        variants.append(Variant(label, dict(zip(axes, point)), pipeline))
    ids = [tuple(s.run_id for s in v.pipeline.steps) for v in variants]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: two grid points give identical pipelines (an axis changes nothing hashed)")
    root = variants[0].pipeline.steps[0].run_dir.parent
    report = _report_step(doc, path, variants, root, params_dir)
    return Ablation(name, str(doc.get("description", "")), path, variants, report)
