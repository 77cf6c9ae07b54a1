"""report/newest.py: each 60_eval run tied to the training run that made its model, the newest per
label, the newest evaluation of one checkpoint; and 84_ablation_opd_vs_mopd's empty-`runs` path
built on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.report.run_folders import write_eval, write_run

SCORES = {"rg_chain_sum": np.array([1.0, 0.0, 1.0, 0.0])}


def trained(folder: Path, name: str, stage: str, config: dict) -> Path:
    run = write_run(folder / name, stage, config)
    (run / "model").mkdir()
    return run / "model"


def finished_at(eval_dir: Path, when: float) -> Path:
    info = json.loads((eval_dir / "run.json").read_text())
    (eval_dir / "run.json").write_text(json.dumps(info | {"finished": when}))
    return eval_dir


def test_each_eval_names_its_trainer_and_the_newest_per_label_wins(tmp_path):
    from nebula_utils.report.newest import newest_by_label, newest_eval_of, trained_evals

    folder = tmp_path / "demo"
    opd = trained(folder, "50_opd-aaaa0001", "50_opd", {"model": "tiny-random"})
    routed = trained(folder, "51_mopd-aaaa0002", "51_mopd", {"model": "tiny-random", "teachers": {"code": "x"}})
    old = finished_at(write_eval(folder / "60_eval-bbbb0001", str(opd), SCORES), 10.0)
    new = finished_at(write_eval(folder / "60_eval-bbbb0002", str(opd), SCORES), 20.0)
    mopd = finished_at(write_eval(folder / "60_eval-bbbb0003", str(routed), SCORES), 15.0)
    base = write_eval(folder / "60_eval-bbbb0004", "packaged:smollm2-135m-instruct", SCORES)
    evals = trained_evals(tmp_path)
    by_dir = {e.eval_dir: e for e in evals}
    assert by_dir[old].trainer == opd.parent and by_dir[old].stage == "50_opd"
    assert by_dir[mopd].config["teachers"] == {"code": "x"}
    assert by_dir[base].trainer is None and by_dir[base].stage == "" and by_dir[base].config == {}
    newest = newest_by_label(evals, lambda e: e.stage or None)
    assert (
        newest["50_opd"].eval_dir == new
        and newest["51_mopd"].eval_dir == mopd
        and set(newest) == {"50_opd", "51_mopd"}
    )
    assert newest_eval_of(evals, opd).eval_dir == new and newest_eval_of(evals, "packaged:smollm2-135m-instruct")
    assert newest_eval_of(evals, folder / "nowhere") is None


def test_opd_vs_mopd_opened_as_is_takes_the_newest_of_each_or_says_what_is_missing(
    tmp_path, monkeypatch, stage_config
):
    from nebula_utils.config import ConfigError
    from nebula_utils.stages.ablation_opd_vs_mopd import variant_runs

    monkeypatch.setenv("NEBULA_RESULTS", str(tmp_path))
    cfg = stage_config("84_ablation_opd_vs_mopd")
    folder = tmp_path / "demo"
    unrouted = trained(folder, "51_mopd-cccc0001", "51_mopd", {"model": "tiny-random", "teachers": {}})
    opd_eval = write_eval(folder / "60_eval-dddd0001", str(unrouted), SCORES)
    with pytest.raises(ConfigError, match=r"both an OPD and a MOPD model \(found: \['opd'\]\)"):
        variant_runs(cfg)
    routed = trained(folder, "51_mopd-cccc0002", "51_mopd", {"model": "tiny-random", "teachers": {"code": "x"}})
    mopd_eval = write_eval(folder / "60_eval-dddd0002", str(routed), SCORES)
    assert variant_runs(cfg) == ([str(opd_eval), str(mopd_eval)], ["opd", "mopd"])
