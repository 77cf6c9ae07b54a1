"""Layered, typed stage configuration: params/base.yaml -> params/stages/<stage>.yaml -> run.

Each stage declares a dataclass of its parameters (fields without defaults: every default lives
in YAML, the one source of truth). Layers are merged key by key; a key the stage does not
declare, a value of the wrong type, a missing file or a malformed YAML file raise ConfigError
with a one-line message naming the file and the key.

A run id is `<stage>-<8 hex>` where the hex is the SHA-256 of the resolved config with the
runtime-only knobs removed, so the same science always maps to the same id and results folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml

# Knobs that change how a run executes or where it writes, never what it computes: excluded
# from the run-id hash so that e.g. logging more often does not invalidate finished results.
RUNTIME_KEYS = frozenset(
    {"run_dir", "run_id", "num_threads", "logging_steps", "dataloader_num_workers", "report_to", "upstream"}
)

REPO_ROOT = Path(__file__).resolve().parent.parent
PARAMS_DIR = REPO_ROOT / "params"


class ConfigError(ValueError):
    """A params problem the user must fix; str() is a single line naming file and key."""


@dataclasses.dataclass
class StageConfig:
    """Keys every stage has (defaults in params/base.yaml)."""

    seed: int
    device: str  # auto | cpu | cuda
    num_threads: int  # runtime-only: torch/OMP threads on CPU
    run_dir: str  # runtime-only: set by the runner; "" -> results/interactive/<run_id>
    run_id: str  # runtime-only: set by the runner; "" -> computed from the config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def science(self) -> dict[str, Any]:
        """The part of the config that defines the result (hashed into the run id)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_KEYS}


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: malformed YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, got {type(data).__name__}")
    return data


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against type `tp`; return it (ints widen to float, '1e-4' parses)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads `1e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        if isinstance(value, list):
            (arg,) = typing.get_args(tp) or (Any,)
            return [coerce(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            args = typing.get_args(tp)
            val_tp = args[1] if len(args) == 2 else Any
            return {k: coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    else:
        raise ConfigError(f"{where}: unsupported field type {tp!r}")
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def merge_layers(cls: type, stage: str, layers: list[tuple[Mapping[str, Any], str]]) -> dict[str, Any]:
    """Merge (values, source) layers in order; every key must be a field of `cls`."""
    known = field_types(cls)
    merged: dict[str, Any] = {}
    for values, source in layers:
        for key, value in values.items():
            if key not in known:
                raise ConfigError(
                    f"{source}: unknown key '{key}' for stage {stage} (known: {', '.join(sorted(known))})"
                )
            merged[key] = coerce(value, known[key], f"{source}: key '{key}'")
    return merged


def build_config(cls: type, stage: str, values: Mapping[str, Any], source: str) -> Any:
    known = field_types(cls)
    missing = [k for k in known if k not in values]
    if missing:
        raise ConfigError(f"{source}: stage {stage} is missing key(s) {', '.join(missing)}")
    extra = [k for k in values if k not in known]
    if extra:
        raise ConfigError(f"{source}: unknown key '{extra[0]}' for stage {stage}")
    return cls(**{k: coerce(values[k], known[k], f"{source}: key '{k}'") for k in known})


def stage_defaults(stage: str, params_dir: Path = PARAMS_DIR) -> list[tuple[dict[str, Any], str]]:
    """The base and stage layers for `stage` (e.g. '20_sft'), as (values, source) pairs."""
    from .stages import stage_config_class

    cls = stage_config_class(stage)
    base_path = params_dir / "base.yaml"
    base = load_yaml(base_path)
    # base.yaml holds keys shared by many stages; a stage takes the ones it declares.
    known = field_types(cls)
    base_layer = {k: v for k, v in base.items() if k in known}
    stage_path = params_dir / "stages" / f"{stage}.yaml"
    return [(base_layer, str(base_path)), (load_yaml(stage_path), str(stage_path))]


def config_hash(science: Mapping[str, Any]) -> str:
    blob = json.dumps(science, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:8]


def make_run_id(stage: str, science: Mapping[str, Any]) -> str:
    return f"{stage}-{config_hash(science)}"
