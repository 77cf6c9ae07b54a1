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
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

# Knobs that change how a run executes or where it writes, never what it computes: excluded
# from the run-id hash so that e.g. logging more often does not invalidate finished results.
RUNTIME_KEYS = frozenset(
    {
        "run_dir",
        "run_id",
        "num_threads",
        "logging_steps",
        "save_steps",
        "dataloader_num_workers",
        "report_to",
        "upstream",
        "launcher",
        # GPUs one vLLM engine spans: how generation is laid out on a machine, as `launcher` is for training
        "tensor_parallel_size",
    }
)


class ConfigError(ValueError):
    """A params problem the user must fix; str() is a single line naming file and key."""


def doc(help: str) -> Any:
    """A dataclass field documented once, where it is declared (TRL's `metadata={"help": ...}`
    habit): say what it does, its unit and why it matters. No default: defaults live in YAML."""
    return dataclasses.field(metadata={"help": help})


def field_help(cls: type) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


DEVICES = ("auto", "cpu", "cuda")


@dataclasses.dataclass
class StageConfig:
    """Keys every stage has (defaults in params/base.yaml).

    Subclasses check their values in `__post_init__` (one place per stage), so a bad value fails
    when the config is built: by `nebula run --plan` before any step runs, and by a notebook's
    first cell. Checks that need an upstream output to exist belong to the run, not here.
    """

    seed: int = doc("seeds python, numpy, torch and every sampler of the stage")
    device: str = doc("auto (CUDA when available, else CPU) | cpu | cuda | cuda:<index>")
    num_threads: int = doc(
        "runtime-only: torch/OMP threads on CPU (generation ran up to 40x slower unbounded on 2 cores)"
    )
    run_dir: str = doc('runtime-only: the run folder, set by the runner; "" = results/interactive/<run id>')
    run_id: str = doc('runtime-only: set by the runner; "" = <stage>-<8 hex of the resolved config>')

    def __post_init__(self) -> None:
        self._check_common()
        self.check()

    def check(self) -> None:
        """The stage's value checks (raise ConfigError("key 'x': ...")); called on construction."""

    # One-line value checks for `check()`; each raises ConfigError naming the key.
    def one_of(self, key: str, choices: Any) -> None:
        if getattr(self, key) not in choices:
            raise ConfigError(
                f"key '{key}': expected one of {', '.join(map(str, choices))}, got {getattr(self, key)!r}"
            )

    def all_in(self, key: str, choices: Any) -> None:
        bad = [v for v in getattr(self, key) if v not in choices]
        if bad:
            raise ConfigError(f"key '{key}': {bad[0]!r} is not one of {', '.join(map(str, choices))}")

    def at_least(self, key: str, low: float) -> None:
        if getattr(self, key) < low:
            raise ConfigError(f"key '{key}': must be >= {low}, got {getattr(self, key)}")

    def within(self, key: str, low: float, high: float) -> None:
        if not low <= getattr(self, key) <= high:
            raise ConfigError(f"key '{key}': must be in [{low}, {high}], got {getattr(self, key)}")

    def above(self, key: str, low: float) -> None:
        if not getattr(self, key) > low:
            raise ConfigError(f"key '{key}': must be > {low}, got {getattr(self, key)}")

    def _check_common(self) -> None:
        dev = self.device
        if dev not in DEVICES and not (dev.startswith("cuda:") and dev[5:].isdigit()):
            raise ConfigError(f"key 'device': expected one of {', '.join(DEVICES)} or cuda:<index>, got {dev!r}")
        if self.num_threads < 1:
            raise ConfigError(f"key 'num_threads': must be >= 1, got {self.num_threads}")

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


def merge_layers(
    cls: type, stage: str, layers: list[tuple[Mapping[str, Any], str]], origins: dict[str, str] | None = None
) -> dict[str, Any]:
    """Merge (values, source) layers in order; every key must be a field of `cls`. `origins`, if
    given, receives key -> the source that set its final value (for errors found later)."""
    known = field_types(cls)
    merged: dict[str, Any] = {}
    for values, source in layers:
        for key, value in values.items():
            if key not in known:
                raise ConfigError(
                    f"{source}: unknown key '{key}' for stage {stage} (known: {', '.join(sorted(known))})"
                )
            merged[key] = coerce(value, known[key], f"{source}: key '{key}'")
            if origins is not None:
                origins[key] = source
    return merged


_KEY_IN_MESSAGE = re.compile(r"key '(\w+)'")


def build_config(
    cls: type, stage: str, values: Mapping[str, Any], source: str, origins: Mapping[str, str] | None = None
) -> Any:
    """The stage dataclass from complete values; a failed value check names the file that set
    the key (`origins`, from merge_layers) or `source`."""
    known = field_types(cls)
    missing = [k for k in known if k not in values]
    if missing:
        raise ConfigError(f"{source}: stage {stage} is missing key(s) {', '.join(missing)}")
    extra = [k for k in values if k not in known]
    if extra:
        raise ConfigError(f"{source}: unknown key '{extra[0]}' for stage {stage}")
    try:
        return cls(**{k: coerce(values[k], known[k], f"{source}: key '{k}'") for k in known})
    except ConfigError as exc:
        message = str(exc)
        key = _KEY_IN_MESSAGE.search(message)
        where = (origins or {}).get(key.group(1), source) if key else source
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None


def config_hash(science: Mapping[str, Any]) -> str:
    blob = json.dumps(science, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:8]


def make_run_id(stage: str, science: Mapping[str, Any]) -> str:
    return f"{stage}-{config_hash(science)}"


def check_trl_overrides(overrides: dict[str, Any], config_cls: type) -> None:
    """Every `trl_overrides` key must be a field of the stage's TRL config class: a typo fails when
    the config is built, before any model is loaded, not after an hour of training."""
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(config_cls)})
    if unknown:
        raise ConfigError(
            f"trl_overrides: unknown {config_cls.__module__.split('.')[0]}.{config_cls.__name__} field '{unknown[0]}'"
        )
