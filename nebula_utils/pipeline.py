"""Pipeline files: an ordered list of notebook steps with layered params and step references.

Format (`params/pipelines/<name>.yaml`):

    pipeline: smoke                 # results go to results/<pipeline>/<run_id>/
    description: one line
    defaults: {model: tiny-random}  # applied to every step whose stage declares the key
    steps:
      - notebook: 20_sft            # notebooks/20_sft.ipynb; stage config from params/stages/20_sft.yaml
        name: 20_sft                # optional, defaults to the notebook name; unique per pipeline
        params: {data: "@10_data_sft_mix/sft"}

A string value `@<step>[/sub/path]` refers to an earlier step's run folder. In the injected
parameters it becomes that folder's path; in the run-id hash it becomes `@<upstream run id>/sub`,
so changing an upstream step changes (and reruns) every step downstream of it, and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import RUNTIME_KEYS, ConfigError, build_config, field_types, load_yaml, make_run_id, merge_layers
from .paths import NOTEBOOKS_DIR, PARAMS_DIR, repo_path
from .paths import results_root as default_results_root
from .stages import stage_config_class, stage_defaults

PIPELINE_KEYS = {"pipeline", "description", "defaults", "steps", "extends"}
STEP_KEYS = {"notebook", "name", "params"}


@dataclass
class Step:
    name: str
    notebook: str
    params: dict[str, Any]  # resolved values injected into the notebook (references -> paths)
    science: dict[str, Any]  # hashed part (references -> upstream run ids)
    run_id: str
    run_dir: Path
    upstream: list[str] = field(default_factory=list)

    @property
    def notebook_path(self) -> Path:
        return NOTEBOOKS_DIR / f"{self.notebook}.ipynb"

    def injected(self) -> dict[str, Any]:
        return self.params | {"run_dir": str(self.run_dir), "run_id": self.run_id}


@dataclass
class Pipeline:
    name: str
    description: str
    source: Path
    steps: list[Step]

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise ConfigError(f"{self.source}: no step named '{name}' (steps: {', '.join(s.name for s in self.steps)})")


def _resolve_refs(value: Any, done: dict[str, Step], where: str) -> tuple[Any, Any, list[str]]:
    """Return (value for the notebook, value for the hash, upstream step names). References are
    resolved inside lists and as mapping values (e.g. 51_mopd's `teachers: {code: "@20_sft_code/model"}`)."""
    if isinstance(value, dict):
        triples = {k: _resolve_refs(v, done, f"{where}.{k}") for k, v in value.items()}
        return (
            {k: t[0] for k, t in triples.items()},
            {k: t[1] for k, t in triples.items()},
            [u for t in triples.values() for u in t[2]],
        )
    if isinstance(value, list):
        triples = [_resolve_refs(v, done, f"{where}[{i}]") for i, v in enumerate(value)]
        return [t[0] for t in triples], [t[1] for t in triples], [u for t in triples for u in t[2]]
    if isinstance(value, str) and value.startswith("@"):
        ref, _, sub = value[1:].partition("/")
        if ref not in done:
            raise ConfigError(f"{where}: '{value}' refers to '{ref}', which is not an earlier step")
        up = done[ref]
        path = up.run_dir / sub if sub else up.run_dir
        return str(path), f"@{up.run_id}" + (f"/{sub}" if sub else ""), [ref]
    return value, value, []


def build_step(
    raw: Any,
    where: str,
    defaults: dict[str, Any],
    done: dict[str, Step],
    root: Path,
    params_dir: Path = PARAMS_DIR,
    defaults_source: str = "defaults",
) -> Step:
    """One step from its raw dict: layers base -> stage -> `defaults` -> step params, references
    resolved against the `done` steps; the run folder is `root/<run id>`."""
    if not isinstance(raw, dict) or "notebook" not in raw:
        raise ConfigError(f"{where}: each step needs a 'notebook' key")
    bad = sorted(set(raw) - STEP_KEYS)
    if bad:
        raise ConfigError(f"{where}: unknown key '{bad[0]}' (allowed: {', '.join(sorted(STEP_KEYS))})")
    notebook = str(raw["notebook"])
    step_name = str(raw.get("name", notebook))
    if not (NOTEBOOKS_DIR / f"{notebook}.ipynb").is_file():
        raise ConfigError(f"{where}: notebook 'notebooks/{notebook}.ipynb' not found")
    cls = stage_config_class(notebook)
    known = field_types(cls)
    layers = stage_defaults(notebook, params_dir)
    layers.append(({k: v for k, v in defaults.items() if k in known}, defaults_source))
    layers.append((raw.get("params") or {}, f"{where} ({step_name}).params"))
    origins: dict[str, str] = {}
    merged = merge_layers(cls, notebook, layers, origins)
    missing = [k for k in known if k not in merged and k not in {"run_dir", "run_id"}]
    if missing:
        raise ConfigError(f"{where}: stage {notebook} has no value for key(s) {', '.join(missing)}")
    params, science, upstream = {}, {}, []
    for key, value in merged.items():
        params[key], hashed, ups = _resolve_refs(value, done, f"{where}: key '{key}'")
        upstream += ups
        if key not in RUNTIME_KEYS:
            science[key] = hashed
    run_id = make_run_id(notebook, science)
    # Build the stage dataclass now, so every value check (its check()) fails at plan time, before
    # any step runs, naming the file that set the bad key.
    build_config(cls, notebook, params | {"run_dir": str(root / run_id), "run_id": run_id}, where, origins)
    return Step(step_name, notebook, params, science, run_id, root / run_id, upstream)


def pipeline_from_doc(
    doc: dict[str, Any],
    path: str | Path,
    results_root: str | Path | None = None,
    params_dir: Path = PARAMS_DIR,
    name: str | None = None,
) -> Pipeline:
    """A pipeline from an already-loaded document (`path` names it in errors); `name` overrides
    its results folder name (ablation variants share one folder so equal run ids are reused)."""
    path = Path(path)
    unknown = sorted(set(doc) - PIPELINE_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(PIPELINE_KEYS))})")
    name = name or doc.get("pipeline") or path.stem
    defaults = doc.get("defaults") or {}
    raw_steps = doc.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ConfigError(f"{path}: 'steps' must be a non-empty list")
    root = (Path(results_root) if results_root else default_results_root()) / name
    steps: dict[str, Step] = {}
    for i, raw in enumerate(raw_steps):
        step = build_step(raw, f"{path}: steps[{i}]", defaults, steps, root, params_dir, f"{path}: defaults")
        if step.name in steps:
            raise ConfigError(f"{path}: steps[{i}]: duplicate step name '{step.name}' (give each a unique 'name')")
        steps[step.name] = step
    declared = {k for s in steps.values() for k in field_types(stage_config_class(s.notebook))}
    unused = sorted(set(defaults) - declared)
    if unused:
        raise ConfigError(f"{path}: defaults key '{unused[0]}' is not a parameter of any step")
    return Pipeline(name, doc.get("description", ""), path, list(steps.values()))


def expand_extends(doc: dict[str, Any], path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """`extends: <pipeline file>` (repo-relative or absolute): the base's steps, then this file's.

    The result keeps the base's results folder (its `pipeline` name) unless this file names one,
    so the base's steps keep their run ids and are skipped when done: e.g. a file that adds the
    end-of-project `unseen` evaluation to the demo reruns nothing but the new steps.
    """
    if "extends" not in doc:
        return doc
    base_path = repo_path(doc["extends"])
    if base_path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' forms a cycle through {base_path}")
    base = expand_extends(load_yaml(base_path), base_path, seen + (path.resolve(),))
    return {
        "pipeline": doc.get("pipeline") or base.get("pipeline") or base_path.stem,
        "description": doc.get("description", base.get("description", "")),
        "defaults": (base.get("defaults") or {}) | (doc.get("defaults") or {}),
        "steps": list(base.get("steps") or []) + list(doc.get("steps") or []),
    }


def load_pipeline(path: str | Path, results_root: str | Path | None = None, params_dir: Path = PARAMS_DIR) -> Pipeline:
    path = Path(path)
    return pipeline_from_doc(expand_extends(load_yaml(path), path), path, results_root, params_dir)
