"""A data version: an immutable folder of validated rows plus its four manifests.

Layout of a version folder:
  data/                          the rows, written by `datasets.Dataset.save_to_disk` (Arrow files,
                                 memory-mapped on load; `load_version` reads them back)
  version.json                   format, schema, num_rows, content_hash, parents, created, columns
  manifests/source.json          {"sources": [...]}
  manifests/processing.json      {"steps": [...]}        (counts balance, see manifests.py)
  manifests/consumption.json     {"records": [...]}      (appended by record_consumption)
  manifests/evaluation_isolation.json

The content hash is the SHA-256 of the sorted per-row SHA-256 digests of the rows' canonical
JSON, so it names the set of rows whatever their order (training shuffles anyway).

A version is built in a temporary sibling folder and renamed into place, so an interrupted write
never leaves a half-written version where a later stage would read it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, load_from_disk

from ..io import atomic_write_json, read_json
from .manifests import MANIFEST_NAMES, ManifestError, check_source, check_step, isolation_manifest, now_iso
from .schema import FEATURES, SchemaError, canonical_json, check_schema, validate_rows

VERSION_FORMAT = "nebula-data-version/1"


@dataclass(frozen=True)
class VersionInfo:
    path: Path
    schema: str
    num_rows: int
    content_hash: str
    parents: list[str] = field(default_factory=list)
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"path": str(self.path)}


def content_hash(ds: Dataset) -> str:
    """SHA-256 over the rows in canonical order (rows sorted by their own digest)."""
    digests = sorted(hashlib.sha256(canonical_json(row).encode("utf-8")).hexdigest() for row in ds)
    return hashlib.sha256("\n".join(digests).encode("ascii")).hexdigest()


def _cast_to_schema(ds: Dataset, schema: str) -> Dataset:
    """Give the schema's columns their declared Arrow types (extra columns are kept as they are)."""
    missing = [k for k in FEATURES[schema] if k not in ds.column_names]
    if missing:
        raise SchemaError(f"{schema} dataset lacks column(s) {', '.join(missing)}")
    target = ds.features.copy()
    target.update({k: v for k, v in FEATURES[schema].items()})
    if target == ds.features:
        return ds
    try:
        return ds.cast(target)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"{schema} dataset columns do not fit the schema types: {exc}") from None


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not (out_dir / "version.json").is_file() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir}: exists, is not empty and is not a data version; refusing to replace it")


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Swap the finished temp folder into place (two renames; the old one is removed last)."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        os.replace(out_dir, old / "v")
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _previous_consumption(out_dir: Path, digest: str) -> list[dict]:
    """Keep who read a version when it is rewritten with the very same rows."""
    try:
        if read_json(out_dir / "version.json").get("content_hash") == digest:
            return read_json(out_dir / "manifests" / "consumption.json").get("records", [])
    except (OSError, ValueError):
        pass
    return []


def save_version(
    ds: Dataset,
    out_dir: str | os.PathLike,
    schema: str,
    source: dict | list[dict],
    processing_steps: list[dict],
    parents: list[str] = [],  # noqa: B006 (never mutated)
    isolation: dict | None = None,
) -> VersionInfo:
    """Validate `ds` against `schema` and write it as a data version folder at `out_dir`.

    `processing_steps` must be non-empty, each must balance, and the last one's count_out must
    equal the number of rows. Raises SchemaError / ManifestError before anything is written.
    """
    check_schema(schema)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    ds = _cast_to_schema(ds, schema)
    validate_rows(schema, ds)
    sources = [check_source(s) for s in ([source] if isinstance(source, Mapping) else source)]
    if not processing_steps:
        raise ManifestError("a data version needs at least one processing step")
    steps = [check_step(s) for s in processing_steps]
    if steps[-1]["count_out"] != len(ds):
        raise ManifestError(
            f"last processing step {steps[-1]['name']!r} keeps {steps[-1]['count_out']} rows but the dataset has {len(ds)}"
        )
    digest = content_hash(ds)
    info = VersionInfo(out_dir, schema, len(ds), digest, list(parents), now_iso())
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        with _quiet():
            # num_shards=1 for empty versions: datasets 5.2 writes no shard for 0 rows and then
            # cannot load the folder back (IndexError in concat_tables); one empty shard loads.
            ds.save_to_disk(str(tmp / "data"), num_shards=1 if len(ds) == 0 else None)
        manifests = {
            "source": {"sources": sources},
            "processing": {"steps": steps},
            "consumption": {"records": _previous_consumption(out_dir, digest)},
            "evaluation_isolation": isolation if isolation is not None else isolation_manifest(),
        }
        for name, doc in manifests.items():
            atomic_write_json(tmp / "manifests" / f"{name}.json", {"content_hash": digest} | doc)
        version = info.to_dict() | {
            "format": VERSION_FORMAT,
            "columns": ds.column_names,
            "storage": "datasets.Dataset.save_to_disk",
        }
        version.pop("path")
        atomic_write_json(tmp / "version.json", version)
        _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def _version_json(path: Path) -> dict[str, Any]:
    marker = path / "version.json"
    if not marker.is_file():
        raise FileNotFoundError(f"{path}: not a data version (no version.json)")
    doc = read_json(marker)
    if doc.get("format") != VERSION_FORMAT:
        raise ValueError(f"{marker}: unknown format {doc.get('format')!r} (expected {VERSION_FORMAT})")
    return doc


