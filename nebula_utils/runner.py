"""Execute a pipeline's notebooks in order with papermill, skipping steps whose results exist."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

from .config import REPO_ROOT
from .io import atomic_write_json
from .pipeline import Pipeline, Step
from .runs import is_complete


class StepFailed(RuntimeError):
    def __init__(self, step: Step, message: str, notebook: Path):
        super().__init__(f"step {step.name} ({step.run_id}) failed: {message}\n  partial notebook: {notebook}")
        self.step, self.notebook = step, notebook


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


def select_steps(pipeline: Pipeline, only: str | None = None, start: str | None = None) -> list[Step]:
    if only:
        return [pipeline.step(only)]
    if start:
        first = pipeline.steps.index(pipeline.step(start))
        return pipeline.steps[first:]
    return list(pipeline.steps)


def execute_step(step: Step, kernel_name: str = "python3") -> float:
    """Run one notebook; its executed copy (partial on failure) is <run_dir>/notebook.ipynb."""
    import papermill as pm

    step.run_dir.mkdir(parents=True, exist_ok=True)
    out = step.run_dir / "notebook.ipynb"
    started = time.perf_counter()
    try:
        pm.execute_notebook(
            str(step.notebook_path),
            str(out),
            parameters=step.injected(),
            kernel_name=kernel_name,
            cwd=str(REPO_ROOT),
            progress_bar=False,
            log_output=False,
        )
    except pm.PapermillExecutionError as exc:
        raise StepFailed(step, f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}", out) from None
    if not is_complete(step.run_dir, step.run_id):
        raise StepFailed(step, "the notebook ended without run.finish()", out)
    return time.perf_counter() - started


def run_pipeline(
    pipeline: Pipeline,
    force: bool = False,
    only: str | None = None,
    start: str | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, str]:
    """Run selected steps; return {step name: 'ran' | 'skipped'}. Raises StepFailed."""
    selected = select_steps(pipeline, only, start)
    for step in pipeline.steps:  # inputs of the selected steps must exist
        if step not in selected and any(step.name in s.upstream for s in selected):
            if not is_complete(step.run_dir, step.run_id):
                raise StepFailed(step, "is needed upstream but has no complete results; run it first", step.run_dir)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    atomic_write_json(
        pipeline.steps[0].run_dir.parent / "pipeline.json",
        {"pipeline": pipeline.name, "source": str(pipeline.source),
         "steps": [{"name": s.name, "notebook": s.notebook, "run_id": s.run_id, "upstream": s.upstream}
                   for s in pipeline.steps]},
    )
    status: dict[str, str] = {}
    t0 = time.perf_counter()
    for i, step in enumerate(selected, start=1):
        head = f"[{i}/{len(selected)}] {step.name:<24} {step.run_id}"
        if not force and is_complete(step.run_dir, step.run_id):
            echo(f"{head}  skipped (complete results in {step.run_dir})")
            status[step.name] = "skipped"
            continue
        echo(f"{head}  running...")
        took = execute_step(step)
        status[step.name] = "ran"
        echo(f"{head}  done in {_fmt(took)} (elapsed {_fmt(time.perf_counter() - t0)})")
    echo(f"pipeline {pipeline.name}: {sum(v == 'ran' for v in status.values())} ran, "
         f"{sum(v == 'skipped' for v in status.values())} skipped, {_fmt(time.perf_counter() - t0)}")
    return status


def main_run(args) -> int:
    from .config import ConfigError
    from .pipeline import load_pipeline

    try:
        pipeline = load_pipeline(args.pipeline, results_root=args.results)
        if args.plan:
            for s in pipeline.steps:
                state = "complete" if is_complete(s.run_dir, s.run_id) else "pending"
                print(f"{s.name:<24} {s.run_id:<28} {state}")
            return 0
        run_pipeline(pipeline, force=args.force, only=args.only, start=args.start)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except StepFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
