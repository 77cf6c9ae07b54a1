"""The four manifests of a data version: source, processing, consumption, evaluation isolation.

- source: where the rows came from, one entry per source (name, path or Hub id, revision,
  licence, retrieval time, filters applied while reading).
- processing: the ordered steps that produced the rows; each step has its params and the counts
  in/out with drop reasons, which must balance: count_in = count_out + filtered + quarantined and
  the drop reasons add up to filtered + quarantined.
- consumption: one record per training run that read the version (run id, stage, time).
- evaluation isolation: the benchmark quarantine the rows were checked against, with hit counts.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

MANIFEST_NAMES = ("source", "processing", "consumption", "evaluation_isolation")


class ManifestError(ValueError):
    """A manifest entry is incomplete or its counts do not balance."""


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def source_entry(
    name: str,
    *,
    path: str = "",
    revision: str | None = None,
    license: str = "unknown",
    filters: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One source: `path` is a file, a package resource or a Hub id; `revision` pins it."""
    return {
        "name": name,
        "path": str(path),
        "revision": revision,
        "license": license,
        "retrieved": now_iso(),
        "filters": dict(filters or {}),
    } | extra


def check_source(entry: Mapping[str, Any]) -> dict[str, Any]:
    missing = [k for k in ("name", "path", "license") if k not in entry]
    if missing:
        raise ManifestError(f"source entry {dict(entry)!r} lacks {', '.join(missing)}")
    return {"revision": None, "retrieved": now_iso(), "filters": {}} | dict(entry)


def processing_step(
    name: str,
    *,
    count_in: int,
    count_out: int,
    params: Mapping[str, Any] | None = None,
    drop_reasons: Mapping[str, int] | None = None,
    quarantined: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """A checked processing step; rows neither kept nor quarantined count as filtered."""
    step = {
        "name": name,
        "params": dict(params or {}),
        "count_in": int(count_in),
        "count_out": int(count_out),
        "filtered": int(count_in) - int(count_out) - int(quarantined),
        "quarantined": int(quarantined),
        "drop_reasons": dict(sorted(Counter(drop_reasons or {}).items())),
        "time": now_iso(),
    } | extra
    return check_step(step)


def check_step(step: Mapping[str, Any]) -> dict[str, Any]:
    """Raise ManifestError unless in = out + filtered + quarantined = out + sum(drop reasons)."""
    missing = [
        k for k in ("name", "count_in", "count_out", "filtered", "quarantined", "drop_reasons") if k not in step
    ]
    if missing:
        raise ManifestError(f"processing step {step.get('name')!r} lacks {', '.join(missing)}")
    n_in, n_out, filt, quar = (int(step[k]) for k in ("count_in", "count_out", "filtered", "quarantined"))
    dropped = sum(int(v) for v in step["drop_reasons"].values())
    if min(n_in, n_out, filt, quar) < 0 or n_in != n_out + filt + quar or dropped != filt + quar:
        raise ManifestError(
            f"processing step {step['name']!r} does not balance: in={n_in} out={n_out} "
            f"filtered={filt} quarantined={quar} drop_reasons sum={dropped}"
        )
    return {"params": {}} | dict(step)


def isolation_manifest(
    benchmarks: Iterable[Mapping[str, Any]] = (), *, method: str = "", notes: Iterable[str] = ()
) -> dict[str, Any]:
    """Which benchmarks the rows were checked against (each {name, hits, ...}); unchecked if none."""
    checked = []
    for bench in benchmarks:
        if "name" not in bench or "hits" not in bench:
            raise ManifestError(f"isolation entry {dict(bench)!r} needs 'name' and 'hits'")
        checked.append(dict(bench) | {"hits": int(bench["hits"])})
    return {
        "checked": bool(checked),
        "method": method,
        "benchmarks": checked,
        "total_hits": sum(b["hits"] for b in checked),
        "notes": list(notes),
        "time": now_iso(),
    }


def lineage_isolation(rows: Iterable[Mapping[str, Any]], held_out: Mapping[str, Iterable[str]]) -> list[dict]:
    """Hit counts of rows whose id or lineage parents name a held-out benchmark item.

    `held_out` maps a benchmark name to its item ids (e.g. the HumanEval task ids kept for
    evaluation). This is an exact check by construction, not a text-overlap decontamination.
    """
    sets = {name: set(ids) for name, ids in held_out.items()}
    hits = Counter()
    for row in rows:
        keys = {row["id"], *row.get("parents", [])}
        for name, ids in sets.items():
            hits[name] += bool(keys & ids)
    return [
        {"name": name, "hits": hits[name], "n_items": len(ids), "match": "id/parent"} for name, ids in sets.items()
    ]
