"""Stage 16_curriculum: the SFT curriculum mixes and the RL pool from curated data versions.

NebulaExp's Instruct branch trains three SFT stages in a row (a broad base mix, a complex mix of
harder instruction-following / code / math, and a small patch mix aimed at weak spots); its
Reasoning branch trains GRPO on medium-difficulty prompts. This stage cuts those mixes out of a
curated SFT version and an RL version (graded by 13_difficulty), each as its own data version
whose processing manifest ends with two steps:

  select:<mix>   which rows the mix may take (task, difficulty, not taken by an earlier mix),
                 with the rows left out counted by reason, so the step balances;
  mix:<mix>      data.mixing.build_mix with equal per-task quotas; from the second mix on it
                 carries a change log against the previous mix (counts per task before/after).

Mixes are disjoint by default (`exclusive`): a sample is trained on in one curriculum stage only.
A mix may ask for complex rows only (`mix_complexity`): the hard and multi-constraint rows of every
capability (data.complexity.complexity_reason: several IF instructions, multi-statement code,
multi-step math, a `hard` difficulty label). Such mixes choose first, so the base mix cannot use up the complex rows, and
their per-task quotas keep every capability in (the demo's complex mix was once 55 rows of math).
The patch mix of the third SFT stage is built from measured weaknesses by 17_patch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from ..config import ConfigError, StageConfig, doc


@dataclasses.dataclass
class CurriculumConfig(StageConfig):
    upstream: ClassVar[dict[str, str]] = {"data": "15_decontam/data"}
    builtin_inputs: ClassVar[dict[str, str]] = {"data": "sft"}

    data: str = doc('curated SFT data version; "" = the newest 15_decontam/data under results/')
    rl_data: str = doc('RL data version graded by 13_difficulty (e.g. "@13_difficulty/graded"); "" = no RL pool')
    mixes: list[str] = doc(
        "curriculum order, one SFT stage per mix (the paper: base, complex, patch; here 17_patch builds the patch)"
    )
    mix_tasks: dict[str, list[str]] = doc("mix -> allowed tasks ([] = every task)")
    mix_difficulties: dict[str, list[str]] = doc("mix -> allowed difficulty labels ([] = any, unlabelled included)")
    mix_shares: dict[str, float] = doc("mix -> target size as a share of the input rows")
    mix_complexity: dict[str, str] = doc(
        "mix -> any | complex | simple (rows data.complexity.complexity_reason calls complex or not); "
        "complex mixes choose first; a mix left out = any"
    )
    min_if_instructions: int = doc("an instruction-following row is complex with at least this many instructions")
    min_math_steps: int = doc("a math row is complex with at least this many computation lines in its answer")
    min_code_statements: int = doc(
        "a code row is complex with at least this many statements in its solution (headers, imports, docstrings aside)"
    )
    exclusive: bool = doc("a row goes to at most one mix (each sample trains in one curriculum stage)")
    rl_difficulties: list[str] = doc("difficulty labels kept in the RL pool ([] = all; the paper: medium)")
    rl_size: int = doc("RL pool size with equal per-task quotas; 0 = every selected prompt")

    def check(self) -> None:
        for name, table in (
            ("mix_tasks", self.mix_tasks),
            ("mix_difficulties", self.mix_difficulties),
            ("mix_shares", self.mix_shares),
        ):
            missing = [m for m in self.mixes if m not in table]
            extra = [m for m in table if m not in self.mixes]
            if missing or extra:
                raise ConfigError(
                    f"key '{name}': every mix in `mixes` needs an entry and no other "
                    f"(missing {missing}, unknown {extra})"
                )
        from ..data.complexity import COMPLEXITY

        unknown = [m for m in self.mix_complexity if m not in self.mixes]
        wrong = {m: c for m, c in self.mix_complexity.items() if c not in COMPLEXITY}
        if unknown or wrong:
            raise ConfigError(
                f"key 'mix_complexity': mixes must be in `mixes` and values one of {', '.join(COMPLEXITY)} "
                f"(unknown mixes {unknown}, bad values {wrong})"
            )
        self.at_least("min_if_instructions", 1)
        self.at_least("min_math_steps", 1)
        self.at_least("min_code_statements", 1)
        bad = {m: s for m, s in self.mix_shares.items() if not 0.0 <= s <= 1.0}
        if bad or sum(self.mix_shares.values()) > 1.0 + 1e-9:
            raise ConfigError(f"key 'mix_shares': shares must be in [0, 1] and sum to <= 1, got {self.mix_shares}")
        self.at_least("rl_size", 0)


def complexity_of(cfg: CurriculumConfig, ds: Any) -> list[str]:
    """Per row, why it is complex ("" = not complex)."""
    from ..data.complexity import complexity_reason

    return [complexity_reason(row, cfg.min_if_instructions, cfg.min_math_steps, cfg.min_code_statements) for row in ds]


def complexity_table(cfg: CurriculumConfig) -> Any:
    """Rows per task (rows) and kind of complexity (columns: code, if_instructions, math_steps,
    difficulty, or simple) of the input version."""
    import pandas as pd

    from ..data.versions import load_version

    ds = load_version(cfg.data)
    kinds = [w.split(":")[0] if w else "simple" for w in complexity_of(cfg, ds)]
    return pd.crosstab(pd.Series(ds["task"], name="task"), pd.Series(kinds, name="kind"))


def selection_order(cfg: CurriculumConfig) -> list[str]:
    """Mixes that want complex rows choose first, then the others in curriculum order."""
    wants = [m for m in cfg.mixes if cfg.mix_complexity.get(m, "any") == "complex"]
    return wants + [m for m in cfg.mixes if m not in wants]


def build_curriculum(cfg: CurriculumConfig, out_root: Path) -> dict[str, Any]:
    """Write one data version per mix under out_root/<mix>; returns {mix: VersionInfo}."""
    from collections import Counter

    from ..data.manifests import processing_step
    from ..data.mixing import build_mix, eligible_rows, per_task_parts
    from ..data.versions import inherited_isolation, load_version, read_manifests, save_version

    parent = read_manifests(cfg.data)
    ds = load_version(cfg.data)
    why = complexity_of(cfg, ds)
    flags = [bool(w) for w in why]
    taken: set[str] = set()
    chosen: dict[str, tuple[Any, dict]] = {}
    for name in selection_order(cfg):
        complexity = cfg.mix_complexity.get(name, "any")
        keep, drops = eligible_rows(ds, cfg.mix_tasks[name], cfg.mix_difficulties[name], taken, flags, complexity)
        select = processing_step(
            f"select:{name}",
            count_in=len(ds),
            count_out=len(keep),
            drop_reasons=drops,
            params={
                "tasks": cfg.mix_tasks[name],
                "difficulties": cfg.mix_difficulties[name],
                "complexity": complexity,
                "complex_by": dict(Counter(why[i].split(":")[0] for i in keep if why[i])),
                "min_if_instructions": cfg.min_if_instructions,
                "min_math_steps": cfg.min_math_steps,
                "min_code_statements": cfg.min_code_statements,
                "selection_order": selection_order(cfg),
                "exclusive": cfg.exclusive,
            },
        )
        size = round(cfg.mix_shares[name] * len(ds))
        if cfg.mix_shares[name] > 0 and size == 0:  # a tiny input still gives a non-empty mix
            size = 1
        parts, quotas = per_task_parts(ds.select(keep), size) if cfg.mix_shares[name] > 0 else ({}, {})
        chosen[name] = (parts, quotas, select)
        if cfg.exclusive:
            taken |= {i for p in _taken_ids(parts, quotas, cfg.seed) for i in p}
    infos, previous = {}, None
    for name in cfg.mixes:  # built (and change-logged) in curriculum order
        parts, quotas, select = chosen[name]
        mix, step = build_mix(
            parts,
            "sft",
            cfg.seed,
            quotas,
            name=name,
            previous=previous,
            reason=f"curriculum stage {cfg.mixes.index(name) + 1} of {len(cfg.mixes)}: {name}",
        )
        infos[name] = save_version(
            mix,
            out_root / name,
            "sft",
            parent["source"]["sources"],
            parent["processing"]["steps"] + [select, step],
            parents=[parent["version"]["content_hash"]],
            isolation=inherited_isolation(parent),
        )
        previous = step
    return infos


def _taken_ids(parts: dict[str, Any], quotas: dict[str, int], seed: int) -> list[list[str]]:
    """The ids build_mix will take from each part (same seeded draw), for exclusivity."""
    from ..data.mixing import build_mix

    mix, _ = build_mix(parts, "sft", seed, quotas) if parts else (None, None)
    return [list(mix["id"])] if mix is not None else []


def build_rl_pool(cfg: CurriculumConfig, out_dir: Path) -> Any:
    """The RL pool: prompts in the wanted difficulty bands, equal per-task quotas up to rl_size."""
    from ..data.manifests import processing_step
    from ..data.mixing import build_mix, eligible_rows, per_task_parts
    from ..data.versions import inherited_isolation, load_version, read_manifests, save_version

    parent = read_manifests(cfg.rl_data)
    ds = load_version(cfg.rl_data)
    from ..data.mixing import UNLABELLED

    labels = {d or UNLABELLED for d in ds["difficulty"]}
    if cfg.rl_difficulties and labels == {UNLABELLED}:
        raise ValueError(
            f"rl_data={cfg.rl_data}: no prompt has a difficulty label; grade it with 13_difficulty "
            "first or set rl_difficulties: [] to keep every prompt"
        )
    keep, drops = eligible_rows(ds, [], cfg.rl_difficulties, set())
    select = processing_step(
        "select:rl_pool",
        count_in=len(ds),
        count_out=len(keep),
        drop_reasons=drops,
        params={"difficulties": cfg.rl_difficulties},
    )
    parts, quotas = per_task_parts(ds.select(keep), cfg.rl_size)
    pool, step = build_mix(parts, "rl", cfg.seed, quotas, name="rl_pool")
    return save_version(
        pool,
        out_dir,
        "rl",
        parent["source"]["sources"],
        parent["processing"]["steps"] + [select, step],
        parents=[parent["version"]["content_hash"]],
        isolation=inherited_isolation(parent),
    )


def task_counts(infos: dict[str, Any]) -> Any:
    """Rows per task (rows) and mix (columns)."""
    import pandas as pd

    from ..data.versions import load_version

    counts = {name: pd.Series(load_version(info.path)["task"]).value_counts() for name, info in infos.items()}
    return pd.DataFrame(counts).fillna(0).astype(int)


def changelog_table(infos: dict[str, Any]) -> Any:
    """The mixing change log of each mix against the one before it, one row per changed task."""
    import pandas as pd

    from ..data.versions import read_manifests

    rows = []
    for name, info in infos.items():
        log = read_manifests(info.path)["processing"]["steps"][-1]["params"].get("changelog")
        for task, change in (log or {}).get("changes", {}).get("tasks", {}).items():
            rows.append({"mix": name, "task": task, **change, "reason": log["reason"]})
    return pd.DataFrame(rows, columns=["mix", "task", "before", "after", "reason"])
