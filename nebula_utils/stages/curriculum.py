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
    mixes: list[str] = doc("curriculum order, one SFT stage per mix (the paper: base, complex, patch)")
    mix_tasks: dict[str, list[str]] = doc("mix -> allowed tasks ([] = every task)")
    mix_difficulties: dict[str, list[str]] = doc("mix -> allowed difficulty labels ([] = any, unlabelled included)")
    mix_shares: dict[str, float] = doc("mix -> target size as a share of the input rows")
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
        bad = {m: s for m, s in self.mix_shares.items() if not 0.0 <= s <= 1.0}
        if bad or sum(self.mix_shares.values()) > 1.0 + 1e-9:
            raise ConfigError(f"key 'mix_shares': shares must be in [0, 1] and sum to <= 1, got {self.mix_shares}")
        self.at_least("rl_size", 0)


def build_curriculum(cfg: CurriculumConfig, out_root: Path) -> dict[str, Any]:
    """Write one data version per mix under out_root/<mix>; returns {mix: VersionInfo}."""
    from ..data.manifests import processing_step
    from ..data.mixing import build_mix, eligible_rows, per_task_parts
    from ..data.versions import inherited_isolation, load_version, read_manifests, save_version

    parent = read_manifests(cfg.data)
    ds = load_version(cfg.data)
    taken: set[str] = set()
    infos, previous = {}, None
    for name in cfg.mixes:
        keep, drops = eligible_rows(ds, cfg.mix_tasks[name], cfg.mix_difficulties[name], taken)
        select = processing_step(
            f"select:{name}",
            count_in=len(ds),
            count_out=len(keep),
            drop_reasons=drops,
            params={
                "tasks": cfg.mix_tasks[name],
                "difficulties": cfg.mix_difficulties[name],
                "exclusive": cfg.exclusive,
            },
        )
        parts, quotas = per_task_parts(ds.select(keep), round(cfg.mix_shares[name] * len(ds)))
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
        if cfg.exclusive:
            taken |= set(mix["id"])
    return infos


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
