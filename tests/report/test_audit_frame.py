"""The report's preference-audit table: found through each row's lineage, nearest training run first."""

from __future__ import annotations

from nebula_utils.report.compare import audit_frame, load_run
from nebula_utils.report.lineage import lineage
from tests.report.run_folders import write_run


def audit_metrics(trained: float) -> dict:
    out = {}
    for cat, n in (("all", 20), ("correction_vs_sycophancy", 13)):
        out[f"audit/{cat}"] = {"value": trained, "n": n, "ci95": [trained - 0.1, trained + 0.1]}
        out[f"audit_ref/{cat}"] = {"value": 0.5, "n": n, "ci95": [0.3, 0.7]}
    return out


def test_rows_show_the_audit_of_the_nearest_preference_run(tmp_path):
    root = tmp_path / "results" / "demo"
    sft = write_run(root / "20_sft-aaaa0001", "20_sft", {"model": "tiny-random"}, {"train/loss_last": {"value": 1.0}})
    (sft / "model").mkdir()
    dpo = write_run(root / "31_dpo-aaaa0002", "31_dpo", {"model": str(sft / "model")}, audit_metrics(0.8))
    (dpo / "model").mkdir()
    ev_dpo = write_run(root / "60_eval-aaaa0003", "60_eval", {"model": str(dpo / "model")})
    ev_sft = write_run(root / "60_eval-aaaa0004", "60_eval", {"model": str(sft / "model")})
    runs = [load_run(ev_sft, "sft"), load_run(ev_dpo, "dpo")]
    frame = audit_frame(runs, [lineage(r.path) for r in runs])
    assert list(frame["run"]) == ["dpo", "dpo"]  # the SFT row has no preference run in its lineage
    assert list(frame["category"]) == ["all", "correction_vs_sycophancy"]
    first = frame.iloc[0]
    assert first["trained by"] == "31_dpo 31_dpo-aaaa0002" and first["trained"] == "0.80 [0.70, 0.90]"
    assert first["reference"] == "0.50 [0.30, 0.70]" and first["implicit reward"] == "—" and first["n"] == 20
