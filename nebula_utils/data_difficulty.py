"""Stage 13_difficulty: grade RL prompts by a reference policy's pass rate; build the medium pool.

Reads an `rl` version (`data`), samples `n_samples` answers per prompt from `policy`, verifies
them, and writes:
  <run_dir>/graded   every graded prompt with `pass_rate` and `difficulty` (hard | medium | easy)
  <run_dir>/rl       the pool: graded prompts whose label is in `pool_labels` (default: medium),
                     the RL data version the reasoning branch trains on
  <run_dir>/quarantine.jsonl   prompts whose reference a verifier rejected (data bugs)
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

from .config import ConfigError, StageConfig


@dataclasses.dataclass
class DifficultyConfig(StageConfig):
    data: str  # rl data version; pipelines pass "@10_data_sft_mix/rl"
    max_prompts: int  # 0 = all
    policy: str  # the reference policy (model spec or upstream checkpoint folder)
    backend: str  # auto | transformers | vllm
    batch_size: int
    n_samples: int  # answers per prompt; the pass-rate resolution is 1/n_samples
    temperature: float
    top_p: float
    max_new_tokens: int
    hard_at_most: float  # pass rate <= this -> hard
    easy_above: float  # pass rate > this -> easy
    pool_labels: list[str]  # labels that go into the RL pool
    verifier_workers: int

    def check(self) -> None:
        from .data.difficulty import LABELS

        if not self.data:
            raise ConfigError("13_difficulty: key 'data' is empty (pass an rl version, e.g. \"@10_data_sft_mix/rl\")")
        bad = [lab for lab in self.pool_labels if lab not in LABELS]
        if bad or not self.pool_labels:
            raise ConfigError(f"13_difficulty: key 'pool_labels' = {self.pool_labels} (choose from {', '.join(LABELS)})")
        if not 0.0 <= self.hard_at_most <= self.easy_above <= 1.0:
            raise ConfigError(f"13_difficulty: need 0 <= hard_at_most ({self.hard_at_most}) <= easy_above ({self.easy_above}) <= 1")
        if self.n_samples < 1:
            raise ConfigError("13_difficulty: key 'n_samples' must be >= 1")


def sampling(cfg: DifficultyConfig) -> Any:
    from .generation import SamplingParams

    return SamplingParams(n=cfg.n_samples, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                          top_p=cfg.top_p, seed=cfg.seed)


def load_prompts(cfg: DifficultyConfig) -> tuple[list[dict], dict[str, Any]]:
    """(rows, the `select` step) of the input rl version."""
    from .data.mixing import select_subset
    from .data.versions import load_version, read_manifests

    cfg.check()
    schema = read_manifests(cfg.data)["version"]["schema"]
    if schema != "rl":
        raise ValueError(f"{cfg.data}: 13_difficulty grades rl prompts, got a {schema} version")
    ds = load_version(cfg.data)
    ds, step = select_subset(ds, cfg.max_prompts, cfg.seed)
    return list(ds), step


def write_versions(cfg: DifficultyConfig, graded: Any, select_step: dict, generator: Any, run_dir: Path) -> dict[str, Any]:
    """The graded version (all graded prompts) and the pool version (pool_labels only)."""
    from .data.manifests import processing_step
    from .data.schema import to_dataset
    from .data.versions import derive_version, read_manifests, save_version
    from .io import atomic_write_jsonl

    parent = read_manifests(cfg.data)
    atomic_write_jsonl(run_dir / "quarantine.jsonl", graded.quarantined)
    grade_step = processing_step(
        "grade_difficulty", count_in=select_step["count_out"], count_out=len(graded.rows),
        quarantined=len(graded.quarantined), drop_reasons=Counter(q["reason"].split(":")[0] for q in graded.quarantined),
        params={"policy": cfg.policy, "sampling": sampling(cfg).to_dict(), "generator": generator.spec(),
                "hard_at_most": cfg.hard_at_most, "easy_above": cfg.easy_above})
    isolation = {k: v for k, v in parent["evaluation_isolation"].items() if k != "content_hash"}
    isolation["inherited_from"] = parent["version"]["content_hash"]
    graded_info = save_version(to_dataset("rl", graded.rows), run_dir / "graded", "rl", parent["source"]["sources"],
                               parent["processing"]["steps"] + [select_step, grade_step],
                               parents=[parent["version"]["content_hash"]], isolation=isolation)
    pool = [r for r in graded.rows if r["difficulty"] in cfg.pool_labels]
    drops = Counter(f"difficulty:{r['difficulty']}" for r in graded.rows if r["difficulty"] not in cfg.pool_labels)
    pool_step = processing_step("select_pool", count_in=len(graded.rows), count_out=len(pool), drop_reasons=drops,
                                params={"pool_labels": list(cfg.pool_labels)})
    pool_info = derive_version(graded_info.path, to_dataset("rl", pool), run_dir / "rl", pool_step)
    return {"graded": graded_info, "rl": pool_info}


def bin_table(graded: Any) -> Any:
    """Prompts per fine pass-rate bin and task (all bins listed, empty ones as 0)."""
    import pandas as pd

    from .data.difficulty import BINS

    frame = pd.DataFrame(graded.samples, columns=["id", "task", "verifier", "pass_rate", "bin", "passes", "truncated"])
    table = frame.groupby(["bin", "task"]).size().unstack(fill_value=0) if len(frame) else pd.DataFrame()
    return table.reindex(list(BINS), fill_value=0)


def plot_pass_rates(graded: Any, cfg: DifficultyConfig, path: Path) -> Any:
    """Left: pass-rate histogram with the label thresholds. Right: prompts per fine bin."""
    import matplotlib.pyplot as plt

    rates = [s["pass_rate"] for s in graded.samples]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    axes[0].hist(rates, bins=[i / cfg.n_samples - 0.5 / cfg.n_samples for i in range(cfg.n_samples + 2)], edgecolor="k")
    for x, name in ((cfg.hard_at_most, "hard ≤"), (cfg.easy_above, "easy >")):
        axes[0].axvline(x, color="tab:red", ls="--")
        axes[0].text(x, axes[0].get_ylim()[1] * 0.9, f" {name} {x:g}", color="tab:red")
    axes[0].set(title=f"pass rate of {cfg.policy} over {cfg.n_samples} samples", xlabel="pass rate", ylabel="prompts")
    bin_table(graded).sum(axis=1).plot.bar(ax=axes[1], rot=0, title="prompts per pass-rate bin", color="tab:green")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig
