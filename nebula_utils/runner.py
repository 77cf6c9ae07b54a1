"""Execute a pipeline's notebooks in order with papermill, skipping steps whose results exist."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from .inference.cpu import set_child_process_env_defaults
from .io import atomic_write_json, read_json
from .paths import REPO_ROOT
from .pipeline import Pipeline, Step
from .runs import PROGRESS_ENV, PROGRESS_FILE, follow_progress, is_complete, run_lock


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


# Kept across the clean rerun of an incomplete run: a trainer's checkpoints, for resuming it
# (train.sft.train_sft). Safe to keep because the folder is the run id's, so the config hash
# (everything that defines the result) is the one the checkpoints were written under.
RESUMABLE = "checkpoints"


def _clean_run_dir(step: Step) -> None:
    """A run that is not complete is never resumed in place: stale metrics, a half-written model or
    a previous failure's files would mix with the new run's. Its folder is moved aside and removed,
    except its `checkpoints/` (an interrupted training resumes from them); a complete run being
    recomputed (--force) loses them too."""
    if not step.run_dir.exists():
        return
    trash = step.run_dir.with_name(f".{step.run_dir.name}.stale-{os.getpid()}")
    os.replace(step.run_dir, trash)
    kept = trash / RESUMABLE
    if kept.is_dir() and not is_complete(trash, step.run_id):
        step.run_dir.mkdir(parents=True)
        os.replace(kept, step.run_dir / RESUMABLE)
    shutil.rmtree(trash, ignore_errors=True)


def _mark_failed(step: Step, message: str) -> None:
    path = step.run_dir / "run.json"
    info = read_json(path) if path.is_file() else {"run_id": step.run_id, "stage": step.notebook}
    atomic_write_json(path, info | {"status": "failed", "error": message, "failed_at": time.time()})


# Kernel managers of the steps running now: on Ctrl-C the runner kills their kernels, so that steps
# running in worker threads (--jobs) fail at once instead of computing on to the end.
_LIVE_KERNELS: set = set()
_LIVE_LOCK = threading.Lock()


def kernel_manager_class(log_path: Path, progress_path: Path) -> type:
    """A kernel manager for one step: IPC sockets instead of TCP (nothing listens on a port, and the
    kernel's 'running over TCP without encryption' warning, one per step that nobody can act on, is
    gone), the kernel process's own stdout/stderr (its log lines, shutdown chatter) go to the run's
    kernel.log instead of the terminal (cell outputs still reach the executed notebook), and the
    kernel's environment names the step's progress file (NEBULA_PROGRESS_FILE)."""
    from jupyter_client.manager import AsyncKernelManager

    class StepKernelManager(AsyncKernelManager):
        transport = "ipc"

        def __init__(self, **kw):
            super().__init__(**kw)
            # IPC sockets are files named <ip>-<n>, and the default ip is "kernel-ipc" in the cwd: kernels
            # started at once from one folder (two pipelines, two test workers) bound each other's
            # sockets ("Invalid Signature"). One short unique prefix per kernel (socket paths: <= 107 bytes).
            self.ip = os.path.join(tempfile.gettempdir(), f"nebula-{uuid.uuid4().hex[:12]}-ipc")

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            env = dict(kw.get("env") or os.environ) | {PROGRESS_ENV: str(progress_path)}
            with open(log_path, "ab") as log:  # Popen dups the descriptor; ours can close
                launched = await super()._async_launch_kernel(
                    kernel_cmd, **kw | {"stdout": log, "stderr": log, "env": env}
                )
            with _LIVE_LOCK:
                _LIVE_KERNELS.add(self)
            return launched

        async def shutdown_kernel(self, now: bool = False, restart: bool = False):
            with _LIVE_LOCK:
                _LIVE_KERNELS.discard(self)
            return await super().shutdown_kernel(now=now, restart=restart)

    return StepKernelManager


def kill_running_kernels() -> int:
    """SIGKILL every step kernel still running (after Ctrl-C); their steps then fail as dead kernels."""
    with _LIVE_LOCK:
        managers = list(_LIVE_KERNELS)
    for km in managers:
        process = getattr(km.provisioner, "process", None)
        if process is not None and process.poll() is None:
            process.kill()
    return len(managers)


def execute_step(step: Step, kernel_name: str = "python3", echo: Callable[[str], None] = print) -> float:
    """Run one notebook from a clean run folder; its executed copy (partial on failure) is
    <run_dir>/notebook.ipynb. Progress lines the stage writes (runs.report_progress) are echoed
    while it runs; a failure marks run.json `failed` with the error and raises StepFailed."""
    import papermill as pm

    _clean_run_dir(step)
    step.run_dir.mkdir(parents=True, exist_ok=True)
    out = step.run_dir / "notebook.ipynb"
    progress = step.run_dir / PROGRESS_FILE
    started = time.perf_counter()
    try:
        with follow_progress(progress, echo):
            pm.execute_notebook(
                str(step.notebook_path),
                str(out),
                parameters=step.injected(),
                kernel_name=kernel_name,
                cwd=str(REPO_ROOT),
                progress_bar=False,
                log_output=False,
                kernel_manager_class=kernel_manager_class(step.run_dir / "kernel.log", progress),
                # Kill the kernel once the last cell's outputs are in (its results are written, atomically,
                # by then): a graceful shutdown of a kernel holding torch took 0.82 s vs 0.20 s without
                # torch, measured here; ~0.6 s x 26 steps of the smoke pipeline.
                shutdown_kernel="immediate",
            )
    except pm.PapermillExecutionError as exc:
        message = f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
        _mark_failed(step, message)
        raise StepFailed(step, message, out) from None
    except BaseException as exc:  # a dead kernel, Ctrl-C: the run is not complete, say why
        _mark_failed(step, f"{type(exc).__name__}: {exc}")
        raise
    if not is_complete(step.run_dir, step.run_id):
        _mark_failed(step, "the notebook ended without run.finish()")
        raise StepFailed(step, "the notebook ended without run.finish()", out)
    return time.perf_counter() - started


def render_reports(step: Step, echo: Callable[[str], None] = print, missing_only: bool = False) -> Path | None:
    """After a step whose stage renders an HTML report (its config class has `html_report_path`),
    render the executed notebook there. The runner does it, not the notebook: papermill writes a
    cell's outputs only after the cell ends, so a notebook cannot export its own last outputs."""
    from .stages import stage_config_class

    target = getattr(stage_config_class(step.notebook), "html_report_path", None)
    if target is None:
        return None
    out = target(step.injected())
    if missing_only and out.is_file():
        return out
    from .report.html import render_html

    render_html(step.run_dir / "notebook.ipynb", out)
    echo(f"    report written to {out}")
    return out


