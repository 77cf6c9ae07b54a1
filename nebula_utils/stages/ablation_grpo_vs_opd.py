"""Stage 83_ablation_grpo_vs_opd: GRPO (RL with verifiable rewards) against single-teacher on-policy
distillation (OPD) at an equal sample budget, both from the same SFT checkpoint, read from the
arms' evaluation runs (params/ablations/grpo_vs_opd.yaml).

The paper's claim: OPD with 4K samples beats RL by 3.26 points on IFEval (+4.43 on the average).
The budget is counted in student completions trained on: GRPO's max_steps x prompts_per_step x
num_generations against OPD's num_samples (one completion per prompt per sample). The demo grid
also matches optimizer steps and completions per step, so the arms differ in the training signal
only (a group-relative verifier reward against the teacher's next-token distribution); GRPO sees
num_generations times fewer distinct prompt visits, which is the price of its groups. The notebook
checks budget and start from the training runs' own metrics and configs, compares each arm with
the starting checkpoint and the arms with each other (nebula_utils.report.compare: paired
bootstrap, MDE), and writes its conclusion from the intervals (nebula_utils.report.verdict). The
runner renders it to <results root>/reports/<report_name>.html.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError, StageConfig, doc
from ..report.lineage import nearest_run
from ._shared import check_comparison

ARM_STAGES = {"40_grpo": "grpo", "50_opd": "opd", "51_mopd": "opd"}  # 51_mopd only without routing
# The paper's numbers, in points (scores here are fractions: 3.26 points = 0.0326).
CLAIM = {"average": 4.43, "cap/instruction_following": 3.26}
CLAIM_TEXT = "OPD with 4K samples against RL"
NO_RUNS = (
    "**Nothing to compare yet.** No complete evaluation of both a GRPO-trained and an OPD-trained model "
    "was found under the results root. Run `nebula run params/ablations/grpo_vs_opd.yaml` (it renders "
    "this notebook at the end) or pass `runs`, `labels` and `base_run`."
)


@dataclass
class GRPOvsOPDConfig(StageConfig):
    runs: list[str] = doc(
        "60_eval run folders, one per arm (the ablation passes them); [] = the newest evaluations of a GRPO- and "
        "an OPD-trained model from one starting checkpoint under the results root"
    )
    labels: list[str] = doc("one label per run (the ablation passes [grpo, opd])")
    baseline: int | str = doc("the arm the other is compared with: its index in `runs` or its label (GRPO)")
    base_run: str = doc(
        'evaluation run of the starting SFT checkpoint, for each arm\'s lift; "" = none (with empty `runs`: '
        "the newest evaluation of the arms' common start, if any)"
    )
    report_name: str = doc("writes <results root>/reports/<report_name>.html")
    bootstrap_resamples: int = doc("paired-bootstrap resamples (1000 keeps the CI endpoints stable to ~0.01 at n=100)")
    target_effect: float = doc("the change the power table sizes benchmarks for (a score fraction: 0.05 = 5 points)")
    claim_points: float = doc("the paper's OPD - RL effect on the average, in points (+4.43)")
    claim_if_points: float = doc("the paper's OPD - RL effect on instruction following (IFEval), in points (+3.26)")

    def check(self) -> None:
        if len(self.runs) not in (0, 2):
            raise ConfigError(f"key 'runs': a GRPO and an OPD evaluation run (2), got {len(self.runs)}")
        if "base" in self.labels:
            raise ConfigError("key 'labels': 'base' names the starting checkpoint's row; choose another label")
        check_comparison(self)

    @classmethod
    def html_report_path(cls, params: Mapping[str, Any]) -> Path:
        from .report import html_path

        return html_path(params.get("report_name") or "grpo_vs_opd", params.get("run_dir") or "")


# --------------------------------------------------------------------------- finding the arms


def arm_of(e: Any) -> str | None:
    """grpo | opd for an evaluation of a model trained by 40_grpo / 50_opd / unrouted 51_mopd."""
    arm = ARM_STAGES.get(e.stage)
    if arm is None or (e.stage == "51_mopd" and e.config.get("teachers")):
        return None
    return arm


def _start(e: Any) -> str:
    model = str(e.config.get("model", ""))
    return str(Path(model).resolve()) if Path(model).is_absolute() else model


def find_arms(root: Path) -> tuple[list[str], list[str], str] | None:
    """(runs, labels, base_run) of the newest GRPO and OPD evaluations whose training runs started
    from one checkpoint (base_run: that checkpoint's newest evaluation, "" if none); None when no
    start has both arms evaluated."""
    from ..report.newest import newest_by_label, newest_eval_of, trained_evals

    evals = trained_evals(root)
    newest = newest_by_label(evals, lambda e: (arm_of(e), _start(e)) if arm_of(e) else None)
    starts = {s for (_, s) in newest if ("grpo", s) in newest and ("opd", s) in newest}
    if not starts:
        return None
    start = max(starts, key=lambda s: max(newest[("grpo", s)].finished, newest[("opd", s)].finished))
    base = newest_eval_of(evals, start)
    pair = [str(newest[(arm, start)].eval_dir) for arm in ("grpo", "opd")]
    return pair, ["grpo", "opd"], str(base.eval_dir) if base else ""


def load_arms(cfg: GRPOvsOPDConfig) -> tuple[list[Any], list[Any]]:
    """(arm rows, every row): the arms' eval runs, with the starting checkpoint's first as 'base'
    when known. With empty `runs` (the notebook opened as is), the newest pair under the results
    root; ([], []) when there is none."""
    from ._shared import variants_and_base

    return variants_and_base(cfg, find_arms, "the newest GRPO and OPD evaluations from one start")


# --------------------------------------------------------------------------- budgets


def _budget_row(label: str, path: Path) -> dict[str, Any]:
    import yaml

    from ..io import read_json

    stage = read_json(path / "run.json")["stage"]
    m = {k: v.get("value") for k, v in read_json(path / "metrics.json")["metrics"].items()}
    c = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    steps = int(m["train/steps"])
    if stage == "40_grpo":  # every step: prompts_per_step groups of num_generations completions
        completions, visits = int(m["train/completions"]), steps * int(c["prompts_per_step"])
        signal = f"reward {m.get('train/reward_first') or 0:.3f} → {m.get('train/reward_last') or 0:.3f}"
    else:  # one completion per prompt per sample
        completions = visits = int(m["train/samples"])
        signal = f"divergence {m.get('train/loss_first') or 0:.3f} → {m.get('train/loss_last') or 0:.3f}"
    return {
        "run": label,
        "stage": stage,
        "start checkpoint": str(c.get("model", "")),
        "completions": completions,
        "optimizer steps": steps,
        "completions/step": completions // max(1, steps),
        "prompt visits": visits,
        "max new tokens": c.get("max_completion_length"),
        "learning rate": c.get("learning_rate"),
        "training signal": signal,
        "training run": path.name,
    }


def budget_table(labels: Sequence[str], trees: Sequence[Mapping[str, Any]]) -> Any:
    """One row per arm from its training run: start checkpoint, completions trained on, steps,
    prompt visits, token cap, learning rate and the training signal's first → last value."""
    import pandas as pd

    rows = []
    for label, tree in zip(labels, trees):
        path = nearest_run(tree, ARM_STAGES)
        rows.append(_budget_row(label, path) if path else {"run": label, "training run": "(none in lineage)"})
    return pd.DataFrame(rows)


def equal_budgets(table: Any) -> bool:
    return "completions" in table and table["completions"].notna().all() and table["completions"].nunique() == 1


def same_start(table: Any) -> bool:
    col = "start checkpoint"
    return col in table and table[col].notna().all() and table[col].map(lambda s: str(Path(s))).nunique() == 1


def short_starts(table: Any, bases: Mapping[str, Any]) -> Any:
    """The table with its start checkpoints as short display paths (no absolute path on the page)."""
    from ..report.lineage import short_path

    out = table.copy()
    if "start checkpoint" in out:
        out["start checkpoint"] = out["start checkpoint"].map(lambda s: short_path(s, bases) if s else s)
    return out


# --------------------------------------------------------------------------- figures and conclusion


def plot_training(arms: Sequence[Any], trees: Sequence[Mapping[str, Any]]):
    """Per arm, its training signal at every optimizer step: GRPO's mean verifier reward, OPD's
    divergence to the teacher."""
    import matplotlib.pyplot as plt

    from ..io import read_json

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for run, tree in zip(arms, trees):
        train = nearest_run(tree, ARM_STAGES)
        if train is None or not (train / "train_log.json").is_file():
            continue
        grpo = read_json(train / "run.json")["stage"] == "40_grpo"
        log = [h for h in read_json(train / "train_log.json") if "loss" in h and "step" in h]
        key, ax = ("reward", axes[0]) if grpo else ("loss", axes[1])
        ax.plot([h["step"] for h in log], [h.get(key) for h in log], marker=".", label=run.label)
    axes[0].set(title="GRPO: mean verifier reward per step", xlabel="step", ylabel="reward")
    axes[1].set(title="OPD: divergence to the teacher per step", xlabel="step", ylabel="loss")
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def conclusion(pairwise: Any, lift: Any | None, cfg: GRPOvsOPDConfig) -> str:
    """Markdown from the intervals: the other arm against the baseline on the average (set against
    the paper's +4.43), on instruction following (against +3.26) and on every other capability,
    then each arm's lift over the starting checkpoint."""
    from ..report.verdict import conclusion_text, verdict

    claims = {"average": cfg.claim_points, "cap/instruction_following": cfg.claim_if_points}
    base = pairwise.loc[pairwise["mark"] == "baseline", "run"].iloc[0]
    # the paper's direction is OPD above RL: the sign flips when OPD is the baseline; other labels get no claim
    sign = {("opd", "grpo"): 1.0, ("grpo", "opd"): -1.0}
    columns = ["average"] + sorted(c for c in set(pairwise["column"]) if c.startswith("cap/"))
    parts = []
    for run in [r for r in dict.fromkeys(pairwise["run"]) if r != base]:
        for col in columns:
            s = sign.get((run, base)) if col in claims else None
            claim = s * claims[col] if s is not None else None
            parts.append(conclusion_text(verdict(pairwise, run, col), claim, CLAIM_TEXT if claim is not None else ""))
    if lift is not None:
        for run in [r for r in dict.fromkeys(lift["run"]) if r != "base"]:
            parts.append("Against the starting checkpoint: " + conclusion_text(verdict(lift, run)))
    return "\n\n".join(parts)


def ablation_metrics(pairwise: Any, lift: Any | None) -> dict[str, dict[str, Any]]:
    """report/delta|mde/<arm>/<column> for the arms' comparison, and ablation/lift/<arm> (the suite
    average against the starting checkpoint: value, n paired, 95% CI)."""
    from ..report.compare import delta_metrics

    out = delta_metrics(pairwise)
    if lift is not None:
        for r in lift[(lift["column"] == "average") & lift["delta"].notna()].itertuples():
            out[f"ablation/lift/{r.run}"] = {
                "value": float(r.delta),
                "n": int(r.n_paired),
                "ci95": [float(r.delta_lo), float(r.delta_hi)],
            }
    return out
