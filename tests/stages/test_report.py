"""Stage 90_report: config checks and where the runner renders the report (the notebook run and the
comparison itself are tested in tests/report/ on fixture run folders)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize(
    "over,match",
    [
        ({"runs": ["a", "b"], "labels": ["x"]}, "key 'labels'"),
        ({"tradeoff_axes": ["math"]}, "key 'tradeoff_axes'"),
        ({"report_name": "a/b"}, "key 'report_name'"),
        ({"bootstrap_resamples": 10}, "key 'bootstrap_resamples'"),
    ],
)
def test_bad_values_fail_when_the_config_is_built(stage_config, over, match):
    from nebula_utils.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        stage_config("90_report", **over)


def test_html_lands_in_the_results_roots_reports_folder(tmp_path, monkeypatch):
    from nebula_utils.stages.report import ReportStageConfig

    run_dir = tmp_path / "results" / "demo" / "90_report-abc"
    assert ReportStageConfig.html_report_path({"report_name": "demo", "run_dir": str(run_dir)}) == Path(
        tmp_path / "results" / "reports" / "demo.html"
    )
    monkeypatch.setenv("NEBULA_RESULTS", str(tmp_path / "elsewhere"))
    assert ReportStageConfig.html_report_path({"report_name": "x"}) == (tmp_path / "elsewhere" / "reports" / "x.html")
