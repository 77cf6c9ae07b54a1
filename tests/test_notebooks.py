"""Notebook hygiene: paired with py:percent, no outputs, parameters == YAML defaults == dataclass."""

import ast
import json
from pathlib import Path

import jupytext
import pytest

from nebula_utils.config import field_types, merge_layers, stage_defaults
from nebula_utils.stages import STAGES, stage_config_class

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))


def parameters_cell(nb) -> dict:
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    values = {}
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.AnnAssign), f"parameters cell must be flat typed literals: {ast.unparse(node)}"
        values[node.target.id] = ast.literal_eval(node.value)
    return values


def test_every_stage_has_a_notebook():
    assert {p.stem for p in NOTEBOOKS} == set(STAGES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_paired_clean_and_in_sync(path):
    twin = path.with_suffix(".py")
    assert twin.is_file(), f"{path.name} has no py:percent twin"
    raw = json.loads(path.read_text())
    assert not any(c.get("outputs") for c in raw["cells"] if c["cell_type"] == "code"), "committed with outputs"
    from_py = jupytext.read(twin)
    from_ipynb = jupytext.read(path)
    src = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]  # noqa: E731
    assert src(from_py) == src(from_ipynb), f"{path.name} and {twin.name} differ: run `make sync-notebooks`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_match_yaml_and_dataclass(path):
    stage = path.stem
    params = parameters_cell(jupytext.read(path))
    cls = stage_config_class(stage)
    assert set(params) == set(field_types(cls)), "parameters cell and stage dataclass declare different keys"
    resolved = merge_layers(cls, stage, stage_defaults(stage))
    for key, value in resolved.items():
        assert params[key] == value, f"{stage}: parameter {key}={params[key]!r} but YAML says {value!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_long_functions_in_notebooks(path):
    for cell in jupytext.read(path).cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.FunctionDef):
                assert node.end_lineno - node.lineno < 12, f"function {node.name} is too long for a notebook"
