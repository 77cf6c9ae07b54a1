"""Compare finished runs read from their folders under results/ (never live objects).

Rows are runs, columns are benchmark scores, the suite average (the unweighted mean of benchmark
scores, as the papers report it) and per-capability averages. Each cell carries its delta against a
baseline run and a mark: up, down, or flat when the 95% paired-bootstrap interval of the delta
contains 0. Items are paired by id over `samples/<benchmark>.jsonl`; averages use a stratified
paired bootstrap (items resampled within each benchmark, then benchmark means averaged), so a
benchmark with 1,000 items does not outweigh one with 100, exactly like the average itself.

An eval run folder (written by 60_eval) holds config.yaml (`model`, `suite`, `part`), run.json,
metrics.json, samples/<benchmark>.jsonl ({id, score, prompt, response, target} per line) and
eval_summary.json ({benchmarks: {name: {score, n, ci95, capability, ...}}, ...}). A run folder
without eval_summary.json (e.g. a training run) is a row without scores: it still gets its config
hash, data version, lineage and training curve.

Each row's lineage (checkpoints, training runs, data versions with their manifests) comes from
nebula_utils.report.lineage.

Each compared cell also carries its minimum detectable effect (stats.minimum_detectable_effect:
the smallest delta whose paired 95% interval would exclude 0 at the observed variance; averages
combine their benchmarks' MDEs as the stratified bootstrap does), so "flat" reads either as "no
effect" (MDE small) or "too few items" (MDE large).

The HTML report is rendered by the runner after the notebook has run (report.html.render_html
on the executed notebook): the notebook cannot render itself because papermill only writes the
last cell's outputs after that cell ends. A notebook executed by hand is rendered with
`nebula render <executed.ipynb> [--out file.html]`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..config import ConfigError
from ..io import iter_jsonl, read_json
from ..stats import (
    DEFAULT_RESAMPLES,
    Z95,
    Estimate,
    Power,
    mde_of_mean,
    mean_of_estimates,
    minimum_detectable_effect,
    paired_bootstrap,
)
from .lineage import data_version_label, lineage

MARKS = {"up": "▲", "down": "▼", "flat": "≈", "baseline": "", "n/a": "?"}


# --------------------------------------------------------------------------- reading run folders


@dataclass
class RunResult:
    path: Path
    label: str
    run_id: str
    stage: str
    config: dict[str, Any]
    benchmarks: dict[str, dict[str, Any]]  # name -> {score, n, ci95, capability}
    samples: dict[str, dict[str, float]] = field(default_factory=dict)  # benchmark -> {item id: score}
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # metrics.json "metrics"

    @property
    def config_hash(self) -> str:
        return self.run_id.rsplit("-", 1)[-1]

    def capabilities(self) -> dict[str, list[str]]:
        caps: dict[str, list[str]] = {}
        for name, bench in self.benchmarks.items():
            caps.setdefault(bench.get("capability") or "other", []).append(name)
        return caps


def read_samples(path: Path) -> dict[str, float]:
    """{item id: score} from a samples file; a missing key or a repeated id names file and line."""
    scores: dict[str, float] = {}
    for lineno, row in iter_jsonl(path):
        if "id" not in row or "score" not in row:
            raise ValueError(f"{path}:{lineno}: a sample needs 'id' and 'score' (has {', '.join(sorted(row))})")
        key = str(row["id"])
        if key in scores:
            raise ValueError(f"{path}:{lineno}: duplicate item id {key!r}")
        try:
            scores[key] = float(row["score"])
        except (TypeError, ValueError):
            raise ValueError(f"{path}:{lineno}: score {row['score']!r} is not a number") from None
    return scores


def _benchmarks_from_metrics(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Fallback when eval_summary.json is absent: the eval/<benchmark> entries of metrics.json."""
    if not (run_dir / "metrics.json").is_file():
        return {}
    metrics = read_json(run_dir / "metrics.json").get("metrics", {})
    out = {}
    for name, entry in metrics.items():
        bench = name.removeprefix("eval/")
        if name.startswith("eval/") and bench != "average" and not bench.startswith("capability/"):
            out[bench] = {"score": entry["value"], "n": entry.get("n"), "ci95": entry.get("ci95"), "capability": None}
    return out


