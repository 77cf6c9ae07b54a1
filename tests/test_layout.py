"""The package layout: one naming rule for stages, libraries below the core, no import cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from nebula_utils.stages import STAGE_NAME, stage_names
from tests.conftest import REPO

PACKAGE = REPO / "nebula_utils"
# launch/ (the planner) reads pipelines as the runner does: it is core, not a library.
LIBRARIES = ("data", "verifiers", "evaluate", "inference", "train", "report")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every nebula_utils module `path` imports, at module level or inside functions."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("nebula_utils")}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.startswith("nebula_utils"):
                # `from . import x` imports the submodule x when it is one
                subs = [f"{target}.{a.name}" for a in node.names]
                found |= {s for s in subs if s in MODULES} or {target}
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: {m for m in imports_of(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def test_each_stage_has_its_notebook_params_module_and_tests():
    stages = stage_names()
    assert stages, "no notebooks/NN_x.ipynb found"
    for stage in stages:
        name = STAGE_NAME.match(stage)["name"]
        assert (REPO / "notebooks" / f"{stage}.py").is_file(), f"{stage}: no py:percent twin"
        assert (REPO / "params" / "stages" / f"{stage}.yaml").is_file(), f"{stage}: no params/stages/{stage}.yaml"
        assert (PACKAGE / "stages" / f"{name}.py").is_file(), f"{stage}: no nebula_utils/stages/{name}.py"
        assert (REPO / "tests" / "stages" / f"test_{name}.py").is_file(), f"{stage}: no tests/stages/test_{name}.py"
    names = {STAGE_NAME.match(s)["name"] for s in stages}
    modules = {p.stem for p in (PACKAGE / "stages").glob("*.py") if not p.stem.startswith("_")}
    assert modules == names, f"stage modules without a notebook: {sorted(modules - names)}"
    yamls = {p.stem for p in (REPO / "params" / "stages").glob("*.yaml")}
    assert yamls == set(stages), f"stage params without a notebook: {sorted(yamls - set(stages))}"
    tests = {p.stem.removeprefix("test_") for p in (REPO / "tests" / "stages").glob("test_*.py")}
    assert tests == names, f"stage tests without a stage: {sorted(tests - names)}"


def test_no_import_cycles():
    """Deferred (in-function) imports count too: a cycle hidden in a function is still a cycle."""
    assert "nebula_utils.config" in GRAPH["nebula_utils.runs"]  # the graph sees relative imports
    assert "nebula_utils.data.versions" in GRAPH["nebula_utils.runs"]  # ... and in-function ones
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            # a package's __init__ importing its own submodules is how re-exports work, not a cycle
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt) :] + [nxt] if nxt in trail else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if not state.get(nxt):
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(GRAPH):
        if not state.get(name):
            visit(name, [name])


def test_core_config_imports_nothing_from_the_package():
    assert GRAPH["nebula_utils.config"] == set()


@pytest.mark.parametrize("library", LIBRARIES)
def test_libraries_take_paths_as_arguments(library):
    """Library modules never read the repository layout (paths.py) nor import stages or the runner."""
    for name, deps in GRAPH.items():
        if name.startswith(f"nebula_utils.{library}"):
            bad = {
                d
                for d in deps
                if d in ("nebula_utils.paths", "nebula_utils.runner", "nebula_utils.pipeline")
                or d.startswith("nebula_utils.stages")
            }
            assert not bad, f"{name} imports {sorted(bad)}"


def test_resolving_every_pipeline_loads_neither_torch_nor_datasets():
    code = (
        "import sys\n"
        "from nebula_utils.stages import stage_config_class, stage_names\n"
        "from nebula_utils.pipeline import load_pipeline\n"
        "from nebula_utils.ablation import load_ablation\n"
        "from nebula_utils.paths import PARAMS_DIR\n"
        "[stage_config_class(s) for s in stage_names()]\n"
        "[load_pipeline(p, results_root='/tmp/nebula-layout-test') for p in sorted(PARAMS_DIR.glob('pipelines/*.yaml'))]\n"
        "[load_ablation(p, results_root='/tmp/nebula-layout-test') for p in sorted(PARAMS_DIR.glob('ablations/*.yaml'))]\n"
        "print(sorted(m for m in ('torch', 'datasets', 'transformers', 'trl') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
