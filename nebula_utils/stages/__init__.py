"""Stages: one notebook each, found by one naming rule (checked by tests/test_layout.py).

    notebooks/NN_x.ipynb  <->  params/stages/NN_x.yaml  <->  nebula_utils/stages/x.py  <->  tests/stages/test_x.py

`x.py` holds the stage's config dataclass (the one `StageConfig` subclass defined there, every
field documented on the field) and thin load/write/plot helpers; algorithms live in the
libraries (`data/`, `verifiers/`, `evaluate/`, `inference/`, `train/`, `report/`). The registry is
derived from the notebooks folder, not kept by hand. Importing a stage module must not import
torch or datasets (resolving every pipeline stays light; tests/test_config.py guards it).
"""

from __future__ import annotations

import functools
import importlib
import re
from pathlib import Path
from typing import Any

from ..config import ConfigError, StageConfig, field_help, field_types, load_yaml
from ..paths import NOTEBOOKS_DIR, PARAMS_DIR

STAGE_NAME = re.compile(r"^(?P<order>\d{2})_(?P<name>[a-z][a-z0-9_]*)$")


def stage_names(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[str]:
    """Every stage, in pipeline order: the notebooks named NN_x.ipynb."""
    return sorted(p.stem for p in notebooks_dir.glob("*.ipynb") if STAGE_NAME.match(p.stem))


def module_name(stage: str) -> str:
    match = STAGE_NAME.match(stage)
    if not match:
        raise ConfigError(f"stage '{stage}': a stage is named NN_name (e.g. 20_sft)")
    return f"{__name__}.{match['name']}"


@functools.cache
def stage_config_class(stage: str) -> type:
    """The one StageConfig subclass defined in nebula_utils/stages/<x>.py for stage NN_x."""
    if stage not in stage_names():
        raise ConfigError(f"unknown stage '{stage}' (known: {', '.join(stage_names())})")
    module = importlib.import_module(module_name(stage))
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, StageConfig) and obj.__module__ == module.__name__
    ]
    if len(found) != 1:
        raise ConfigError(f"{module.__name__}: defines {len(found)} StageConfig classes; a stage module defines one")
    return found[0]


def stage_defaults(stage: str, params_dir: Path = PARAMS_DIR) -> list[tuple[dict[str, Any], str]]:
    """The base and stage layers for `stage` (e.g. '20_sft'), as (values, source) pairs.

    base.yaml holds keys shared by many stages; a stage takes the ones its dataclass declares.
    """
    known = field_types(stage_config_class(stage))
    base_path = params_dir / "base.yaml"
    base = {k: v for k, v in load_yaml(base_path).items() if k in known}
    stage_path = params_dir / "stages" / f"{stage}.yaml"
    return [(base, str(base_path)), (load_yaml(stage_path), str(stage_path))]


def describe(stage: str, params_dir: Path = PARAMS_DIR) -> list[dict[str, Any]]:
    """One row per parameter: name, type, YAML default, help (what `nebula params` prints)."""
    cls = stage_config_class(stage)
    defaults: dict[str, Any] = {}
    for values, _ in stage_defaults(stage, params_dir):
        defaults |= values
    helps = field_help(cls)
    return [
        {"name": name, "type": _type_label(tp), "default": defaults.get(name), "help": helps[name]}
        for name, tp in field_types(cls).items()
    ]


def _type_label(tp: Any) -> str:
    return getattr(tp, "__name__", None) if not getattr(tp, "__args__", None) else str(tp).replace("typing.", "")


def summary(stage: str) -> str:
    """The first sentence of the stage module's docstring, without its "Stage NN_x:" prefix."""
    doc = " ".join((importlib.import_module(module_name(stage)).__doc__ or "").split())
    doc = re.sub(r"^Stage \S+:\s*", "", doc)
    return doc.split(". ")[0].rstrip(".")
