"""Stage 90_report: compare finished runs read from their folders under results/ (never live objects).

The comparison itself (pairing by item id, paired/stratified bootstrap, marks) is
nebula_utils.report.compare; figures are nebula_utils.report.plots; lineage walks are
nebula_utils.report.lineage. The runner renders the executed notebook to
`<results root>/reports/<report_name>.html` after the step (see `html_report_path`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError, StageConfig, doc
from ._shared import check_comparison


@dataclass
class ReportStageConfig(StageConfig):
    runs: list[str] = doc(
        'run folders to compare (pipelines pass ["@60_eval_base", ...]); [] = every complete '
        "60_eval run under results/"
    )
    labels: list[str] = doc("one label per run; [] = the run ids")
    baseline: int | str = doc("the baseline row: its index in `runs` or its label")
    report_name: str = doc("writes <results root>/reports/<report_name>.html")
    bootstrap_resamples: int = doc("paired-bootstrap resamples (1000 keeps the CI endpoints stable to ~0.01 at n=100)")
    tradeoff_axes: list[str] = doc("two capabilities for the trade-off scatter; [] = the first two")
    target_effect: float = doc(
        "the change the power table sizes benchmarks for: items per benchmark for a minimum detectable effect of this"
    )

    def check(self) -> None:
        if self.tradeoff_axes and len(self.tradeoff_axes) != 2:
            raise ConfigError(f"key 'tradeoff_axes': name two capabilities or none, got {self.tradeoff_axes}")
        check_comparison(self)

    @classmethod
    def html_report_path(cls, params: Mapping[str, Any]) -> Path:
        """Where the runner writes the rendered report for a step with these parameters."""
        return html_path(params.get("report_name") or "report", params.get("run_dir") or "")


def html_path(report_name: str, run_dir: str | Path = "") -> Path:
    """<results root>/reports/<name>.html; the results root is the run folder's grandparent
    (results/<pipeline>/<run id>), or the results root (env NEBULA_RESULTS) for a run without one."""
    from ..paths import results_root

    root = Path(run_dir).parent.parent if run_dir else results_root()
    return root / "reports" / f"{report_name}.html"


def display_bases(run_dir: str | Path = "") -> dict[str, Path]:
    """{display prefix: folder} for report.lineage.short_path: paths in the repository read
    'results/demo/…', paths under a results root elsewhere '<results>/demo/…', and siblings of the
    repository '../shared/data'; nothing on the page shows an absolute path."""
    from ..paths import REPO_ROOT, results_root

    root = Path(run_dir).parent.parent if run_dir else results_root()
    return {"": REPO_ROOT, "<results>/": root, "../": REPO_ROOT.parent}
