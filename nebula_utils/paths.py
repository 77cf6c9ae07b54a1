"""The one way to resolve a repository path, whatever the current working directory.

A notebook can start in `notebooks/` (JupyterLab), in the repository root (the runner) or anywhere
(a plain `papermill` call): every params value that names a file goes through `repo_path`, so
`data: results/demo/…` means the same folder in all three. Library modules never read this
layout themselves; stages resolve paths here and pass them down.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PARAMS_DIR = REPO_ROOT / "params"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
SUITES_DIR = PARAMS_DIR / "suites"
QUARANTINE_REGISTRY = PARAMS_DIR / "quarantine.yaml"


def results_root() -> Path:
    """`NEBULA_RESULTS` or `<repo>/results`; read at call time so tests and users can redirect it."""
    return Path(os.environ.get("NEBULA_RESULTS") or REPO_ROOT / "results").resolve()


def repo_path(path: str | os.PathLike) -> Path:
    """An absolute path: `~` expanded, absolute paths as given, relative ones under the repository."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p
