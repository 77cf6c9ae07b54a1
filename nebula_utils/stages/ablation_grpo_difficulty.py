"""Stage 82_ablation_grpo_difficulty: GRPO by prompt-difficulty band (easy / medium / hard) at an
equal budget, read from the variants' evaluation runs (params/ablations/grpo_difficulty.yaml).

The paper's claim: GRPO on medium-difficulty prompts lifts NebulaExp's Reasoning branch from
73.88 to 75.17 (+1.29 points). The mechanism: a prompt the policy always (easy) or never (hard)
solves gives a group of completions with equal rewards, so zero advantage and no gradient; medium
prompts give the most informative groups. The notebook compares each band's final model with the
starting model (the lift) and the bands with each other (paired by item, 95% bootstrap intervals,
minimum detectable effects), shows each band's zero-variance fraction during training, and writes
its conclusion from the intervals. The comparison code is nebula_utils.report.compare; the runner
renders the notebook to <results root>/reports/<report_name>.html.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError, StageConfig, doc
from ..report.lineage import nearest_run
from ._shared import check_comparison

# The paper's numbers (Reasoning-branch average, points out of 100) and the band it credits.
CLAIM = {"band": "medium", "before": 73.88, "after": 75.17}
CLAIM_EFFECT = (CLAIM["after"] - CLAIM["before"]) / 100  # 0.0129 in score units (scores are in [0, 1])


@dataclass
class AblationGRPODifficultyConfig(StageConfig):
    runs: list[str] = doc("the variants' evaluation run folders, one per band (the ablation file passes them)")
    labels: list[str] = doc("one label per run (the band names); [] = the run ids")
    baseline: int | str = doc("the band the others are compared with: its index in `runs` or its label")
    base_run: str = doc('evaluation run of the starting model (before GRPO), for each band\'s lift; "" = none')
    report_name: str = doc("writes <results root>/reports/<report_name>.html")
    bootstrap_resamples: int = doc("paired-bootstrap resamples (1000 keeps the CI endpoints stable to ~0.01 at n=100)")
    target_effect: float = doc(
        "the change the power columns size for (items per benchmark to detect it); default: the paper's +1.29 points"
    )

    def check(self) -> None:
        if "base" in self.labels:
            raise ConfigError("key 'labels': 'base' names the starting model's row; choose another label")
        check_comparison(self)

    @classmethod
    def html_report_path(cls, params: Mapping[str, Any]) -> Path:
        """Where the runner writes the rendered notebook (as 90_report does)."""
        from .report import html_path

        return html_path(params.get("report_name") or "ablation_grpo_difficulty", params.get("run_dir") or "")


# --------------------------------------------------------------------------- reading the variants


NO_RUNS = (
    "**No variants to compare yet.** Run the ablation (`nebula run params/ablations/grpo_difficulty.yaml`, "
    "which renders this notebook at the end) or pass `runs`, `labels` and `base_run`."
)
ABLATIONS = ("grpo_difficulty", "grpo_difficulty_smoke")  # params/ablations/*.yaml using this notebook
EVAL_STEP, BASE_STEP = "60_eval_reasoning_grpo", "60_eval_reasoning_start"


def find_ablation_runs(root: Path) -> tuple[list[str], list[str], str] | None:
    """(runs, labels, base_run) of the newest finished grpo_difficulty ablation under a results root,
    read from its record <folder>/ablations/<name>.json (what a notebook opened with empty `runs`
    shows); None if none."""
    from ..io import read_json
    from ..runs import is_complete

    found = []
    for record in (r for name in ABLATIONS for r in Path(root).glob(f"*/ablations/{name}.json")):
        variants = read_json(record)["variants"]
        folder = record.parent.parent  # <folder>/ablations/<name>.json
        runs = [folder / v["steps"].get(EVAL_STEP, "") for v in variants]
        if variants and all(is_complete(r, r.name) for r in runs):
            labels = ["+".join(v["point"].get("40_grpo_reasoning.difficulties") or ["all"]) for v in variants]
            base = folder / variants[0]["steps"].get(BASE_STEP, "")
            found.append(
                (
                    record.stat().st_mtime,
                    [str(r) for r in runs],
                    labels,
                    str(base) if is_complete(base, base.name) else "",
                )
            )
    return max(found)[1:] if found else None


def load_variants(cfg: AblationGRPODifficultyConfig) -> tuple[list[Any], list[Any]]:
    """(band rows, every row): the variants' eval runs, with the starting model's first as 'base'.
    With empty `runs` (a notebook opened as is), the newest finished grpo_difficulty ablation under
    the results root; ([], []) when there is none."""
    from ._shared import variants_and_base

    return variants_and_base(cfg, find_ablation_runs, "the newest finished grpo_difficulty ablation")


def grid_table(bands: Sequence[Any], trees: Sequence[Mapping[str, Any]]):
    """One row per band: its training run's difficulties, budget (steps x prompts x completions),
    pool size and training signal (reward, zero-variance fraction, held-out pass rate)."""
    import pandas as pd
    import yaml

    from ..io import read_json

    rows = []
    for run, tree in zip(bands, trees):
        train = nearest_run(tree, ("40_grpo",))
        if train is None:
            rows.append({"band": run.label, "training run": "— (no 40_grpo run in the lineage)"})
            continue
        cfg = yaml.safe_load((train / "config.yaml").read_text(encoding="utf-8"))
        m = {k: v.get("value") for k, v in read_json(train / "metrics.json")["metrics"].items()}
        get = m.get
        rows.append(
            {
                "band": run.label,
                "difficulties": ", ".join(cfg.get("difficulties") or ["all"]),
                "steps": cfg["max_steps"],
                "prompts/step": cfg["prompts_per_step"],
                "group size": cfg["num_generations"],
                "budget (completions)": cfg["max_steps"] * cfg["prompts_per_step"] * cfg["num_generations"],
                "pool (prompts)": get("train/prompts"),
                "zero-variance groups": get("train/zero_variance_frac_mean"),
                "reward first → last": f"{get('train/reward_first') or 0:.3f} → {get('train/reward_last') or 0:.3f}",
                "held-out pass Δ": get("heldout/pass_rate_delta"),
                "training run": train.name,
            }
        )
    return pd.DataFrame(rows)


def plot_training(bands: Sequence[Any], trees: Sequence[Mapping[str, Any]]):
    """Per band: mean reward and fraction of zero-variance groups at every GRPO step."""
    import matplotlib.pyplot as plt

    from ..io import read_json

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for run, tree in zip(bands, trees):
        train = nearest_run(tree, ("40_grpo",))
        if train is None or not (train / "train_log.json").is_file():
            continue
        log = [h for h in read_json(train / "train_log.json") if "loss" in h]
        steps = [h["step"] for h in log]
        axes[0].plot(steps, [h.get("reward") for h in log], marker=".", label=run.label)
        axes[1].plot(steps, [h.get("zero_variance/frac_groups") for h in log], marker=".", label=run.label)
    axes[0].set(title="mean reward per step", xlabel="step", ylabel="reward")
    axes[1].set(
        title="zero-variance groups (no gradient)", xlabel="step", ylabel="fraction of groups", ylim=(-0.05, 1.05)
    )
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- the conclusion


def _interval(r: Any) -> str:
    return f"{r.delta:+.3f} (95% CI [{r.delta_lo:+.3f}, {r.delta_hi:+.3f}], n = {r.n_paired})"


def _verdict(r: Any) -> str:
    if r.mark == "up":
        return "up"
    if r.mark == "down":
        return "down"
    if r.mark == "flat":
        return f"no detectable effect (MDE ±{r.mde:.3f})"
    return "not comparable (no shared items)"


def _average(long: Any, run: str) -> Any | None:
    rows = long[(long["run"] == run) & (long["column"] == "average") & long["delta"].notna()]
    return None if rows.empty else rows.iloc[0]


def conclusion(lift: Any | None, pairwise: Any, baseline: str, target_effect: float = CLAIM_EFFECT) -> str:
    """The ablation's conclusion as markdown, from the suite-average intervals only: each band's
    lift over the starting model (when `lift` is given), the other bands against `baseline`, and
    whether the paper's direction (the claimed band lifts the average) is reproduced here."""
    lines = []
    bands = list(dict.fromkeys(pairwise["run"]))
    if lift is not None:
        for band in bands:
            r = _average(lift, band)
            if r is not None:
                lines.append(f"- **{band}** vs the starting model: {_interval(r)}: {_verdict(r)}.")
    others = [(band, _average(pairwise, band)) for band in bands]
    others = [(band, r) for band, r in others if r is not None]
    for band, r in others:
        where = {"up": f"{band} above {baseline}", "down": f"{band} below {baseline}"}.get(r.mark, _verdict(r))
        lines.append(f"- **{band}** − **{baseline}**: {_interval(r)}: {where}.")
    if others and baseline == CLAIM["band"]:
        below = [band for band, r in others if r.mark == "down"]
        above = [band for band, r in others if r.mark == "up"]
        ranking = (
            f"supported: {baseline} is detectably above {', '.join(below)}"
            if len(below) == len(others)
            else f"contradicted: {', '.join(above)} detectably above {baseline}"
            if above
            else f"not established: {baseline} is detectably above {', '.join(below) or 'no other band'}"
        )
        lines.append(f"- The paper's ranking ({baseline} is the best band at this budget): {ranking}.")
    claim = _average(lift, CLAIM["band"]) if lift is not None else None
    if claim is None:
        lines.append(
            f"- The paper's direction ({CLAIM['band']} lifts the average) cannot be checked: no starting-model row."
        )
    elif claim.mark == "up":
        lines.append(
            f"- **Reproduced in direction**: GRPO on {CLAIM['band']} prompts lifts the average "
            f"({claim.delta:+.3f}; the paper: {CLAIM_EFFECT:+.4f})."
        )
    elif claim.mark == "down":
        lines.append(
            f"- **Not reproduced**: GRPO on {CLAIM['band']} prompts lowers the average here ({claim.delta:+.3f})."
        )
    else:
        need = claim.items_for_target
        lines.append(
            f"- **Not detectable at this scale**: the {CLAIM['band']} lift's interval contains 0; changes smaller "
            f"than ±{claim.mde:.3f} cannot be told from noise with {claim.n_paired} items, and the paper's "
            f"{CLAIM_EFFECT:+.4f} is {'below' if CLAIM_EFFECT < claim.mde else 'above'} that"
            + (f" (resolving ±{target_effect:g} needs about {need:,} items per benchmark)." if need else ".")
        )
    return "\n".join(lines)


def ablation_metrics(lift: Any | None, pairwise: Any | None) -> dict[str, dict[str, Any]]:
    """metrics.json entries: ablation/lift/<band> and ablation/vs_<baseline>/<band> for the suite
    average (value, n paired, 95% CI) with their MDEs."""
    out = {}
    for name, long in (("lift", lift), ("pairwise", pairwise)):
        if long is None:
            continue
        for r in long[(long["column"] == "average") & long["delta"].notna()].itertuples():
            out[f"ablation/{name}/{r.run}"] = {
                "value": float(r.delta),
                "n": int(r.n_paired),
                "ci95": [float(r.delta_lo), float(r.delta_hi)],
            }
            if not math.isnan(r.mde):
                out[f"ablation/{name}_mde/{r.run}"] = {"value": float(r.mde), "n": int(r.n_paired), "ci95": None}
    return out
