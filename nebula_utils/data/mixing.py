"""Mixing: named parts + per-part quotas -> one shuffled dataset, with a change log.

A mix (an SFT curriculum stage such as `base`, `complex` or `patch`, or an RL prompt pool) is
built from parts of one schema. Each part contributes up to its quota, sampled without
replacement with the mix seed; rows left out are counted as `over_quota:<part>`, so the mix step
balances like every processing step. Passing the previous mix step (from the manifest of the
version this one replaces) records a change log: per part and per task, the counts before and
after, and the reason given.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, concatenate_datasets

from .complexity import COMPLEXITY
from .manifests import processing_step
from .schema import FEATURES, check_schema

UNLABELLED = "unlabelled"  # difficulty of rows that 13_difficulty has not graded


def _part_rows(part: Dataset, quota: int | None, seed: int) -> Dataset:
    if quota is None or quota >= len(part):
        return part
    if quota < 0:
        raise ValueError(f"quota must be >= 0, got {quota}")
    return part.shuffle(seed=seed).select(range(quota))


def build_mix(
    parts: Mapping[str, Dataset],
    schema: str,
    seed: int,
    quotas: Mapping[str, int | None] | None = None,
    name: str = "mix",
    previous: Mapping[str, Any] | None = None,
    reason: str = "",
) -> tuple[Dataset, dict]:
    """Concatenate `parts` (each capped at quotas[part]; missing or None = all) and shuffle.

    Returns the mix and its processing step; the step's params hold the quotas, the counts per
    part and per task, and (with `previous`, a step returned by an earlier build_mix) the change log.
    """
    check_schema(schema)
    unknown = set(quotas or {}) - set(parts)
    if unknown:
        raise ValueError(f"quotas name unknown part(s): {', '.join(sorted(unknown))}")
    columns = list(FEATURES[schema])
    taken, per_part, drops = [], {}, Counter()
    for offset, (part_name, part) in enumerate(sorted(parts.items())):
        part = part.select_columns(columns)
        if part.features != FEATURES[schema]:
            part = part.cast(FEATURES[schema])
        rows = _part_rows(part, (quotas or {}).get(part_name), seed + offset)
        per_part[part_name] = len(rows)
        if len(part) > len(rows):
            drops[f"over_quota:{part_name}"] = len(part) - len(rows)
        taken.append(rows)
    mix = (
        concatenate_datasets(taken).shuffle(seed=seed)
        if taken
        else Dataset.from_dict({c: [] for c in columns}, features=FEATURES[schema])
    )
    counts = {"parts": per_part, "tasks": dict(sorted(Counter(mix["task"]).items()))}
    params = {"seed": seed, "quotas": dict(quotas or {}), "counts": counts}
    if previous is not None:
        params["changelog"] = mix_changelog(previous["params"]["counts"], counts, reason)
    step = processing_step(
        f"mix:{name}",
        count_in=sum(len(p) for p in parts.values()),
        count_out=len(mix),
        params=params,
        drop_reasons=drops,
    )
    return mix, step


def mix_changelog(
    before: Mapping[str, Mapping[str, int]], after: Mapping[str, Mapping[str, int]], reason: str = ""
) -> dict[str, Any]:
    """Per part and per task: {key: {"before": n, "after": m}} for every count that changed."""
    changes = {}
    for group in ("parts", "tasks"):
        keys = sorted(set(before.get(group, {})) | set(after.get(group, {})))
        changes[group] = {
            k: {"before": before.get(group, {}).get(k, 0), "after": after.get(group, {}).get(k, 0)}
            for k in keys
            if before.get(group, {}).get(k, 0) != after.get(group, {}).get(k, 0)
        }
    return {"reason": reason, "changes": changes}


def select_subset(ds: Dataset, max_rows: int, seed: int) -> tuple[Dataset, dict]:
    """A seeded random subset of at most `max_rows` rows (0 = all) and its balanced `select` step."""
    n_in = len(ds)
    if max_rows and n_in > max_rows:
        ds = ds.shuffle(seed=seed).select(range(max_rows))
    step = processing_step(
        "select",
        count_in=n_in,
        count_out=len(ds),
        params={"max_prompts": max_rows, "seed": seed},
        drop_reasons={"not_selected": n_in - len(ds)} if n_in > len(ds) else {},
    )
    return ds, step


def select_from_version(
    path: Any, max_rows: int, seed: int, schemas: tuple[str, ...] = ()
) -> tuple[Dataset, dict, dict]:
    """(rows, the version's manifests, the balanced `select` step): a seeded subset of at most
    `max_rows` rows (0 = all) of a data version, whose schema must be one of `schemas` if given."""
    from .versions import load_version, read_manifests

    manifests = read_manifests(path)
    schema = manifests["version"]["schema"]
    if schemas and schema not in schemas:
        raise ValueError(f"{path}: expected a {' or '.join(schemas)} data version, got {schema}")
    ds, step = select_subset(load_version(path), max_rows, seed)
    return ds, manifests, step


def source_isolation(ds: Any) -> dict[str, Any]:
    """Lineage check against the HumanEval eval split; rows of a benchmark-derived source are hits."""
    from .manifests import isolation_manifest, lineage_isolation
    from .sources import BENCHMARK_DERIVED, humaneval_split_ids

    hits = lineage_isolation(ds, {"humaneval/eval-split": humaneval_split_ids("eval")})
    per_source = Counter(ds["source"])
    hits += [
        {"name": bench, "hits": per_source[src], "match": f"source {src} is derived from it"}
        for src, bench in BENCHMARK_DERIVED.items()
        if per_source[src]
    ]
    return isolation_manifest(
        hits,
        method="exact id/lineage match and benchmark-derived sources",
        notes=["text-overlap decontamination against benchmarks is a separate step"],
    )


def write_mixed_version(parts: dict[str, Any], schema: str, out_dir: Path, seed: int, name: str) -> Any:
    """Mix the parts, check isolation and write the data version; returns its VersionInfo."""
    from .versions import save_version

    mix, mix_step = build_mix({k: p.dataset for k, p in parts.items()}, schema, seed, name=name)
    sources = [p.source | {"part": k} for k, p in parts.items()]
    steps = [p.step | {"part": k} for k, p in parts.items()] + [mix_step]
    return save_version(mix, out_dir, schema, sources, steps, isolation=source_isolation(mix))


def eligible_rows(
    ds: Any,
    tasks: list[str],
    difficulties: list[str],
    taken: set[str],
    complex_rows: Sequence[bool] | None = None,
    complexity: str = "any",
) -> tuple[list[int], dict[str, int]]:
    """Indices of rows a mix may take, and the reasons the others were left out (the last failing
    check wins: taken > task > complexity > difficulty). `complex_rows` (one flag per row, see
    complexity_reason) with `complexity` "complex" or "simple" keeps only rows of that kind."""
    import pandas as pd

    frame = pd.DataFrame(
        {"id": ds["id"], "task": ds["task"], "difficulty": [d or UNLABELLED for d in ds["difficulty"]]}
    )
    if complexity not in COMPLEXITY:
        raise ValueError(f"complexity must be one of {', '.join(COMPLEXITY)}, got {complexity!r}")
    hard = pd.Series(list(complex_rows) if complex_rows is not None else [False] * len(frame), index=frame.index)
    reasons = pd.Series("", index=frame.index)
    checks = [
        ("difficulty_not_in_mix", ~frame["difficulty"].isin(difficulties) if difficulties else None),
        ("not_complex", ~hard if complexity == "complex" else None),
        ("complex", hard if complexity == "simple" else None),
        ("task_not_in_mix", ~frame["task"].isin(tasks) if tasks else None),
        ("taken_by_earlier_mix", frame["id"].isin(taken)),
    ]
    for reason, mask in checks:  # later checks overwrite: taken > task > complexity > difficulty
        if mask is not None:
            reasons[mask] = reason
    drops = reasons[reasons != ""].value_counts().to_dict()
    return frame.index[reasons == ""].tolist(), {k: int(v) for k, v in drops.items()}


def per_task_parts(ds: Any, size: int) -> tuple[dict[str, Any], dict[str, int]]:
    """Split by task with equal quotas summing to at most `size` (0 = take everything).

    Quotas are filled level by level: a task with fewer rows than its equal share gives the rest
    to the other tasks, so the mix reaches `size` when the rows exist (16 rows of code and 60 of
    math for a 40-row mix: 16 + 24, not 16 + 20)."""
    tasks = sorted(set(ds["task"]))
    parts = {t: ds.filter(lambda r, t=t: r["task"] == t) for t in tasks}
    if not size or not tasks:
        return parts, {}
    quotas = {t: 0 for t in tasks}
    open_tasks, left = list(tasks), size
    while left > 0 and open_tasks:
        share = max(1, left // len(open_tasks))
        for t in list(open_tasks):
            take = min(share, len(parts[t]) - quotas[t], left)
            quotas[t] += take
            left -= take
            if quotas[t] >= len(parts[t]):
                open_tasks.remove(t)
            if left == 0:
                break
    return parts, quotas