def step_timing(step: Step, wall_s: float) -> dict[str, float]:
    """A step's wall time split into the stage's own work (run.json `duration_s`: start_run to
    run.finish, measured inside the notebook) and the rest: kernel start-up, the imports before
    start_run, papermill's cell bookkeeping and the HTML render of a report."""
    work = float(read_json(step.run_dir / "run.json").get("duration_s", 0.0))
    return {"wall_s": round(wall_s, 2), "work_s": round(work, 2), "overhead_s": round(max(0.0, wall_s - work), 2)}


def _overhead_summary(timings: dict[str, dict[str, float]]) -> dict[str, float]:
    wall = sum(t["wall_s"] for t in timings.values())
    overhead = sum(t["overhead_s"] for t in timings.values())
    frac = overhead / wall if wall > 0 else 0.0  # 0 s steps: a test's stub executor
    return {"wall_s": round(wall, 1), "overhead_s": round(overhead, 1), "overhead_frac": frac}


def write_timings(out: Path, timings: dict[str, dict[str, float]], echo: Callable[[str], None]) -> None:
    """`out` (<results>/<folder>/timings/<pipeline or ablation file>.json): every step's latest
    measurement (steps this call skipped keep the one an earlier call wrote, so rerunning one step
    does not erase the rest), `total` over them and `last_call` over the steps this call ran, with
    the share of wall time that was not the stages' own work (notebook/kernel overhead), also
    printed as one line."""
    if not timings:
        return
    steps = (read_json(out).get("steps", {}) if out.is_file() else {}) | timings
    this = _overhead_summary(timings)
    atomic_write_json(out, {"steps": steps, "total": _overhead_summary(steps), "last_call": this})
    # "step time": the sum over steps, which exceeds the elapsed time when steps ran at once (--jobs)
    echo(
        f"notebook/kernel overhead: {_fmt(this['overhead_s'])} of {_fmt(this['wall_s'])} step time "
        f"({this['overhead_frac']:.1%}); per step in {out}"
    )


def _run_one(
    step: Step, head: str, force: bool, echo: Callable[[str], None], t0: float, tag: str = ""
) -> dict[str, float] | None:
    """Run one step unless complete; its `step_timing`, or None when it was skipped. `tag` prefixes
    the step's progress lines (steps running at once interleave theirs)."""
    # One `nebula run` at a time per run folder: a second one waits here, then finds it complete.
    with run_lock(step.run_dir, on_wait=lambda: echo(f"{head}  waiting: another nebula run is computing it")):
        if not force and is_complete(step.run_dir, step.run_id):
            echo(f"{head}  skipped (complete results in {step.run_dir})")
            render_reports(step, echo, missing_only=True)
            return None
        echo(f"{head}  running...")
        started = time.perf_counter()
        took = execute_step(step, echo=lambda line: echo(f"    {tag}{line}"))
    echo(f"{head}  done in {_fmt(took)} (elapsed {_fmt(time.perf_counter() - t0)})")
    render_reports(step, echo)
    return step_timing(step, time.perf_counter() - started)


def _check_inputs(all_steps: list[Step], selected: list[Step]) -> None:
    """Inputs of the selected steps that will not run must already be complete."""
    names = {s.name for s in selected}
    for step in all_steps:
        if step.name not in names and any(step.name in s.upstream for s in selected):
            if not is_complete(step.run_dir, step.run_id):
                raise StepFailed(step, "is needed upstream but has no complete results; run it first", step.run_dir)


def waits_for(steps: list[Step]) -> dict[str, set[str]]:
    """Step name -> the steps it must wait for: its references (`@step`), and every 00_environment
    step before it (the record of the machine and the offline check of the models come first, and a
    failed check stops the pipeline before anything is computed)."""
    out: dict[str, set[str]] = {}
    environments: set[str] = set()
    for step in steps:
        out[step.name] = set(step.upstream) | environments
        if step.notebook == "00_environment":
            environments.add(step.name)
    return out


def run_in_order(
    items: list[tuple[str, Step]],
    deps: list[set[int]],
    force: bool,
    echo: Callable[[str], None],
    jobs: int = 1,
) -> list[dict[str, float] | None]:
    """Run items[i] = (head, step) once all items[j], j in deps[i], are done, at most `jobs` at once
    (the first ready item in list order first, so jobs=1 is the list order). Returns each item's
    step_timing (None: skipped). After a failure no new step starts; the running ones finish and the
    first failure is raised. Ctrl-C kills the running kernels.

    Written here because the schedule is our pipeline DAG of papermill runs in one process (their
    kernels, locks and progress lines); a workflow engine (snakemake, luigi) would own the processes."""
    t0 = time.perf_counter()
    results: list[dict[str, float] | None] = [None] * len(items)
    if jobs <= 1:  # in this thread: Ctrl-C reaches papermill directly
        for i, (head, step) in enumerate(items):
            results[i] = _run_one(step, head, force, echo, t0)
        return results
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            echo(line)

    pending, done, running, failure = list(range(len(items))), set(), {}, None
    with ThreadPoolExecutor(jobs, thread_name_prefix="nebula-step") as pool:
        try:
            while pending or running:
                ready = [i for i in pending if deps[i] <= done] if failure is None else []
                for i in ready[: jobs - len(running)]:
                    pending.remove(i)
                    head, step = items[i]
                    running[pool.submit(_run_one, step, head, force, say, t0, f"{step.name}: ")] = i
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = running.pop(future)
                    if future.exception() is not None:
                        failure = failure or future.exception()
                    else:
                        results[i] = future.result()
                        done.add(i)
        except BaseException:
            say(f"interrupted: killing {kill_running_kernels()} running step kernel(s)")
            raise
    if failure is not None:
        raise failure
    return results


def run_pipeline(
    pipeline: Pipeline,
    force: bool = False,
    only: str | None = None,
    start: str | None = None,
    echo: Callable[[str], None] = print,
    jobs: int = 1,
) -> dict[str, str]:
    """Run selected steps, up to `jobs` independent ones at once; return {step name: 'ran' | 'skipped'}.
    Raises StepFailed."""
    selected = select_steps(pipeline, only, start)
    _check_inputs(pipeline.steps, selected)
    set_child_process_env_defaults()  # the step kernels inherit them
    atomic_write_json(
        pipeline.steps[0].run_dir.parent / "pipeline.json",
        {
            "pipeline": pipeline.name,
            "source": str(pipeline.source),
            "steps": [
                {"name": s.name, "notebook": s.notebook, "run_id": s.run_id, "upstream": s.upstream}
                for s in pipeline.steps
            ],
        },
    )
    index, inputs = {s.name: i for i, s in enumerate(selected)}, waits_for(pipeline.steps)
    deps = [{index[u] for u in inputs[s.name] if u in index} for s in selected]
    heads = [(f"[{i}/{len(selected)}] {s.name:<24} {s.run_id}", s) for i, s in enumerate(selected, start=1)]
    t0 = time.perf_counter()
    results = run_in_order(heads, deps, force, echo, jobs)
    status = {s.name: "skipped" if r is None else "ran" for s, r in zip(selected, results)}
    timings = {s.name: r for s, r in zip(selected, results) if r is not None}
    out = pipeline.steps[0].run_dir.parent / "timings" / f"{Path(str(pipeline.source)).stem}.json"
    write_timings(out, timings, echo)
    echo(
        f"pipeline {pipeline.name}: {sum(v == 'ran' for v in status.values())} ran, "
        f"{sum(v == 'skipped' for v in status.values())} skipped, {_fmt(time.perf_counter() - t0)}"
    )
    return status


