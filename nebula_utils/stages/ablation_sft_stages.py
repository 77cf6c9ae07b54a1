"""Stage 81_ablation_sft_stages: does each SFT stage earn its place? base -> +complex -> +patch.

Reads the evaluation runs of the model before SFT and after each of the Instruct branch's three SFT
stages (the demo's 60_eval_base, 60_eval_sft_base, 60_eval_sft_complex, 60_eval_sft). Each stage is
compared with the stage before it (paired bootstrap over the same items, MDE:
nebula_utils.report.compare) on the suite average and on its **target capabilities**: the tasks of
the mix it trained on (complex: multi-step math, code, multi-constraint IF) or, for the patch, the
weak categories 17_patch measured. The conclusion is read from the intervals
(nebula_utils.report.verdict); the whole chain (before SFT -> after the patch) is set against the
paper's +5.98 points (55.01 -> 60.99 on Qwen3-8B-nothink).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError, StageConfig, doc
from ._shared import check_comparison

STAGE_LABELS = ("before_sft", "sft_base", "sft_complex", "sft_patch")
# the task vocabulary (data.schema.TASKS) -> the suite's capability columns (report.compare "cap/<x>")
TASK_CAPABILITY = {"math_reasoning": "math", "code": "code", "complex_if": "instruction_following"}


@dataclass
class SFTStagesConfig(StageConfig):
    runs: list[str] = doc(
        "60_eval run folders in training order (before SFT, then after each SFT stage); [] = the newest "
        "evaluations of the base model and of the base, complex and patch SFT checkpoints under the results root"
    )
    labels: list[str] = doc("one label per run; [] = before_sft, sft_base, sft_complex, sft_patch")
    report_name: str = doc("writes <results root>/reports/<report_name>.html")
    bootstrap_resamples: int = doc("paired-bootstrap resamples (1000 keeps the CI endpoints stable to ~0.01 at n=100)")
    target_effect: float = doc("the change the power table sizes benchmarks for (a score fraction: 0.05 = 5 points)")
    claim_points: float = doc("the paper's gain of the three SFT stages together, in points (55.01 -> 60.99)")

    def check(self) -> None:
        if len(self.runs) == 1:
            raise ConfigError("key 'runs': at least two evaluation runs (a stage and the one before it) are needed")
        check_comparison(self)

    @classmethod
    def html_report_path(cls, params: Mapping[str, Any]) -> Path:
        from .report import html_path

        return html_path(params.get("report_name") or "sft_stages", params.get("run_dir") or "")


def sft_stage_of(trainer: Path) -> str | None:
    """sft_base | sft_complex | sft_patch for a 20_sft run, by the data version it trained on: a
    17_patch output is the patch stage, a 16_curriculum `base` / `complex` mix the first two."""
    import yaml

    from ..io import read_json
    from ..report.lineage import owning_run

    data = Path(str(yaml.safe_load((trainer / "config.yaml").read_text()).get("data", "")))
    producer = owning_run(data.resolve()) if data.is_absolute() and data.exists() else None
    stage = read_json(producer / "run.json").get("stage") if producer else None
    if stage == "17_patch":
        return "sft_patch"
    if stage == "16_curriculum" and data.name in ("base", "complex"):
        return f"sft_{data.name}"
    return None


def _trainer_of(run_dir: Path) -> tuple[Path | None, str]:
    """(the 20_sft run that wrote the `model` a run's config names, or None; that model value)."""
    import yaml

    from ..io import read_json
    from ..report.lineage import owning_run

    model = str(yaml.safe_load((run_dir / "config.yaml").read_text()).get("model", ""))
    path = Path(model)
    trainer = owning_run(path.resolve()) if path.is_absolute() and path.exists() else None
    if trainer is not None and read_json(trainer / "run.json").get("stage") != "20_sft":
        trainer = None
    return trainer, model


def _first_model(trainer: Path) -> str:
    """The model the chain of SFT runs ending at `trainer` started from (a spec or a folder)."""
    for _ in range(16):  # a chain of SFT stages is short; the cap guards a cyclic folder layout
        parent, model = _trainer_of(trainer)
        if parent is None:
            return model
        trainer = parent
    return ""


def variant_runs(cfg: SFTStagesConfig) -> tuple[list[str], list[str]]:
    """(runs, labels): the configured ones, or with empty `runs` (the notebook opened as is) the
    newest complete evaluation of each SFT stage's checkpoint under the results root, and of the
    model the first stage started from (the row before SFT) when there is one. A stage without an
    evaluation is left out (the next one is then compared with the one before it); fewer than two
    rows is an error."""
    from ..io import read_json
    from ..paths import results_root
    from ..report.compare import find_eval_runs

    if cfg.runs:
        return list(cfg.runs), list(cfg.labels) or [Path(r).name for r in cfg.runs]
    newest: dict[str, tuple[float, str, str]] = {}  # label -> (finished, eval dir, the trained-from model)
    specs: dict[str, tuple[float, str]] = {}  # model spec -> newest eval of it
    for eval_dir in find_eval_runs(results_root()):
        finished = float(read_json(eval_dir / "run.json").get("finished") or 0)
        trainer, model = _trainer_of(eval_dir)
        if trainer is None:
            specs[model] = max(specs.get(model, (0.0, "")), (finished, str(eval_dir)))
            continue
        label = sft_stage_of(trainer)
        if label:
            newest[label] = max(newest.get(label, (0.0, "", "")), (finished, str(eval_dir), _first_model(trainer)))
    found = [s for s in STAGE_LABELS[1:] if s in newest]
    runs, labels = [newest[s][1] for s in found], found
    before = specs.get(newest[found[0]][2]) if found else None
    if before:
        runs, labels = [before[1], *runs], [STAGE_LABELS[0], *labels]
    if len(runs) < 2:
        raise ConfigError(
            f"key 'runs': empty, and {results_root()} has no complete evaluations of two SFT stages (found: "
            f"{', '.join(labels) or 'none'}); run `nebula run params/pipelines/demo.yaml` (or the smoke) or pass runs"
        )
    missing = [s for s in STAGE_LABELS[1:] if s not in newest]
    print(f"runs: the newest evaluations of {', '.join(labels)} under {results_root()}")
    if missing:
        print(f"no evaluation of {', '.join(missing)}: each stage is compared with the one before it in this list")
    return runs, labels


def chain(results: Sequence[Any], resamples: int, seed: int, target_effect: float) -> list[Any]:
    """One long comparison frame per stage: that stage against the one before it."""
    from ..report import compare as rp

    return [
        rp.comparison([results[i - 1], results[i]], 0, resamples, seed, target_effect) for i in range(1, len(results))
    ]


def stage_targets(tree: Mapping[str, Any]) -> list[str]:
    """The capability columns an SFT stage targets, from the lineage of its evaluation: the weak
    categories of a 17_patch run, else the tasks of the mix its 20_sft run trained on."""
    import yaml

    from ..data.versions import load_version, read_manifests
    from ..report.lineage import iter_nodes

    for _, node in iter_nodes(tree):
        if node.get("kind") != "run" or node.get("stage") != "20_sft":
            continue
        data = Path(str(yaml.safe_load((Path(node["path"]) / "config.yaml").read_text()).get("data", "")))
        if not (data / "version.json").is_file():
            return []
        steps = read_manifests(data)["processing"]["steps"]
        weak = next((s.get("weak_categories") for s in reversed(steps) if s["name"] == "score_weakness"), None)
        tasks = weak if weak is not None else sorted(set(load_version(data)["task"]))
        return sorted({f"cap/{TASK_CAPABILITY[t]}" for t in tasks if t in TASK_CAPABILITY})
    return []


def stage_rows(labels: Sequence[str], longs: Sequence[Any], targets: Sequence[Sequence[str]]) -> Any:
    """One row per (stage, column) of interest: the average and each target capability, with the
    delta against the previous stage, its 95% CI, the MDE and the mark."""
    import pandas as pd

    rows = []
    for label, long, cols in zip(labels[1:], longs, targets):
        for col in ["average", *cols]:
            cell = long[(long["run"] == label) & (long["column"] == col)]
            if cell.empty:
                continue
            r = cell.iloc[0]
            rows.append(
                {
                    "stage": label,
                    "against": labels[labels.index(label) - 1],
                    "column": col,
                    "target": col != "average",
                    "score": r.score,
                    "delta": r.delta,
                    "delta_lo": r.delta_lo,
                    "delta_hi": r.delta_hi,
                    "n_paired": int(r.n_paired),
                    "mde": r.mde,
                    "mark": r.mark,
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "stage",
            "against",
            "column",
            "target",
            "score",
            "delta",
            "delta_lo",
            "delta_hi",
            "n_paired",
            "mde",
            "mark",
        ],
    )


def _num(x: float) -> float | None:
    return None if x != x else float(x)  # NaN (no paired items) -> null in metrics.json


def chain_metrics(table: Any) -> dict[str, dict[str, Any]]:
    """report/delta/<stage>/<column> with n and the 95% CI, for every row of stage_rows."""
    return {
        f"report/delta/{r.stage}/{r.column}": {
            "value": _num(r.delta),
            "n": int(r.n_paired),
            "ci95": [_num(r.delta_lo), _num(r.delta_hi)],
        }
        for r in table.itertuples()
    }
