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
from typing import Any, ClassVar

from ..config import ConfigError, StageConfig, doc
from ._shared import SamplingFields


@dataclasses.dataclass
class DifficultyConfig(SamplingFields, StageConfig):
    upstream: ClassVar[dict[str, str]] = {"data": "10_data_sft_mix/rl"}
    builtin_inputs: ClassVar[dict[str, str]] = {"data": "rl"}

    data: str = doc('rl data version to grade; "" = the newest 10_data_sft_mix/rl under results/')
    max_prompts: int = doc("0 = every prompt; else a seeded sample of this many")
    policy: str = doc("the reference policy whose pass rate grades a prompt (model spec or checkpoint folder)")
    n_samples: int = doc("answers per prompt; the pass-rate resolution is 1/n_samples")
    hard_at_most: float = doc("pass rate <= this -> hard")
    easy_above: float = doc("pass rate > this -> easy; medium in between")
    pool_labels: list[str] = doc("labels that go into the RL pool (the Reasoning branch trains on medium)")
    verifier_workers: int = doc("threads for sandboxed code verification")

    def check(self) -> None:
        from ..data.difficulty import LABELS

        self.check_sampling()
        if not self.pool_labels:
            raise ConfigError("key 'pool_labels': choose at least one of " + ", ".join(LABELS))
        self.all_in("pool_labels", LABELS)
        if not 0.0 <= self.hard_at_most <= self.easy_above <= 1.0:
            raise ConfigError(
                f"key 'easy_above': need 0 <= hard_at_most ({self.hard_at_most}) <= easy_above "
                f"({self.easy_above}) <= 1"
            )
        self.at_least("n_samples", 1)
        self.at_least("max_prompts", 0)
        self.at_least("verifier_workers", 1)


def write_versions(
    cfg: DifficultyConfig, graded: Any, select_step: dict, generator: Any, run_dir: Path
) -> dict[str, Any]:
    """The graded version (all graded prompts) and the pool version (pool_labels only)."""
    from ..data.manifests import processing_step
    from ..data.schema import to_dataset
    from ..data.versions import derive_version, inherited_isolation, read_manifests, save_version
    from ..io import atomic_write_jsonl

    parent = read_manifests(cfg.data)
    atomic_write_jsonl(run_dir / "quarantine.jsonl", graded.quarantined)
    grade_step = processing_step(
        "grade_difficulty",
        count_in=select_step["count_out"],
        count_out=len(graded.rows),
        quarantined=len(graded.quarantined),
        drop_reasons=Counter(q["reason"].split(":")[0] for q in graded.quarantined),
        params={
            "policy": cfg.policy,
            "sampling": cfg.sampling(cfg.n_samples).to_dict(),
            "generator": generator.spec(),
            "hard_at_most": cfg.hard_at_most,
            "easy_above": cfg.easy_above,
        },
    )
    isolation = inherited_isolation(parent)
    graded_info = save_version(
        to_dataset("rl", graded.rows),
        run_dir / "graded",
        "rl",
        parent["source"]["sources"],
        parent["processing"]["steps"] + [select_step, grade_step],
        parents=[parent["version"]["content_hash"]],
        isolation=isolation,
    )
    pool = [r for r in graded.rows if r["difficulty"] in cfg.pool_labels]
    drops = Counter(f"difficulty:{r['difficulty']}" for r in graded.rows if r["difficulty"] not in cfg.pool_labels)
    pool_step = processing_step(
        "select_pool",
        count_in=len(graded.rows),
        count_out=len(pool),
        drop_reasons=drops,
        params={"pool_labels": list(cfg.pool_labels)},
    )
    pool_info = derive_version(graded_info.path, to_dataset("rl", pool), run_dir / "rl", pool_step)
    return {"graded": graded_info, "rl": pool_info}


def bin_table(graded: Any) -> Any:
    """Prompts per fine pass-rate bin and task (all bins listed, empty ones as 0)."""
    import pandas as pd

    from ..data.difficulty import BINS

    frame = pd.DataFrame(graded.samples, columns=["id", "task", "verifier", "pass_rate", "bin", "passes", "truncated"])
    table = frame.groupby(["bin", "task"]).size().unstack(fill_value=0) if len(frame) else pd.DataFrame()
    return table.reindex(list(BINS), fill_value=0)


def plot_pass_rates(graded: Any, cfg: DifficultyConfig, path: Path) -> Any:
    """Left: pass-rate histogram with the label thresholds. Right: prompts per fine bin."""
    import matplotlib.pyplot as plt

    rates = [s["pass_rate"] for s in graded.samples]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    axes[0].hist(
        rates, bins=[i / cfg.n_samples - 0.5 / cfg.n_samples for i in range(cfg.n_samples + 2)], edgecolor="k"
    )
    for x, name in ((cfg.hard_at_most, "hard ≤"), (cfg.easy_above, "easy >")):
        axes[0].axvline(x, color="tab:red", ls="--")
        axes[0].text(x, axes[0].get_ylim()[1] * 0.9, f" {name} {x:g}", color="tab:red")
    axes[0].set(title=f"pass rate of {cfg.policy} over {cfg.n_samples} samples", xlabel="pass rate", ylabel="prompts")
    bin_table(graded).sum(axis=1).plot.bar(ax=axes[1], rot=0, title="prompts per pass-rate bin", color="tab:green")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig
