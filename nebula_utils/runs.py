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

import fcntl
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import build_config, field_types, make_run_id
from .io import atomic_write_json, atomic_write_yaml, read_json
from .paths import repo_path, results_root

METRICS_SCHEMA_VERSION = 1
PROGRESS_FILE = "progress.log"  # a stage's progress lines, echoed live by the runner
PROGRESS_ENV = "NEBULA_PROGRESS_FILE"


def report_progress(message: str) -> None:
    """One progress line (training step with loss and tokens/s, generation items done with ETA).

    Under the runner it is appended to the run's progress.log, which the runner echoes to the
    terminal while the notebook runs (papermill only shows a cell's output after the cell ends);
    elsewhere (JupyterLab, plain papermill) it does nothing: the notebook shows its own outputs.
    """
    path = os.environ.get(PROGRESS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(message.rstrip("\n") + "\n")


def format_eta(seconds: float) -> str:
    """`ETA 3m07s`: the one ETA format of every progress line (training and generation)."""
    seconds = max(0.0, seconds)
    return f"ETA {int(seconds // 60)}m{int(seconds % 60):02d}s"


class ItemProgress:
    """Progress of a long loop over items (completions generated, prompts graded): at most one
    line every `every_s` seconds plus the last one, e.g. `generate 120/480 · 96 tok/s · ETA 3m10s`.
    Called with the items done, the total and the tokens produced so far (0 if not counted).
    The ETA (elapsed / done x left) waits for 5% of the items: the engine starts with the longest
    prompts and the first completions end only after a full token budget, so earlier figures
    overshoot (the demo's distillation printed `ETA 243m` after 10 s of a 4-minute step).
    10 s between lines keeps a 15-minute step to ~90 lines."""

    ETA_AFTER = 0.05

    def __init__(self, label: str, every_s: float = 10.0):
        self.label, self.every_s = label, every_s
        self.start = self.last = time.perf_counter()

    def __call__(self, done: int, total: int, tokens: int = 0) -> None:
        now = time.perf_counter()
        if done < total and now - self.last < self.every_s:
            return
        self.last, elapsed = now, now - self.start
        rate = f" · {tokens / elapsed:.0f} tok/s" if tokens and elapsed > 0 else ""
        eta = format_eta(elapsed / done * (total - done)) if done >= self.ETA_AFTER * total and done else "ETA --"
        report_progress(f"{self.label} {done}/{total}{rate} · {eta}")


@contextmanager
def follow_progress(path: Path, echo: Callable[[str], None], interval: float = 0.5) -> Iterator[None]:
    """While the block runs, echo each new line of `path`. The writer finds the file through
    NEBULA_PROGRESS_FILE, which the runner sets in each step's kernel environment (not in this
    process's: steps run in parallel threads, each with its own file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    stop = threading.Event()

    def tail() -> None:
        with open(path, encoding="utf-8") as fh:
            while True:
                line = fh.readline()
                if line:
                    echo(line.rstrip("\n"))
                elif stop.is_set():
                    return
                else:
                    time.sleep(interval)

    thread = threading.Thread(target=tail, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


@contextmanager
def run_lock(run_dir: Path, on_wait: Callable[[], None] = lambda: None) -> Iterator[None]:
    """An exclusive lock on one run folder (a sibling `.lock` file, so cleaning the folder keeps
    it): a second `nebula run` computing the same step waits (after calling `on_wait`) instead of
    computing it twice at once; the lock dies with its process."""
    lock = run_dir.with_name(f".{run_dir.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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
        doc = (
            read_json(path)
            if path.is_file()
            else {
                "schema_version": METRICS_SCHEMA_VERSION,
                "run_id": self.run_id,
                "stage": self.stage,
                "metrics": {},
            }
        )
        for name, value in metrics.items():
            entry = dict(value) if isinstance(value, Mapping) else {"value": value}
            entry.setdefault("n", None)
            entry.setdefault("ci95", None)
            doc["metrics"][name] = entry
        atomic_write_json(path, doc)
        return doc

    def write_manifest(self, name: str, manifest: Mapping[str, Any]) -> Path:
        return atomic_write_json(self.path("manifests", f"{name}.json"), dict(manifest))

    def input_versions(self) -> list[Path]:
        """Every data version the config names (any str / list-of-str value that is a version folder)."""
        found: list[Path] = []
        for key, value in self.config.to_dict().items():
            if key in ("run_dir", "run_id"):
                continue
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, str) and v and (repo_path(v) / "version.json").is_file():
                    found.append(repo_path(v).resolve())
        return list(dict.fromkeys(found))

    def finish(
        self,
        metrics: Mapping[str, Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
        consumed: Sequence[str | os.PathLike] = (),
        manifests: Mapping[str, Mapping] | None = None,
        **extra: Any,
    ) -> None:
        """The one stage epilogue: log `metrics`, record this run in the consumption manifest of
        every input data version (`consumed` adds versions the config does not name), record the
        produced versions (`outputs`: name -> VersionInfo or folder) and extra `manifests`, then mark
        the run complete. Every stage notebook ends with it; the runner checks it was reached."""
        from .data.versions import record_consumption, version_info

        if metrics:
            self.log_metrics(metrics)
        inputs = list(dict.fromkeys([*self.input_versions(), *(repo_path(c).resolve() for c in consumed)]))
        for path in inputs:
            record_consumption(path, self.run_id, self.stage)
        produced = {name: version_info(getattr(v, "path", v)).to_dict() for name, v in (outputs or {}).items()}
        if produced:
            self.write_manifest("data_versions", produced)
        for name, manifest in (manifests or {}).items():
            self.write_manifest(name, manifest)
        now = time.time()
        info = self._info("complete") | {
            "finished": now,
            "duration_s": now - self.started,
            "inputs": [str(p) for p in inputs],
            "outputs": sorted(produced),
        }
        atomic_write_json(self.path("run.json"), info | extra)


def _newest_output(stage: str, sub: str) -> Path | None:
    """The `sub` folder of the most recently finished complete run of `stage` under the results root;
    a data version with no rows is passed over (e.g. a curriculum mix a small input left empty)."""
    best: tuple[float, Path] | None = None
    for marker in results_root().glob("*/*/run.json"):
        try:
            info = read_json(marker)
        except (OSError, ValueError):
            continue
        out = marker.parent / sub
        if info.get("stage") == stage and info.get("status") == "complete" and out.exists() and not _empty(out):
            finished = float(info.get("finished") or 0)
            if best is None or finished > best[0]:
                best = (finished, out)
    return best[1] if best else None


def _empty(out: Path) -> bool:
    try:
        return read_json(out / "version.json").get("num_rows") == 0
    except (OSError, ValueError):
        return False  # not a data version (a model folder, a file)


def resolve_inputs(cls: type, values: dict[str, Any], run_dir_hint: Path) -> dict[str, str]:
    """Fill empty input fields (the stage's `upstream` map: field -> "NN_stage/output") with the
    newest complete upstream output under results/, or a small built-in data version when there is
    none, and make relative input paths absolute (repo-relative, whatever the cwd). Returns
    {field: how it was resolved} for the notebook to print."""
    notes: dict[str, str] = {}
    for key, spec in getattr(cls, "upstream", {}).items():
        value = values.get(key)
        if value:
            values[key] = str(repo_path(value))
            continue
        stage, _, sub = spec.partition("/")
        found = _newest_output(stage, sub)
        if found is not None:
            values[key] = str(found)
            notes[key] = f"newest complete {stage} output: {found}"
            continue
        schema = getattr(cls, "builtin_inputs", {}).get(key)
        if schema is None:
            raise FileNotFoundError(
                f"key '{key}' is empty and no complete {stage} run is under {results_root()}: "
                f"run notebooks/{stage}.ipynb first or pass {key}=<{sub} data version folder>"
            )
        from .data.builtin import builtin_version

        info = builtin_version(schema, run_dir_hint / f"builtin_{key}", values.get("seed", 0))
        values[key] = str(info.path)
        notes[key] = f"no {stage} output under {results_root()}: built-in {schema} sample ({info.num_rows} rows)"
    # Model fields (`upstream_models`) hold a spec (Hub id, packaged:..., tiny-random) or a folder: a
    # set value is made absolute only when it is a folder under the repository; an empty one is the
    # newest complete upstream checkpoint, and there is no built-in stand-in for a trained model.
    for key, spec in getattr(cls, "upstream_models", {}).items():
        value = values.get(key)
        if value:
            values[key] = str(repo_path(value)) if repo_path(value).is_dir() else value
            continue
        stage, _, sub = spec.partition("/")
        found = _newest_output(stage, sub)
        if found is None:
            raise FileNotFoundError(
                f"key '{key}' is empty and no complete {stage} run is under {results_root()}: "
                f"run notebooks/{stage}.ipynb first or pass {key}=<model spec or checkpoint folder>"
            )
        values[key] = str(found)
        notes[key] = f"newest complete {stage} output: {found}"
    return notes


def _hashable(values: Mapping[str, Any]) -> dict[str, Any]:
    """Paths inside a run folder hash as '@<run id>/<sub>' (as pipeline references do), so a
    notebook run on an upstream output gets the same id wherever the results folder lives."""
    out = {}
    for key, value in values.items():
        if isinstance(value, str) and value.startswith("/"):
            path = Path(value)
            owner = next((c for c in [path, *path.parents] if (c / "run.json").is_file()), None)
            if owner is not None:
                run_id = read_json(owner / "run.json").get("run_id", owner.name)
                rel = path.relative_to(owner).as_posix()
                value = f"@{run_id}" + ("" if rel == "." else f"/{rel}")
        out[key] = value
    return out


def start_run(stage: str, namespace: Mapping[str, Any]) -> Run:
    """Called by a notebook right after its parameters cell: `run = start_run("20_sft", globals())`.

    Validates the parameters against the stage's dataclass, resolves empty or relative inputs
    (see resolve_inputs; how is printed), fixes the run id and folder, writes the resolved config,
    and sets seeds and thread counts.
    """
    from .stages import stage_config_class

    cls = stage_config_class(stage)
    values = {k: namespace[k] for k in field_types(cls) if k in namespace}
    config = build_config(cls, stage, values, source=f"parameters of notebook {stage}")
    values = config.to_dict()
    staging = results_root() / "interactive" / ".inputs" / stage
    for key, note in resolve_inputs(cls, values, Path(values["run_dir"]) if values["run_dir"] else staging).items():
        print(f"{key}: {note}")
    config = build_config(cls, stage, values, source=f"parameters of notebook {stage}")
    run_id = config.run_id or make_run_id(stage, _hashable(config.science()))
    run_dir = Path(config.run_dir) if config.run_dir else results_root() / "interactive" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_yaml(run_dir / "config.yaml", config.to_dict() | {"run_id": run_id, "run_dir": str(run_dir)})
    run = Run(stage=stage, config=config, run_id=run_id, run_dir=run_dir)
    # A run starts with no metrics: an earlier incomplete run's values must not survive into this one.
    run.path("metrics.json").unlink(missing_ok=True)
    atomic_write_json(run_dir / "run.json", run._info("running"))
    set_threads(config.num_threads)
    set_seed_everywhere(config.seed)
    return run
