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


def test_sft_if_prompts_that_match_the_eval_benchmark_are_quarantined(tmp_path, stage_config):
    """10_data_sft_mix's default IFEval-style SFT prompts (seed 2000) against the real quarantine
    registry: a different seed does not keep the texts apart (70 base tasks x 24 instructions
    repeat: 2 of the 64 equal a verifiable-suite ifeval_constraints prompt, seed 7001), so every such
    row is quarantined, with the near matches; nothing left shares a prompt with the benchmark."""
    from nebula_utils.data.mixing import write_mixed_version
    from nebula_utils.data.sources import ifeval_constraint_prompts
    from nebula_utils.data.versions import load_version, read_manifests
    from nebula_utils.stages import decontam as C
    from nebula_utils.stages.data_sft_mix import sft_parts
    from tests.conftest import build_stage_config

    mix = build_stage_config("10_data_sft_mix", sft_math_tasks=[], sft_code_n=0)
    version = write_mixed_version(sft_parts(mix, tmp_path), "sft", tmp_path / "sft", 0, name="if").path
    cfg = stage_config("15_decontam", data=str(version), shared_data_dir=str(tmp_path / "absent"))
    ds = load_version(version)
    bench = set(ifeval_constraint_prompts(250, 7001).dataset["prompt"])
    verbatim = {r["id"] for r in ds if r["messages"][0]["content"] in bench}
    assert len(ds) == 64 and len(verbatim) == 2
    info = C.write_decontaminated(
        cfg, ds, C.dedup_rows(cfg, ds), C.decontaminate(cfg, ds), tmp_path / "out", tmp_path / "q.jsonl"
    )
    quarantined = {json.loads(line)["id"] for line in (tmp_path / "q.jsonl").read_text().splitlines()}
    assert verbatim <= quarantined
    kept = load_version(info.path)
    assert not {m[0]["content"] for m in kept["messages"]} & bench and not set(kept["id"]) & quarantined
    step = read_manifests(info.path)["processing"]["steps"][-1]
    assert step["count_in"] == 64 == step["count_out"] + step["filtered"] + step["quarantined"]
    assert step["quarantined"] == len(quarantined)


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
