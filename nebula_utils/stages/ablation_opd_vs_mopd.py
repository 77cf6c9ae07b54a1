"""Stage 84_ablation_opd_vs_mopd: OPD against MOPD (routed domain specialists) at an equal sample
budget, read from the variants' evaluation runs.

The grid (params/ablations/opd_vs_mopd.yaml) varies one thing: 51_mopd's routing table. `{}`
sends every prompt to the single teacher, which is plain OPD exactly (the local MOPD trainer with
one teacher reproduces TRL's DistillationTrainer bit for bit: tests/train/test_mopd.py); the other
value routes each task to its specialist. Everything else, the sample budget included, is the
base pipeline's, so the budgets are equal by construction; the notebook still checks them from
the training runs' metrics. The comparison itself is nebula_utils.report.compare (paired
bootstrap, MDE) and the conclusion nebula_utils.report.verdict. The runner renders the notebook
to <results root>/reports/<report_name>.html.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError, StageConfig, doc
from ..report.lineage import nearest_run
from ._shared import check_comparison

TRAINING_STAGES = ("50_opd", "51_mopd")


@dataclass
class OPDvsMOPDConfig(StageConfig):
    runs: list[str] = doc(
        "60_eval run folders, one per variant (the ablation passes them); [] = the newest evaluations of an "
        "OPD- and a MOPD-trained model under the results root"
    )
    labels: list[str] = doc("one label per run (the ablation passes [opd, mopd])")
    baseline: int | str = doc("the OPD row: its index in `runs` or its label")
    report_name: str = doc("writes <results root>/reports/<report_name>.html")
    bootstrap_resamples: int = doc("paired-bootstrap resamples (1000 keeps the CI endpoints stable to ~0.01 at n=100)")
    target_effect: float = doc("the change the power table sizes benchmarks for (a score fraction: 0.05 = 5 points)")
    claim_points: float = doc("the paper's effect the verdict is set against, in points (MOPD: +4.18 average)")

    def check(self) -> None:
        if len(self.runs) == 1:
            raise ConfigError("key 'runs': an OPD and a MOPD evaluation run are needed, got 1")
        check_comparison(self)

    @classmethod
    def html_report_path(cls, params: Mapping[str, Any]) -> Path:
        from .report import html_path

        return html_path(params.get("report_name") or "opd_vs_mopd", params.get("run_dir") or "")


def _arm(e) -> str | None:
    """opd | mopd for an evaluation of a distilled model (by its training run), None otherwise."""
    if e.stage not in TRAINING_STAGES:
        return None
    return "mopd" if e.stage == "51_mopd" and e.config.get("teachers") else "opd"


def variant_runs(cfg: OPDvsMOPDConfig) -> tuple[list[str], list[str]]:
    """(runs, labels) to compare: the configured ones, or with empty `runs` (the notebook opened as
    is) the newest complete evaluation of a plain-OPD model and of a routed-MOPD model under the
    results root, found by the training run that owns each evaluated checkpoint."""
    from ..paths import results_root
    from ..report.newest import newest_by_label, trained_evals

    if cfg.runs:
        return list(cfg.runs), list(cfg.labels)
    newest = newest_by_label(trained_evals(results_root()), _arm)
    if set(newest) != {"opd", "mopd"}:
        raise ConfigError(
            f"key 'runs': empty, and {results_root()} has no complete evaluation of both an OPD and a MOPD model "
            f"(found: {sorted(newest) or 'none'}); run `nebula run params/ablations/opd_vs_mopd.yaml` or pass runs"
        )
    print(f"runs: the newest OPD and MOPD evaluations under {results_root()}")
    return [str(newest["opd"].eval_dir), str(newest["mopd"].eval_dir)], ["opd", "mopd"]


def budget_table(labels: Sequence[str], trees: Sequence[Mapping[str, Any]]) -> Any:
    """One row per variant: its training run, samples and steps, the routing and each teacher's rows."""
    import pandas as pd
    import yaml

    from ..io import read_json

    rows = []
    for label, tree in zip(labels, trees):
        path = nearest_run(tree, TRAINING_STAGES)
        if path is None:
            rows.append({"run": label, "training run": "(none in lineage)"})
            continue
        metrics = read_json(path / "metrics.json")["metrics"]
        config = yaml.safe_load((path / "config.yaml").read_text())
        per_teacher = {
            k.split("/")[1]: int(v["value"])
            for k, v in metrics.items()
            if k.endswith("/samples") and k.startswith("mopd/")
        }
        rows.append(
            {
                "run": label,
                "training run": path.name,
                "samples": int(metrics["train/samples"]["value"]),
                "steps": int(metrics["train/steps"]["value"]),
                "teachers used": sum(1 for v in per_teacher.values() if v) or 1,
                "routing": ", ".join(
                    f"{k} -> {Path(str(v)).parent.name or v}" for k, v in (config.get("teachers") or {}).items()
                )
                or "(none: every prompt to the one teacher)",
                "rows per teacher": ", ".join(f"{k}: {v}" for k, v in per_teacher.items() if v) or "(one teacher)",
                "final divergence": metrics.get("train/loss_last", {}).get("value"),
            }
        )
    return pd.DataFrame(rows)


def equal_budgets(table: Any) -> bool:
    return "samples" in table and table["samples"].notna().all() and table["samples"].nunique() == 1
