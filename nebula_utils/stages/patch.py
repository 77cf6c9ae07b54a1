"""Stage 17_patch: the third SFT stage's patch mix, built from the current model's measured weaknesses.

After SFT stage 2 (`model`, e.g. "@20_sft_complex/model"), the model answers the verifiable
training-side prompts of the curated corpus (`data`: 15_decontam's output, whose answers are the
teacher's or the dataset's that passed 12_filter's gates) `n_samples` times each; the real verifiers
score the answers (nebula_utils.data.patch, reusing 13_difficulty's grading). Per task category the
pass rate is reported with n and a 95% CI; the worst categories (`max_categories`, at most
`max_pass_rate`) are the weaknesses; their prompts the model fails (pass rate <= `fail_at_most`)
become the patch mix, each with its own verified answer. Writes:

  <run_dir>/patch        the `sft` version 20_sft_patch trains on; its processing manifest ends with
                         select:per_category (verifiable rows, prompts_per_category of each
                         task) -> score_weakness (why each other row was left out,
                         the per-category rates, the weak categories) -> mix:patch (per-task quotas
                         up to max_rows, and the change log against `previous_mix`)
  <run_dir>/targets.jsonl one line per patch row: the weakness it targets
  <run_dir>/category_rates.csv, prompt_scores.csv, quarantine.jsonl
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

from ..config import ConfigError, StageConfig, doc
from ._shared import SamplingFields


@dataclasses.dataclass
class PatchConfig(SamplingFields, StageConfig):
    upstream: ClassVar[dict[str, str]] = {"data": "15_decontam/data"}
    upstream_models: ClassVar[dict[str, str]] = {"model": "20_sft/model"}
    builtin_inputs: ClassVar[dict[str, str]] = {"data": "sft"}

    model: str = doc('the model after SFT stage 2 (checkpoint folder or model spec); "" = the newest 20_sft model')
    data: str = doc(
        'curated sft version whose verifiable rows are scored and patched from; "" = the newest 15_decontam/data'
    )
    previous_mix: str = doc(
        'the mix trained before the patch (e.g. "@16_curriculum/complex"), for the change log; "" = none'
    )
    prompts_per_category: int = doc(
        "verifiable rows scored per task category (a seeded sample; equal n per category); 0 = every one"
    )
    n_samples: int = doc("answers per prompt from `model`; a prompt's pass rate has resolution 1/n_samples")
    max_categories: int = doc("weak categories patched, worst first; 0 = every category at or below max_pass_rate")
    max_pass_rate: float = doc("a category is a weakness when its pass rate is at most this")
    fail_at_most: float = doc(
        "a prompt of a weak category is patched when the model's pass rate on it is at most this"
    )
    max_rows: int = doc("patch mix size cap, with equal per-category quotas; 0 = every selected prompt")
    verifier_workers: int = doc("threads for sandboxed code verification")

    def check(self) -> None:
        self.check_sampling()
        self.at_least("prompts_per_category", 0)
        self.at_least("n_samples", 1)
        self.at_least("max_categories", 0)
        self.within("max_pass_rate", 0.0, 1.0)
        self.within("fail_at_most", 0.0, 1.0)
        self.at_least("max_rows", 0)
        self.at_least("verifier_workers", 1)
        if self.previous_mix and self.previous_mix == self.data:
            raise ConfigError("key 'previous_mix': the previous mix is the one trained before the patch, not `data`")


@dataclasses.dataclass
class Measured:
    scored: Any  # data.patch.Scored
    rates: list[dict[str, Any]]
    weak: list[str]
    targets: list[dict[str, Any]]
    drops: Counter
    selected: Any  # the scored rows of `data` (a Dataset)
    select_step: dict
    generator: dict


def measure(cfg: PatchConfig) -> Measured:
    """Score the selected verifiable rows with `model`, rate each category, pick the weak ones and
    their failed prompts."""
    from ..data import patch as P
    from ..data.manifests import processing_step
    from ..data.versions import load_version

    ds = load_version(cfg.data)
    rows, skipped = P.prompt_rows(list(ds))
    rows, over = P.per_category(rows, cfg.prompts_per_category, cfg.seed)
    ids = {r["id"] for r in rows}
    selected = ds.filter(lambda r: r["id"] in ids)
    select_step = processing_step(
        "select:per_category",
        count_in=len(ds),
        count_out=len(selected),
        drop_reasons=skipped + over,
        params={"prompts_per_category": cfg.prompts_per_category, "seed": cfg.seed},
    )
    generator = cfg.make_generator(cfg.model, "patch: sample")
    scored = P.score_prompts(generator, rows, cfg.sampling(cfg.n_samples), cfg.verifier_workers)
    rates = P.category_rates(scored.prompts, cfg.seed)
    weak = P.weak_categories(rates, cfg.max_categories, cfg.max_pass_rate)
    targets, drops = P.select_patch(scored.prompts, rates, weak, cfg.fail_at_most)
    drops["invalid_reference"] += len(scored.quarantined)
    return Measured(scored, rates, weak, targets, +drops, selected, select_step, generator.spec())


def write_patch(cfg: PatchConfig, m: Measured, run_dir: Path) -> Any:
    """The patch version (with its targets in the manifest and targets.jsonl) and the score tables."""
    import pandas as pd

    from ..data.manifests import processing_step
    from ..data.mixing import build_mix, per_task_parts
    from ..data.versions import inherited_isolation, read_manifests, save_version
    from ..io import atomic_write_jsonl, atomic_write_text

    parent = read_manifests(cfg.data)
    wanted = {t["id"] for t in m.targets}
    candidates = m.selected.filter(lambda r: r["id"] in wanted)
    score = processing_step(
        "score_weakness",
        count_in=len(m.selected),
        count_out=len(candidates),
        drop_reasons=m.drops,
        params={
            "model": cfg.model,
            "generator": m.generator,
            "sampling": cfg.sampling(cfg.n_samples).to_dict(),
            "max_categories": cfg.max_categories,
            "max_pass_rate": cfg.max_pass_rate,
            "fail_at_most": cfg.fail_at_most,
        },
        category_rates=m.rates,
        weak_categories=m.weak,
    )
    parts, quotas = per_task_parts(candidates, cfg.max_rows)
    previous = read_manifests(cfg.previous_mix)["processing"]["steps"][-1] if cfg.previous_mix else None
    reason = "curriculum stage 3: patch of measured weaknesses " + (
        ", ".join(f"{r['task']} {r['pass_rate']:.2f}" for r in m.rates if r["task"] in m.weak) or "(none)"
    )
    mix, mix_step = build_mix(parts, "sft", cfg.seed, quotas, name="patch", previous=previous, reason=reason)
    kept = set(mix["id"])
    targets = [t for t in m.targets if t["id"] in kept]
    mix_step["params"]["targets"] = {t["id"]: t["weakness"] for t in targets}
    info = save_version(
        mix,
        run_dir / "patch",
        "sft",
        parent["source"]["sources"],
        parent["processing"]["steps"] + [m.select_step, score, mix_step],
        parents=[parent["version"]["content_hash"]],
        isolation=inherited_isolation(parent),
    )
    atomic_write_jsonl(run_dir / "targets.jsonl", targets)
    atomic_write_jsonl(run_dir / "quarantine.jsonl", m.scored.quarantined)
    atomic_write_text(run_dir / "category_rates.csv", rate_frame(m.rates).to_csv(index=False))
    atomic_write_text(run_dir / "prompt_scores.csv", pd.DataFrame(m.scored.prompts).to_csv(index=False))
    return info


def rate_frame(rates: list[dict[str, Any]]) -> Any:
    """One row per category: n prompts, samples, pass rate with its 95% CI, failed prompts."""
    import pandas as pd

    rows = [
        {k: r[k] for k in ("task", "n", "samples", "pass_rate", "failed_prompts", "ci_method")}
        | {"ci95_low": r["ci95"][0], "ci95_high": r["ci95"][1]}
        for r in rates
    ]
    cols = ["task", "n", "samples", "pass_rate", "ci95_low", "ci95_high", "ci_method", "failed_prompts"]
    return pd.DataFrame(rows, columns=cols)


def plot_rates(rates: list[dict[str, Any]], weak: list[str], path: Path) -> Any:
    """Pass rate per category with its 95% CI; weak categories in red."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, r in enumerate(rates):
        low, high = r["ci95"]
        ax.bar(i, r["pass_rate"], color="tab:red" if r["task"] in weak else "tab:blue")
        ax.errorbar(i, r["pass_rate"], yerr=[[r["pass_rate"] - low], [high - r["pass_rate"]]], color="k", capsize=4)
    ax.set_xticks(range(len(rates)), [f"{r['task']}\n(n={r['n']})" for r in rates])
    ax.set(title="current model: pass rate per category (95% CI; red = patched)", ylabel="pass rate", ylim=(0, 1.05))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig


def metrics(m: Measured, info: Any) -> dict[str, Any]:
    out = {f"pass_rate/{r['task']}": {"value": r["pass_rate"], "n": r["n"], "ci95": r["ci95"]} for r in m.rates}
    return out | {
        "prompts_scored": {"value": len(m.scored.prompts)},
        "weak_categories": {"value": len(m.weak)},
        "patch_rows": {"value": info.num_rows, "n": len(m.selected)},
    }
