"""The OPD-vs-MOPD smoke ablation end to end through the real runner on tiny-random: both arms at
the same sample budget, the routed arm really uses its second teacher, and the ablation notebook
renders its comparison and conclusion to HTML."""

from __future__ import annotations

import json

import pytest

from nebula_utils.ablation import load_ablation
from nebula_utils.runner import run_ablation
from tests.conftest import REPO

SMOKE_ABLATION = REPO / "params" / "ablations" / "opd_vs_mopd_smoke.yaml"


def metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


@pytest.mark.slow
def test_smoke_ablation_compares_opd_and_mopd_at_an_equal_budget(tmp_path, tiny_model_path):
    abl = load_ablation(SMOKE_ABLATION, tmp_path)
    status = run_ablation(abl, echo=print)
    assert set(status.values()) == {"ran"} and len(status) == 6  # data once, 2 x (MOPD, eval), the report
    opd, mopd = (metrics(v.pipeline.step("51_mopd").run_dir) for v in abl.variants)
    assert opd["train/samples"]["value"] == mopd["train/samples"]["value"] == 4
    assert opd["mopd/default/samples"]["value"] == 4 and "mopd/code/samples" not in opd  # one teacher
    assert mopd["mopd/code/samples"]["value"] > 0 and mopd["mopd/pool/loads"]["value"] == 2
    report = abl.report.run_dir
    assert metrics(report)["ablation/equal_budget"]["value"] == 1
    conclusion = (report / "conclusion.md").read_text()
    assert "mopd" in conclusion and "opd" in conclusion
    html = (tmp_path / "reports" / "opd_vs_mopd_smoke.html").read_text()
    assert "Equal budgets" in html and "In&nbsp;[" not in html
