"""Stage 15_decontam: the write step balances and fills the manifests; the notebook runs."""

from __future__ import annotations

import json

import pytest

from tests.factories import small_sft_version


def test_write_decontaminated_balances_and_fills_the_manifests(tmp_path, stage_config):
    from nebula_utils.data.versions import load_version, read_manifests
    from nebula_utils.stages import decontam as C

    version = small_sft_version(tmp_path, planted=True)
    cfg = stage_config("15_decontam", data=str(version), shared_data_dir=str(tmp_path / "absent"))
    ds = load_version(version)
    dedup, decon = C.dedup_rows(cfg, ds), C.decontaminate(cfg, ds)
    info = C.write_decontaminated(cfg, ds, dedup, decon, tmp_path / "out", tmp_path / "q.jsonl")
    step = read_manifests(info.path)["processing"]["steps"][-1]
    assert step["count_in"] == 32 == step["count_out"] + step["filtered"] + step["quarantined"]
    assert step["drop_reasons"] == {"exact_duplicate": 1, "contaminated:humaneval": 1}
    assert "planted:leak" not in load_version(info.path)["id"]
    quarantined = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert [q["id"] for q in quarantined] == ["planted:leak"]
    iso = read_manifests(info.path)["evaluation_isolation"]
    assert {b["name"]: b["hits"] for b in iso["benchmarks"]}["humaneval"] == 1
    assert iso["total_hits"] == 1 and len(iso["skipped"]) == 4


@pytest.mark.parametrize("key,value", [("near_threshold", 1.5), ("num_perm", 0), ("ngram_min_overlap", -0.1)])
def test_bad_values_fail_when_the_config_is_built(stage_config, key, value):
    from nebula_utils.config import ConfigError

    with pytest.raises(ConfigError, match=f"key '{key}'"):
        stage_config("15_decontam", **{key: value})


@pytest.mark.slow
def test_notebook_runs_and_records_consumption(tmp_path, run_notebook):
    from nebula_utils.data.versions import read_manifests

    version = small_sft_version(tmp_path, planted=True)
    run = run_notebook("15_decontam", data=str(version), shared_data_dir="")
    manifests = read_manifests(run / "data")
    assert manifests["evaluation_isolation"]["checked"] and manifests["evaluation_isolation"]["skipped"]
    last = manifests["processing"]["steps"][-1]
    assert last["drop_reasons"] == {"exact_duplicate": 1, "contaminated:humaneval": 1}
    assert manifests["version"]["num_rows"] == 32 - last["filtered"] - last["quarantined"]
    assert (run / "decontam.png").is_file()
    consumers = read_manifests(version)["consumption"]["records"]
    assert [r["run_id"] for r in consumers] == [json.loads((run / "run.json").read_text())["run_id"]]
