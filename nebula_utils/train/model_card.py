"""The README.md model card of a saved checkpoint: where the weights came from and how.

Every trainer that writes <run_dir>/model calls `model_card(...)` and saves the text with the
weights (train.saving.save_trained(..., card=...)), so a checkpoint copied out of its run folder
still names its parent checkpoint (and the run that trained the parent), the data versions it was
trained on with their content hashes, the resolved params, the run id and the training metrics.
The YAML front matter is Hugging Face's model-card metadata plus a `nebula` block for programs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..io import read_json

# Config keys that name the checkpoint a trainer starts from, and other models it reads.
PARENT_KEY = "model"
_SKIP = ("run_dir", "run_id")


def _run_id_of(folder: Path) -> str | None:
    from ..report.lineage import owning_run

    owner = owning_run(folder)
    if owner is None:
        return None
    return read_json(owner / "run.json").get("run_id", owner.name)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _values(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, value) for every non-empty string a config holds, lists and mappings opened."""
    out = []
    for key, value in config.items():
        if key in _SKIP:
            continue
        if isinstance(value, Mapping):  # e.g. 51_mopd's teachers: {task: checkpoint}
            pairs = [(f"{key}.{k}", v) for k, v in value.items()]
        else:
            pairs = [(key, v) for v in (value if isinstance(value, list) else [value])]
        out += [(k, v) for k, v in pairs if isinstance(v, str) and v]
    return out


def data_sources(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every data version folder (content hash from its version.json) or data file (sha256 of its
    bytes) a config value names."""
    from ..data.versions import version_info

    out = []
    for key, value in _values(config):
        path = Path(value)
        if (path / "version.json").is_file():
            info = version_info(path)
            out.append(
                {
                    "key": key,
                    "path": str(path),
                    "schema": info.schema,
                    "rows": info.num_rows,
                    "content_hash": info.content_hash,
                    "run_id": _run_id_of(path),
                }
            )
        elif path.is_file() and path.suffix in {".jsonl", ".json", ".parquet", ".csv"}:
            out.append({"key": key, "path": str(path), "file_sha256": _file_sha256(path), "run_id": _run_id_of(path)})
    return out


def model_source(spec: str) -> dict[str, Any]:
    """A model spec as the card records it: the spec, and for a folder its path and owning run."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return {"spec": spec, "path": str(path.resolve()), "run_id": _run_id_of(path.resolve())}
    return {"spec": spec, "run_id": None}


def model_card(
    config: Mapping[str, Any],
    run_id: str,
    stage: str,
    metrics: Mapping[str, Any] | None = None,
    trainer: str = "",
) -> str:
    """The card's text. `config`: the resolved params (StageConfig.to_dict()); `metrics`: the
    epilogue's {name: {value, n}} or plain numbers."""
    parent = model_source(str(config.get(PARENT_KEY, "")))
    others = [
        {"key": k} | model_source(v)
        for k, v in _values(config)
        if k != PARENT_KEY and Path(v).is_dir() and (Path(v) / "config.json").is_file()
    ]
    data = data_sources(config)
    flat = {k: (v.get("value") if isinstance(v, Mapping) else v) for k, v in (metrics or {}).items()}
    meta = {
        "library_name": "transformers",
        "tags": ["nebula", stage] + ([trainer] if trainer else []),
        "nebula": {"run_id": run_id, "stage": stage, "parent": parent, "other_models": others, "data": data},
    }
    if not Path(parent["spec"]).expanduser().is_dir() and "/" in parent["spec"] and ":" not in parent["spec"]:
        meta["base_model"] = parent["spec"]  # a Hub id: Hugging Face links the card to it
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# {run_id}",
        "",
        f"Trained by NebulaExp Workbench stage `{stage}`{f' ({trainer})' if trainer else ''}, run `{run_id}`.",
        "",
        "## Parent checkpoint",
        "",
        f"- `{parent['spec']}`" + (f", trained by run `{parent['run_id']}`" if parent["run_id"] else ""),
        *(f"- {m['key']}: `{m['spec']}`" + (f" (run `{m['run_id']}`)" if m["run_id"] else "") for m in others),
        "",
        "## Training data",
        "",
        *(_data_line(d) for d in data),
        *(["- (no data version or data file named in the params)"] if not data else []),
        "",
        "## Training metrics",
        "",
        "| metric | value |",
        "| --- | --- |",
        *(f"| {k} | {_fmt(v)} |" for k, v in flat.items() if not isinstance(v, Mapping)),
        "",
        "## Resolved params",
        "",
        "```yaml",
        yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _data_line(d: Mapping[str, Any]) -> str:
    run = f", written by run `{d['run_id']}`" if d.get("run_id") else ""
    if "content_hash" in d:
        return (
            f"- {d['key']}: `{d['path']}` ({d['schema']}, {d['rows']} rows, content hash `{d['content_hash']}`{run})"
        )
    return f"- {d['key']}: `{d['path']}` (file sha256 `{d['file_sha256']}`{run})"


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def run_info(run_dir: str | Path, config: Mapping[str, Any], stage: str) -> tuple[str, str]:
    """(run id, stage) for a card: run.json's (start_run writes it before training), else the
    config's run id or the folder's name, and the caller's stage."""
    marker = Path(run_dir) / "run.json"
    info = read_json(marker) if marker.is_file() else {}
    return info.get("run_id") or config.get("run_id") or Path(run_dir).name, info.get("stage") or stage


def card_for(cfg: Any, run_dir: str | Path, stage: str, metrics: Mapping[str, Any] | None, trainer: str = "") -> str:
    """model_card for a stage config object (anything with to_dict()) trained in `run_dir`."""
    config = cfg.to_dict()
    run_id, stage = run_info(run_dir, config, stage)
    return model_card(config, run_id, stage, metrics, trainer)