def load_run(path: str | Path, label: str = "") -> RunResult:
    """A complete run folder with its benchmark scores and per-item samples (if it is an eval run)."""
    run_dir = Path(path)
    info_path = run_dir / "run.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run folder (no run.json)")
    info = read_json(info_path)
    if info.get("status") != "complete":
        raise ValueError(f"{info_path}: status is {info.get('status')!r}, not 'complete'; rerun that step first")
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    summary_path = run_dir / "eval_summary.json"
    if summary_path.is_file():
        summary = read_json(summary_path)
        if not isinstance(summary.get("benchmarks"), dict):
            raise ValueError(f"{summary_path}: key 'benchmarks' must be a mapping")
        benchmarks = {name: dict(b) for name, b in summary["benchmarks"].items()}
    else:
        benchmarks = _benchmarks_from_metrics(run_dir)
    missing = [name for name, b in benchmarks.items() if "score" not in b]
    if missing:
        raise ValueError(f"{summary_path}: benchmark '{missing[0]}' has no 'score'")
    samples = {}
    for name, bench in benchmarks.items():
        file = run_dir / "samples" / f"{name}.jsonl"
        if not file.is_file() and bench.get("path"):
            file = run_dir / bench["path"]  # an absolute path stays absolute under `/`
        if file.is_file():
            samples[name] = read_samples(file)
    run_id = info.get("run_id") or run_dir.name
    metrics = read_json(run_dir / "metrics.json").get("metrics", {}) if (run_dir / "metrics.json").is_file() else {}
    return RunResult(run_dir, label or run_id, run_id, info.get("stage", ""), config, benchmarks, samples, metrics)


def find_eval_runs(root: str | Path) -> list[Path]:
    """Every complete 60_eval run folder under a results root (results/<pipeline>/<run id>)."""
    out = []
    for info in sorted(Path(root).glob("*/*/run.json")):
        try:
            doc = read_json(info)
        except ValueError:
            continue
        if doc.get("stage") == "60_eval" and doc.get("status") == "complete":
            out.append(info.parent)
    return out


def load_runs(paths: Sequence[str | Path], labels: Sequence[str] = ()) -> list[RunResult]:
    if not paths:
        raise ConfigError("runs: no run folders given and no complete 60_eval runs found under results/")
    if labels and len(labels) != len(paths):
        raise ConfigError(f"labels: {len(labels)} labels for {len(paths)} runs")
    runs = [load_run(p, labels[i] if labels else "") for i, p in enumerate(paths)]
    seen = [r.label for r in runs]
    dup = sorted({x for x in seen if seen.count(x) > 1})
    if dup:
        raise ConfigError(f"labels: '{dup[0]}' names two runs; give each run a unique label")
    return runs


def baseline_index(runs: Sequence[RunResult], baseline: int | str) -> int:
    if isinstance(baseline, int):
        if not 0 <= baseline < len(runs):
            raise ConfigError(f"baseline: index {baseline} is out of range for {len(runs)} runs")
        return baseline
    for i, run in enumerate(runs):
        if baseline in (run.label, run.run_id, str(run.path)):
            return i
    raise ConfigError(f"baseline: '{baseline}' is not a run label (labels: {', '.join(r.label for r in runs)})")


# --------------------------------------------------------------------------- statistics