def run_ablation(ablation, force: bool = False, echo: Callable[[str], None] = print, jobs: int = 1) -> dict[str, str]:
    """Run every variant's steps (each run id once, complete ones skipped, up to `jobs` independent
    ones at once), then the report, which waits for all of them.

    Returns {run id: 'ran' | 'skipped'}. Writes <results>/<folder>/ablations/<ablation file stem>.json
    mapping each variant (label, grid point) to its steps' run ids (named by the file: several
    ablations share the folder `demo`).
    """
    set_child_process_env_defaults()  # the step kernels inherit them
    atomic_write_json(
        ablation_record(ablation.root, ablation.source),
        {
            "ablation": ablation.name,
            "source": str(ablation.source),
            "variants": [
                {"label": v.label, "point": v.point, "steps": {s.name: s.run_id for s in v.pipeline.steps}}
                for v in ablation.variants
            ],
            "report": ablation.report.run_id if ablation.report else None,
        },
    )
    plan = ablation.plan()
    index = {step.run_id: i for i, (_, step) in enumerate(plan)}
    deps: list[set[int]] = [set() for _ in plan]
    for variant in ablation.variants:
        inputs = waits_for(variant.pipeline.steps)
        for step in variant.pipeline.steps:
            deps[index[step.run_id]] |= {index[variant.pipeline.step(u).run_id] for u in inputs[step.name]}
    if ablation.report is not None:
        deps[index[ablation.report.run_id]] = set(range(len(plan) - 1))
    heads = [
        (f"[{i}/{len(plan)}] {label[:28]:<28} {step.name:<16} {step.run_id}", step)
        for i, (label, step) in enumerate(plan, start=1)
    ]
    t0 = time.perf_counter()
    results = run_in_order(heads, deps, force, echo, jobs)
    status = {step.run_id: "skipped" if r is None else "ran" for (_, step), r in zip(plan, results)}
    timings = {step.run_id: r for (_, step), r in zip(plan, results) if r is not None}
    # named by the ablation file: several ablations (and pipelines) share one results folder, e.g. `demo`
    write_timings(ablation.root / "timings" / f"{Path(str(ablation.source)).stem}.json", timings, echo)
    shared = sum(len(v.pipeline.steps) for v in ablation.variants) + bool(ablation.report) - len(plan)
    echo(
        f"ablation {ablation.name}: {len(ablation.variants)} variants, {len(plan)} distinct runs "
        f"({shared} shared), {sum(v == 'ran' for v in status.values())} ran, "
        f"{sum(v == 'skipped' for v in status.values())} skipped, {_fmt(time.perf_counter() - t0)}"
    )
    return status


def ablation_record(root: Path, source: str | Path) -> Path:
    """Where run_ablation records an ablation's variants: <root>/ablations/<ablation file stem>.json."""
    return Path(root) / "ablations" / f"{Path(str(source)).stem}.json"


def _print_plan(steps: list[tuple[str, Step]]) -> None:
    for label, s in steps:
        state = "complete" if is_complete(s.run_dir, s.run_id) else "pending"
        print(f"{label + '  ' if label else ''}{s.name:<24} {s.run_id:<28} {state}")


def main_run(args) -> int:
    from .ablation import is_ablation_file, load_ablation
    from .config import ConfigError
    from .pipeline import load_pipeline

    try:
        if is_ablation_file(args.pipeline):
            if args.only or args.start:
                raise ConfigError(f"{args.pipeline}: --only/--from select steps of one pipeline, not of an ablation")
            ablation = load_ablation(args.pipeline, results_root=args.results)
            if args.plan:
                _print_plan([(f"{label:<28}", s) for label, s in ablation.plan()])
                return 0
            run_ablation(ablation, force=args.force, jobs=args.jobs)
            return 0
        pipeline = load_pipeline(args.pipeline, results_root=args.results)
        if args.plan:
            _print_plan([("", s) for s in pipeline.steps])
            return 0
        run_pipeline(pipeline, force=args.force, only=args.only, start=args.start, jobs=args.jobs)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except StepFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
