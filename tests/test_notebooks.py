"""Notebook hygiene: paired with py:percent, no outputs, parameters == YAML defaults == dataclass."""

import ast
import json
import types
import typing

import jupytext
import pytest

from nebula_utils.config import field_types, merge_layers
from nebula_utils.stages import stage_config_class, stage_defaults, stage_names
from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))


def parameter_annotations(nb) -> dict:
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    return {n.target.id: ast.unparse(n.annotation).split("[")[0] for n in ast.parse(cell.source).body}


def parameters_cell(nb) -> dict:
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    values = {}
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.AnnAssign), f"parameters cell must be flat typed literals: {ast.unparse(node)}"
        values[node.target.id] = ast.literal_eval(node.value)
    return values


def test_every_notebook_is_a_stage():
    assert [p.stem for p in NOTEBOOKS] == stage_names()


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
    annotations = parameter_annotations(jupytext.read(path))
    for key, tp in field_types(cls).items():
        expected = typing.get_origin(tp) or tp
        if expected in (typing.Union, types.UnionType):  # e.g. `int | str`: the cell may name either
            expected = tuple(typing.get_origin(a) or a for a in typing.get_args(tp))
        else:
            expected = (expected,)
        names = [e.__name__ for e in expected]
        assert annotations[key] in {*names, " | ".join(names)}, (
            f"{stage}: parameter {key} is annotated {annotations[key]} but the dataclass says {tp}"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_long_functions_in_notebooks(path):
    for cell in jupytext.read(path).cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.FunctionDef):
                assert node.end_lineno - node.lineno < 12, f"function {node.name} is too long for a notebook"