def version_info(path: str | os.PathLike) -> VersionInfo:
    path = Path(path)
    doc = _version_json(path)
    return VersionInfo(path, doc["schema"], doc["num_rows"], doc["content_hash"], doc["parents"], doc["created"])


def load_version(path: str | os.PathLike, verify: bool = False) -> Dataset:
    """The rows of a data version; `verify=True` recomputes the content hash and compares."""
    path = Path(path)
    doc = _version_json(path)
    ds = load_from_disk(str(path / "data"))
    if verify and content_hash(ds) != doc["content_hash"]:
        raise ValueError(f"{path}: rows do not match the content hash in version.json")
    return ds


def read_manifests(path: str | os.PathLike) -> dict[str, Any]:
    """{'version': version.json, 'source': ..., 'processing': ..., 'consumption': ..., 'evaluation_isolation': ...}"""
    path = Path(path)
    out = {"version": _version_json(path)}
    for name in MANIFEST_NAMES:
        out[name] = read_json(path / "manifests" / f"{name}.json")
    return out


@contextmanager
def _quiet() -> Iterator[None]:
    """No per-shard progress bars in notebooks for a write that takes milliseconds."""
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Two runs may start from the same version at once; the lock serialises read-modify-write.
    with open(path / "manifests" / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def record_consumption(path: str | os.PathLike, run_id: str, stage: str) -> None:
    """Append {run_id, stage, time} to the consumption manifest, once per run id."""
    path = Path(path)
    _version_json(path)
    target = path / "manifests" / "consumption.json"
    with _locked(path):
        doc = read_json(target)
        if any(r["run_id"] == run_id for r in doc["records"]):
            return
        doc["records"].append({"run_id": run_id, "stage": stage, "time": now_iso()})
        atomic_write_json(target, doc)


def inherited_isolation(parent: Mapping[str, Any], notes: Sequence[str] = ()) -> dict[str, Any]:
    """A child version's isolation manifest: the parent's record (which benchmarks its rows were
    checked against, with hits) plus `inherited_from` = the parent's content hash and any new
    notes. Rows derived from checked rows stay checked; new text (synthesized prompts, teacher
    answers) says so in `notes` until a decontamination step checks it again."""
    isolation = {k: v for k, v in parent["evaluation_isolation"].items() if k != "content_hash"}
    isolation["inherited_from"] = parent["version"]["content_hash"]
    if notes:
        isolation["notes"] = list(isolation.get("notes", [])) + list(notes)
    return isolation


def derive_version(
    parent: str | os.PathLike,
    ds: Dataset,
    out_dir: str | os.PathLike,
    step: dict,
    isolation: dict | None = None,
    schema: str | None = None,
) -> VersionInfo:
    """Write `ds` as a child of the version at `parent`, with one more processing step.

    The step must start from the parent's rows (count_in = parent rows) and keep `len(ds)`; the
    source manifest is inherited, and so is the isolation manifest unless a new one is given.
    """
    parent = Path(parent)
    manifests = read_manifests(parent)
    step = check_step(step)
    if step["count_in"] != manifests["version"]["num_rows"]:
        raise ManifestError(
            f"step {step['name']!r} reads {step['count_in']} rows but parent {parent} has {manifests['version']['num_rows']}"
        )
    if isolation is None:
        isolation = inherited_isolation(manifests)
    return save_version(
        ds,
        out_dir,
        schema or manifests["version"]["schema"],
        manifests["source"]["sources"],
        manifests["processing"]["steps"] + [step],
        parents=[manifests["version"]["content_hash"]],
        isolation=isolation,
    )


# The name the data-curation brief uses for the same operation.
append_processing_step = derive_version
