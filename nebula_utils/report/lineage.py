"""Lineage of a run: which checkpoints, training runs and data versions produced it.

Walks from a run folder through every config value that names a path: a folder inside another
run's folder (e.g. `<20_sft run>/model`, an eval's `model`) is that run's output, so the walk
continues into that run; a folder with version.json is a data version, listed with its four
manifests, the run that wrote it and its parent versions (found by content hash under the same
results root). run.json's optional `parent_run` (a run id or a path) is followed too.
A node is a dict {kind: run | checkpoint | output | file | model | missing | data_version,
key: the config key or relation that led to it, path, inputs: [child nodes], ...}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..data.manifests import MANIFEST_NAMES
from ..io import read_json


def owning_run(path: Path) -> Path | None:
    """The run folder a path lies in (the nearest ancestor, or itself, holding run.json + config.yaml)."""
    for candidate in [path, *path.parents]:
        if (candidate / "run.json").is_file() and (candidate / "config.yaml").is_file():
            return candidate
    return None


def _path_values(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for key, value in config.items():
        if key in ("run_dir", "run_id"):
            continue
        if isinstance(value, Mapping):  # e.g. 51_mopd's teachers: {task: checkpoint}
            pairs = [(f"{key}.{k}", v) for k, v in value.items()]
        else:
            pairs = [(key, v) for v in (value if isinstance(value, list) else [value])]
        for name, v in pairs:
            if isinstance(v, str) and ("/" in v or v.startswith(".")) and Path(v).exists():
                out.append((name, v))
    return out


class _VersionIndex:
    """content hash -> data version folder under a results root, built on first use."""

    def __init__(self, root: Path):
        self.root, self._index = root, None

    def find(self, digest: str) -> Path | None:
        if self._index is None:
            self._index = {}
            for marker in self.root.glob("*/*/*/version.json"):  # results/<pipeline>/<run>/<version>
                try:
                    self._index[read_json(marker)["content_hash"]] = marker.parent
                except (ValueError, KeyError):
                    continue
        return self._index.get(digest)


def read_manifests(path: Path) -> dict[str, Any]:
    """version.json and the four manifests of a data version, as data.versions.read_manifests
    returns them; read here as plain JSON so a report never imports `datasets` (2 s, and tqdm
    warnings in the rendered page)."""
    out = {"version": read_json(path / "version.json")}
    for name in MANIFEST_NAMES:
        out[name] = read_json(path / "manifests" / f"{name}.json")
    return out


def _data_version_node(path: Path, index: _VersionIndex, seen: set, depth: int) -> dict[str, Any]:
    manifests = read_manifests(path)
    version = manifests["version"]
    node = {
        "kind": "data_version",
        "path": str(path),
        "content_hash": version["content_hash"],
        "num_rows": version["num_rows"],
        "schema": version.get("schema"),
        "manifests": manifests,
        "inputs": [],
    }
    producer = owning_run(path.parent)
    if producer is not None:
        node["inputs"].append(_walk(producer, index, seen, depth + 1, key="produced_by"))
    for digest in version.get("parents", []):
        parent = index.find(digest)
        node["inputs"].append(
            _data_version_node(parent, index, seen, depth + 1) | {"key": "parent"}
            if parent is not None
            else {"kind": "data_version", "key": "parent", "content_hash": digest, "path": None, "inputs": []}
        )
    return node


def _walk(run_dir: Path, index: _VersionIndex, seen: set, depth: int, key: str = "") -> dict[str, Any]:
    info = read_json(run_dir / "run.json")
    node = {
        "kind": "run",
        "key": key,
        "path": str(run_dir),
        "run_id": info.get("run_id", run_dir.name),
        "stage": info.get("stage", ""),
        "status": info.get("status"),
        "inputs": [],
        "has_train_log": (run_dir / "train_log.json").is_file(),
    }
    if str(run_dir) in seen or depth > 20:  # a run reached twice is listed, not walked again
        return node | {"repeated": True}
    seen.add(str(run_dir))
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    node["config_hash"] = info.get("config_hash", node["run_id"].rsplit("-", 1)[-1])
    model = config.get("model")
    if isinstance(model, str) and not Path(model).exists():  # a model spec, or a path gone since
        kind = "missing" if Path(model).is_absolute() else "model"
        node["inputs"].append({"kind": kind, "key": "model", "spec": model, "path": model, "inputs": []})
    for name, value in _path_values(config):
        target = Path(value).resolve()
        if (target / "version.json").is_file():
            node["inputs"].append(_data_version_node(target, index, seen, depth + 1) | {"key": name})
            continue
        producer = owning_run(target)
        if producer is None:  # e.g. a hand-made .jsonl: listed, nothing to walk into
            node["inputs"].append({"kind": "file", "key": name, "path": str(target), "inputs": []})
        elif producer != run_dir.resolve():
            node["inputs"].append(
                {
                    "kind": "checkpoint" if name == "model" else "output",
                    "key": name,
                    "path": str(target),
                    "inputs": [_walk(producer, index, seen, depth + 1, "produced_by")],
                }
            )
    parent = info.get("parent_run")  # optional in run.json: a run id (sibling folder) or a path
    if isinstance(parent, str) and parent:
        candidate = Path(parent) if Path(parent).is_absolute() else run_dir.parent / parent
        producer = owning_run(candidate.resolve()) if candidate.exists() else None
        if producer is not None and str(producer) not in seen:
            node["inputs"].append(_walk(producer, index, seen, depth + 1, key="parent_run"))
    return node


def lineage(run_dir: str | Path, results_root: str | Path | None = None) -> dict[str, Any]:
    """The tree of what produced a run: checkpoints -> training runs -> data versions (with their
    manifests, producing runs and parent versions). Parent versions are looked up by content hash
    under `results_root` (default: the run folder's grandparent)."""
    run_dir = Path(run_dir).resolve()
    root = Path(results_root) if results_root else run_dir.parent.parent
    return _walk(run_dir, _VersionIndex(root), set(), 0)


def iter_nodes(tree: Mapping[str, Any], depth: int = 0):
    yield depth, tree
    for child in tree.get("inputs", []):
        yield from iter_nodes(child, depth + 1)


def nearest_run(tree: Mapping[str, Any], stages: Sequence[str]) -> Path | None:
    """The nearest run of one of `stages` in a lineage (e.g. the 40_grpo run that trained an
    evaluated model); None when the lineage has none."""
    for _, node in iter_nodes(tree):
        if node["kind"] == "run" and node.get("stage") in stages:
            return Path(node["path"])
    return None


def data_version_label(tree: Mapping[str, Any]) -> str:
    """'<producing run>/<version folder>@<content hash 8>' of the nearest data version, or '—'."""
    for _, node in iter_nodes(tree):
        if node["kind"] == "data_version" and node.get("path"):
            p = Path(node["path"])
            return f"{p.parent.name}/{p.name}@{node['content_hash'][:8]}"
    return "—"


def _describe(node: Mapping[str, Any]) -> tuple[str, str]:
    kind = node["kind"]
    if kind == "run":
        return node["run_id"], f"stage {node['stage']}, {node.get('status')}" + (
            " (see above)" if node.get("repeated") else ""
        )
    if kind == "model":
        return node["spec"], "base model spec"
    if kind == "missing":
        return Path(node["path"]).name, f"{node['path']} no longer exists (results moved or deleted?)"
    if kind in ("checkpoint", "output", "file"):
        return Path(node["path"]).name, node["path"]
    if not node.get("path"):
        return node["content_hash"][:12], "parent version not found under this results root"
    m = node["manifests"]
    steps = m["processing"]["steps"]
    return (
        f"{Path(node['path']).parent.name}/{Path(node['path']).name}",
        f"{node['num_rows']} rows, hash {node['content_hash'][:8]}, sources: "
        f"{', '.join(s['name'] for s in m['source']['sources'])}; {len(steps)} processing steps; "
        f"read by {len(m['consumption']['records'])} run(s); isolation hits "
        f"{m['evaluation_isolation'].get('total_hits', '?')}",
    )


def lineage_table(tree: Mapping[str, Any]):
    """The lineage tree as rows (indented by depth) for display."""
    import pandas as pd

    rows = []
    for depth, node in iter_nodes(tree):
        name, detail = _describe(node)
        rows.append(
            {
                "node": "  " * depth + ("└ " if depth else "") + name,
                "kind": node["kind"],
                "via": node.get("key", ""),
                "detail": detail,
            }
        )
    return pd.DataFrame(rows, columns=["node", "kind", "via", "detail"])


def training_runs(tree: Mapping[str, Any]) -> list[Path]:
    """Run folders in the lineage that have a trainer log, nearest first (a chain SFT1 -> SFT2 gives both)."""
    return [Path(n["path"]) for _, n in iter_nodes(tree) if n["kind"] == "run" and n.get("has_train_log")]


def data_versions(trees: Sequence[Mapping[str, Any]], leaves_only: bool = False) -> list[dict[str, Any]]:
    """Distinct data versions (by content hash) across lineages, in first-seen order. `leaves_only`
    drops versions that are a parent of another one listed (its processing steps are the child's
    first steps, so the child's funnel already shows them)."""
    out: dict[str, dict] = {}
    for tree in trees:
        for _, n in iter_nodes(tree):
            if n["kind"] == "data_version" and n.get("path"):
                out.setdefault(n["content_hash"], n)
    parents = {p for n in out.values() for p in n["manifests"]["version"].get("parents", [])}
    return [n for h, n in out.items() if not (leaves_only and h in parents)]


# --------------------------------------------------------------------------- compact display


def short_path(path: str | Path | None, bases: Mapping[str, str | Path] | None = None) -> str:
    """`path` relative to the first of `bases` ({display prefix: folder}, in order) that holds it,
    e.g. {"": <repo>, "<results>/": <results root>} gives 'results/demo/20_sft-…/model' for a path
    in the repository; a path outside them all stays as given ('~' for the home folder)."""
    if not path:
        return ""
    p = Path(path)
    for prefix, base in (bases or {}).items():
        try:
            rel = p.resolve().relative_to(Path(base).resolve())
        except ValueError:
            continue
        return f"{prefix}{rel}" if str(rel) != "." else (prefix.rstrip("/") or ".")
    home = str(Path.home())
    return "~" + str(p)[len(home) :] if str(p).startswith(home + "/") else str(p)


def _version_name(node: Mapping[str, Any]) -> str:
    p = Path(node["path"])
    return f"{p.parent.name}/{p.name}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _version_line(node: Mapping[str, Any]) -> str:
    """'10_data_sft_mix-…/sft · 24 rows · #ea4e8771 · sources a, b · 4 steps · read by 2 runs · 0 isolation hits'."""
    if not node.get("path"):
        return f"version #{node['content_hash'][:8]} (not found under this results root)"
    m = node["manifests"]
    sources = sorted({s["name"] for s in m["source"]["sources"]})
    return (
        f"{_version_name(node)} · {_plural(node['num_rows'], 'row')} · #{node['content_hash'][:8]} · "
        f"sources {', '.join(sources) or '—'} · {_plural(len(m['processing']['steps']), 'step')} · "
        f"read by {_plural(len(m['consumption']['records']), 'run')} · "
        f"{_plural(m['evaluation_isolation'].get('total_hits', 0), 'isolation hit')}"
    )


def _producer(node: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return next((c for c in node.get("inputs", []) if c.get("key") == "produced_by"), None)


def _compact(node: Mapping[str, Any], bases: Mapping[str, str | Path] | None) -> tuple[str, str, list, Mapping | None]:
    """(identity, line, children, the run whose inputs the children are) of one display node. A
    checkpoint and the run that wrote it are one node, and so are a data version and its producing
    run (the version's name says which run): the run's own inputs become the node's children. A
    parent version the producing run already reads is not repeated (the run's input names it)."""
    kind, key = node["kind"], node.get("key") or ""
    via = f"{key}: " if key and key not in ("produced_by", "parent") else ("parent: " if key == "parent" else "")
    if kind == "run":
        return node["path"], f"{via}{node['run_id']} ({node['stage']})", list(node.get("inputs", [])), node
    if kind in ("checkpoint", "output"):
        run = _producer(node)
        what = "checkpoint" if kind == "checkpoint" else "output"
        line = f"{via}{short_path(node['path'], bases)} ({what} of {run['stage']})" if run else f"{via}{node['path']}"
        return node["path"], line, list(run.get("inputs", [])) if run else [], run
    if kind == "data_version":
        run = _producer(node)
        children = list(run.get("inputs", [])) if run else []
        read_by_run = {c.get("content_hash") for c in children if c["kind"] == "data_version"}
        if not (run and run.get("repeated")):  # a repeated run's inputs, these parents among them, came above
            children += [
                c for c in node.get("inputs", []) if c.get("key") == "parent" and c["content_hash"] not in read_by_run
            ]
        return node.get("path") or node["content_hash"], via + _version_line(node), children, run
    if kind == "model":
        return f"model:{node['spec']}", f"{via}{node['spec']} (base model)", [], None
    if kind == "missing":
        return node["path"], f"{via}{node['path']} — no longer exists (results moved or deleted?)", [], None
    return node.get("path") or "", f"{via}{short_path(node.get('path'), bases)}", [], None


def lineage_lines(tree: Mapping[str, Any], bases: Mapping[str, str | Path] | None = None) -> list[str]:
    """The lineage as a compact text tree ('├─ ', '└─ '): each run, checkpoint and data version once.
    A node reached again (a diamond: a data run whose two versions both feed the chain) is one line,
    marked '↑ above' (and '↑ inputs of <run> above' when only its run was listed before)."""
    lines: list[str] = []
    seen: set[str] = set()
    has_inputs: dict[str, bool] = {}  # run folder -> whether its inputs were listed where it first appeared

    def walk(node: Mapping[str, Any], prefix: str, branch: str) -> None:
        ident, line, children, run = _compact(node, bases)
        note = ""
        if run is not None and run.get("repeated"):
            children = []
            note = f"  ↑ inputs of {run['run_id']} above" if has_inputs.get(run["path"]) else ""
        elif run is not None:
            has_inputs[run["path"]] = bool(run.get("inputs"))
        again = ident in seen and (children or node["kind"] in ("run", "data_version"))
        lines.append(f"{prefix}{branch}{line}" + ("  ↑ above" if again else note))
        if again:
            return
        seen.add(ident)
        inner = prefix + ("   " if branch == "└─ " else "│  " if branch else "")
        for i, child in enumerate(children):
            walk(child, inner, "└─ " if i == len(children) - 1 else "├─ ")

    walk(tree, "", "")
    return lines


def lineage_chain(tree: Mapping[str, Any], bases: Mapping[str, str | Path] | None = None) -> str:
    """One line: the run ← the training run of its checkpoint [its data] ← ... ← the base model spec."""
    parts = [tree.get("run_id", "")]
    node = next((c for c in tree.get("inputs", []) if c.get("key") == "model"), None)
    while node is not None:
        if node["kind"] != "checkpoint":
            parts.append(node.get("spec") or short_path(node.get("path"), bases))
            break
        run = _producer(node) or {}
        data = [c for c in run.get("inputs", []) if c["kind"] == "data_version" and c.get("path")]
        on = f" [{', '.join(_version_name(d) for d in data)}]" if data else ""
        parts.append(f"{run.get('run_id') or short_path(node['path'], bases)}{on}")
        node = next((c for c in run.get("inputs", []) if c.get("key") == "model"), None)
    return " ← ".join(p for p in parts if p)