def stratified_mean(groups: Sequence[np.ndarray], resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Estimate:
    """Mean of group means with a percentile-bootstrap 95% interval, resampling within groups.

    Hand-written because stats.bootstrap_mean pools items: here every benchmark keeps its weight
    1/k in each resample, as in the suite average (5 vectorised numpy lines per group).
    """
    groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if not groups:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    draws = np.zeros(resamples)
    for g in groups:
        draws += g[rng.integers(0, g.size, size=(resamples, g.size))].mean(axis=1)
    draws /= len(groups)
    lo, hi = np.quantile(draws, [0.025, 0.975])
    value = float(np.mean([g.mean() for g in groups]))
    return Estimate(value, float(lo), float(hi), int(sum(g.size for g in groups)))


def paired_arrays(base: Mapping[str, float], other: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the items both runs answered, in one order (pairing by item id)."""
    common = sorted(set(base) & set(other))
    return np.array([base[k] for k in common]), np.array([other[k] for k in common])


def mark(delta: Estimate | None) -> str:
    """up / down / flat (the interval contains 0) / n/a (nothing to pair)."""
    if delta is None or delta.n == 0 or math.isnan(delta.value):
        return "n/a"
    if delta.contains_zero():
        return "flat"
    return "up" if delta.value > 0 else "down"


def _columns(runs: Sequence[RunResult]) -> list[tuple[str, str, list[str]]]:
    """(column, kind, benchmarks it averages) in display order: benchmarks, average, capabilities."""
    benches = sorted({b for r in runs for b in r.benchmarks})
    caps: dict[str, set[str]] = {}
    for r in runs:
        for cap, names in r.capabilities().items():
            caps.setdefault(cap, set()).update(names)
    cols = [(b, "benchmark", [b]) for b in benches]
    if benches:
        cols.append(("average", "average", benches))
    cols += [(f"cap/{c}", "capability", sorted(caps[c])) for c in sorted(caps)]
    return cols


def _own_estimate(run: RunResult, names: list[str], resamples: int, seed: int) -> Estimate | None:
    present = [n for n in names if n in run.benchmarks]
    if not present:
        return None
    value = mean_of_estimates([float(run.benchmarks[n]["score"]) for n in present])
    if len(present) == 1 and run.benchmarks[present[0]].get("ci95"):
        b = run.benchmarks[present[0]]
        return Estimate(value, float(b["ci95"][0]), float(b["ci95"][1]), int(b.get("n") or 0))
    groups = [np.array(list(run.samples[n].values())) for n in present if n in run.samples]
    est = stratified_mean(groups, resamples, seed) if len(groups) == len(present) else None
    return Estimate(value, est.low, est.high, est.n) if est else Estimate(value, math.nan, math.nan, 0)


def _delta(
    base: RunResult, run: RunResult, names: list[str], resamples: int, seed: int
) -> tuple[Estimate | None, int, list[Power]]:
    """Paired delta run - base over the benchmarks both have samples for: (estimate, n benchmarks,
    each benchmark's minimum detectable effect)."""
    pairs = [paired_arrays(base.samples[n], run.samples[n]) for n in names if n in base.samples and n in run.samples]
    pairs = [(a, b) for a, b in pairs if a.size]
    if not pairs:
        return None, 0, []
    powers = [minimum_detectable_effect(a, b) for a, b in pairs]
    if len(pairs) == 1:
        return paired_bootstrap(pairs[0][0], pairs[0][1], resamples, seed), 1, powers
    return stratified_mean([b - a for a, b in pairs], resamples, seed), len(pairs), powers


def _power_fields(powers: list[Power], target: float) -> dict[str, Any]:
    """mde (an average's combines its benchmarks'), the rule that chose it, and the items per
    benchmark an MDE of `target` would need."""
    if not powers:
        return {"mde": math.nan, "mde_basis": "", "items_for_target": 0}
    if len(powers) == 1:
        return {"mde": powers[0].mde, "mde_basis": powers[0].basis, "items_for_target": powers[0].items_for(target)}
    mde = mde_of_mean([p.mde for p in powers])
    per_bench = float(np.mean([p.n for p in powers]))
    need = max(per_bench * (mde / target) ** 2, Z95**2 * (1 - target) / target) if target > 0 else 0
    bases = sorted({p.basis for p in powers})
    return {"mde": mde, "mde_basis": bases[0] if len(bases) == 1 else "mixed", "items_for_target": math.ceil(need)}


def comparison(
    runs: Sequence[RunResult],
    baseline: int | str = 0,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    target_effect: float = 0.05,
):
    """The long-form comparison: one row per (run, column) with score, CI, delta, delta CI, mark,
    minimum detectable effect (`mde`, `mde_basis`) and the items per benchmark an MDE of
    `target_effect` would need (`items_for_target`)."""
    import pandas as pd

    base_i = baseline_index(runs, baseline)
    base = runs[base_i]
    rows = []
    for i, run in enumerate(runs):
        for col, kind, names in _columns(runs):
            own = _own_estimate(run, names, resamples, seed)
            delta, n_bench, powers = (None, 0, []) if i == base_i else _delta(base, run, names, resamples, seed)
            rows.append(
                {
                    "run": run.label,
                    "column": col,
                    "kind": kind,
                    "score": own.value if own else math.nan,
                    "ci_lo": own.low if own else math.nan,
                    "ci_hi": own.high if own else math.nan,
                    "n": own.n if own else 0,
                    "delta": delta.value if delta else math.nan,
                    "delta_lo": delta.low if delta else math.nan,
                    "delta_hi": delta.high if delta else math.nan,
                    "n_paired": delta.n if delta else 0,
                    "benchmarks_paired": n_bench,
                    "mark": "baseline" if i == base_i else mark(delta),
                }
                | _power_fields(powers, target_effect)
            )
    return pd.DataFrame(
        rows,
        columns=[
            "run",
            "column",
            "kind",
            "score",
            "ci_lo",
            "ci_hi",
            "n",
            "delta",
            "delta_lo",
            "delta_hi",
            "n_paired",
            "benchmarks_paired",
            "mark",
            "mde",
            "mde_basis",
            "items_for_target",
        ],
    )


def mark_label(mark_name: str, mde: float = math.nan) -> str:
    """'▲ up', '▼ down', '≈ flat (MDE ±0.12)': a flat mark says how large a change could have shown."""
    text = f"{MARKS.get(mark_name, '')} {mark_name}".strip()
    if mark_name == "flat" and not math.isnan(mde):
        text += f" (MDE ±{mde:.2g})" if mde < 0.1 else f" (MDE ±{mde:.2f})"
    return text


def _cell(row) -> str:
    if math.isnan(row.score):
        return "—"
    if row.mark == "baseline":
        return f"{row.score:.3f} (baseline)"
    if math.isnan(row.delta):
        return f"{row.score:.3f} (Δ n/a)"
    return f"{row.score:.3f} ({row.delta:+.3f} {mark_label(row.mark, row.mde)})"


def summary_table(runs: Sequence[RunResult], long, lineages: Sequence[dict] | None = None):
    """The report table: rows = runs; benchmark/average/capability cells '0.620 (+0.050 ▲ up)';
    then model, config hash and data version per row."""
    import pandas as pd

    cells = long.assign(cell=[_cell(r) for r in long.itertuples()])
    order = list(dict.fromkeys(long["column"]))
    table = cells.pivot(index="run", columns="column", values="cell").reindex(columns=order)
    table = table.reindex([r.label for r in runs])
    # Training metrics (final loss...) of rows that have them, e.g. an ablation over 20_sft runs.
    for name in sorted({m for r in runs for m in r.metrics if m.startswith("train/")}):
        table[name] = [r.metrics.get(name, {}).get("value") for r in runs]
    table["model"] = [str(r.config.get("model", "")) for r in runs]
    table["config hash"] = [r.config_hash for r in runs]
    table["data version"] = [data_version_label(lin) for lin in (lineages or [lineage(r.path) for r in runs])]
    table.columns.name = None
    return pd.DataFrame(table)


AUDIT_PREFIXES = ("audit_ref", "audit", "audit_reward")  # before, after, implicit reward (preference_audit)


def audit_frame(runs: Sequence[RunResult], trees: Sequence[Mapping[str, Any]]):
    """The preference audit of each row: the nearest training run in its lineage that logged
    `audit*/<category>` metrics (31_dpo, 32_kto, 33_rsft); one row per (report row, category) with
    the reference's and the trained model's preference and the implicit-reward accuracy, each
    'value [low, high]', and n pairs. Rows without such a run are left out."""
    import pandas as pd

    from .lineage import iter_nodes

    rows = []
    for run, tree in zip(runs, trees):
        for _, node in iter_nodes(tree):
            path = Path(node["path"]) / "metrics.json" if node["kind"] == "run" else None
            metrics = read_json(path).get("metrics", {}) if path and path.is_file() else {}
            cats = sorted({k.split("/", 1)[1] for k in metrics if k.startswith("audit/")}, key=lambda c: c != "all")
            if not cats:
                continue
            for cat in cats:
                row = {"run": run.label, "trained by": f"{node['stage']} {node['run_id']}", "category": cat}
                for prefix, label in zip(AUDIT_PREFIXES, ("reference", "trained", "implicit reward")):
                    m = metrics.get(f"{prefix}/{cat}")
                    row[label] = f"{m['value']:.2f} [{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}]" if m else "—"
                row["n"] = metrics[f"audit/{cat}"].get("n")
                rows.append(row)
            break
    columns = ["run", "trained by", "category", "reference", "trained", "implicit reward", "n"]
    return pd.DataFrame(rows, columns=columns)


def funnel_table(versions: Sequence[Mapping[str, Any]]):
    """Counts in/out per processing step of each data version (from processing manifests)."""
    import pandas as pd

    rows = []
    for v in versions:
        name = f"{Path(v['path']).parent.name}/{Path(v['path']).name}"
        for s in v["manifests"]["processing"]["steps"]:
            rows.append(
                {
                    "version": name,
                    "step": s["name"],
                    "in": s["count_in"],
                    "out": s["count_out"],
                    "filtered": s["filtered"],
                    "quarantined": s["quarantined"],
                }
            )
    return pd.DataFrame(rows, columns=["version", "step", "in", "out", "filtered", "quarantined"])


def delta_metrics(long) -> dict[str, dict[str, Any]]:
    """report/delta/<run>/<column> entries for metrics.json (value, n paired, 95% CI) and
    report/mde/<run>/<column> (the minimum detectable effect, n paired)."""
    out = {}
    for r in long[(long["mark"] != "baseline") & long["delta"].notna()].itertuples():
        out[f"report/delta/{r.run}/{r.column}"] = {
            "value": float(r.delta),
            "n": int(r.n_paired),
            "ci95": [float(r.delta_lo), float(r.delta_hi)],
        }
        out[f"report/mde/{r.run}/{r.column}"] = {"value": float(r.mde), "n": int(r.n_paired), "ci95": None}
    return out


def _sg(x: float, digits: int = 3) -> str:
    """A signed number with a typographic minus (names keep their hyphens)."""
    return f"{x:+.{digits}f}".replace("-", "\u2212")


def _named(rows) -> str:
    return ", ".join(f"{r.column} ({_sg(r.delta)})" for r in rows)


def results_text(long, baseline_label: str, target_effect: float = 0.05) -> str:
    """The results as sentences (markdown), one paragraph per compared run: the suite average's
    change with its interval, which benchmarks moved which way, and which flat ones were too small
    to show a change of `target_effect` (their MDE exceeds it)."""
    out = []
    for run in [r for r in dict.fromkeys(long["run"]) if r != baseline_label]:
        rows = long[(long["run"] == run) & long["delta"].notna()]
        if rows.empty:
            out.append(f"**{run}** shares no scored items with **{baseline_label}**: nothing to compare.")
            continue
        bench = rows[rows["kind"] == "benchmark"]
        text = [f"**{run}** against **{baseline_label}**:"]
        avg = rows[rows["kind"] == "average"]
        if not avg.empty:
            a = avg.iloc[0]
            base = long[(long["run"] == baseline_label) & (long["column"] == "average")]["score"].iloc[0]
            text.append(
                f"suite average {base:.3f} → {a.score:.3f} ({_sg(a.delta)}, 95% CI [{_sg(a.delta_lo)}, "
                f"{_sg(a.delta_hi)}], {mark_label(a['mark'], a.mde)}; {a.n_paired} items over "
                f"{a.benchmarks_paired} benchmarks)."
            )
        for name, label in (("up", "Better"), ("down", "Worse")):
            moved = list(bench[bench["mark"] == name].itertuples())
            if moved:
                text.append(f"{label} on {_named(moved)}.")
        flat = list(bench[bench["mark"] == "flat"].itertuples())
        if flat:
            parts = [f"{r.column} ({_sg(r.delta)}, MDE ±{r.mde:.2f} at n = {r.n_paired})" for r in flat]
            text.append("Flat on " + ", ".join(parts) + ".")
        weak = [r for r in flat if r.mde > target_effect]
        if weak:
            need = max(r.items_for_target for r in weak)
            text.append(
                f"{'That' if len(weak) == 1 else 'Those'} flat result{'s' if len(weak) > 1 else ''} cannot rule out "
                f"a change of ±{target_effect:g}: resolving it needs about {need:,} items per benchmark."
            )
        out.append(" ".join(text))
    return "\n\n".join(out)
