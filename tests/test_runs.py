"""runs.resolve_inputs: what an empty or relative input becomes when a notebook starts (JupyterLab
opens notebooks with their own parameters cell, so empty inputs are the common case)."""

from __future__ import annotations

import json

import pytest


def _complete_run(root, name, stage, sub, finished):
    run = root / "pipe" / name
    (run / sub).mkdir(parents=True)
    (run / "config.yaml").write_text("{}\n")
    (run / "run.json").write_text(json.dumps({"stage": stage, "status": "complete", "finished": finished}))
    return run / sub


def test_empty_teacher_is_the_newest_complete_sft_model_and_specs_are_kept(tmp_path, monkeypatch):
    from nebula_utils.runs import resolve_inputs
    from nebula_utils.stages.opd import OPDStageConfig

    monkeypatch.setenv("NEBULA_RESULTS", str(tmp_path))
    values = {"teacher": "", "data": "", "seed": 0}
    with pytest.raises(FileNotFoundError, match="key 'teacher' is empty and no complete 20_sft run"):
        resolve_inputs(OPDStageConfig, dict(values), tmp_path / "run")
    _complete_run(tmp_path, "20_sft-old", "20_sft", "model", finished=1.0)
    newest = _complete_run(tmp_path, "20_sft-new", "20_sft", "model", finished=2.0)
    resolved = dict(values)
    notes = resolve_inputs(OPDStageConfig, resolved, tmp_path / "run")
    assert resolved["teacher"] == str(newest) and "newest complete 20_sft" in notes["teacher"]
    assert "built-in rl sample" in notes["data"]  # no 16_curriculum run: the small built-in version
    for spec in ("tiny-random", "packaged:smollm2-135m-instruct", "Qwen/Qwen3-8B"):
        kept = {"teacher": spec, "data": resolved["data"]}
        resolve_inputs(OPDStageConfig, kept, tmp_path / "run")
        assert kept["teacher"] == spec  # a model spec is never turned into a path


def test_relative_checkpoint_folder_is_made_absolute_under_the_repository(tmp_path, monkeypatch):
    from nebula_utils.paths import REPO_ROOT
    from nebula_utils.runs import resolve_inputs
    from nebula_utils.stages.opd import OPDStageConfig

    monkeypatch.setenv("NEBULA_RESULTS", str(tmp_path))
    values = {"teacher": "nebula_utils", "data": str(tmp_path)}
    resolve_inputs(OPDStageConfig, values, tmp_path / "run")
    assert values["teacher"] == str(REPO_ROOT / "nebula_utils")


def test_an_empty_data_version_is_passed_over_for_the_newest_non_empty_one(tmp_path, monkeypatch):
    from nebula_utils.runs import resolve_inputs
    from nebula_utils.stages.sft import SFTStageConfig

    monkeypatch.setenv("NEBULA_RESULTS", str(tmp_path))
    full = _complete_run(tmp_path, "16_curriculum-a", "16_curriculum", "base", finished=1.0)
    (full / "version.json").write_text(json.dumps({"num_rows": 5}))
    empty = _complete_run(tmp_path, "16_curriculum-b", "16_curriculum", "base", finished=2.0)
    (empty / "version.json").write_text(json.dumps({"num_rows": 0}))
    values = {"data": ""}
    resolve_inputs(SFTStageConfig, values, tmp_path / "run")
    assert values["data"] == str(full)


def test_sft_data_without_rows_is_a_clear_error(tmp_path):
    from nebula_utils.train.sft import load_sft_dataset

    path = tmp_path / "rows.jsonl"
    answered = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
    path.write_text(answered + '{"messages": [{"role": "user", "content": "hi"}]}\n')
    assert load_sft_dataset(str(path))["messages"] == [json.loads(answered)["messages"]]  # prompt-only row left out
    prompt_only = tmp_path / "prompt_only.jsonl"
    prompt_only.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(ValueError, match="has no rows"):
        load_sft_dataset(str(prompt_only))
    from nebula_utils.data.manifests import processing_step
    from nebula_utils.data.schema import to_dataset
    from nebula_utils.data.versions import save_version

    step = processing_step("test_rows", count_in=0, count_out=0)
    save_version(
        to_dataset("sft", []), tmp_path / "empty", "sft", {"name": "t", "path": "t", "license": "MIT"}, [step]
    )
    with pytest.raises(ValueError, match="has no rows"):
        load_sft_dataset(str(tmp_path / "empty"))


def test_item_progress_is_throttled_and_always_writes_the_last_item(tmp_path, monkeypatch):
    from nebula_utils.runs import PROGRESS_ENV, ItemProgress

    log = tmp_path / "p.log"
    monkeypatch.setenv(PROGRESS_ENV, str(log))
    progress = ItemProgress("eval rg_chain_sum", every_s=3600)
    for done in range(1, 11):
        progress(done, 10, tokens=5 * done)
    (line,) = log.read_text().splitlines()  # nine throttled, the tenth (the last) written
    assert line.startswith("eval rg_chain_sum 10/10 · ") and " tok/s · ETA 0m00s" in line
    ItemProgress("x", every_s=0)(1, 4, tokens=0)
    assert log.read_text().splitlines()[-1].startswith("x 1/4 · ETA ")  # no tokens counted: no rate
    ItemProgress("y", every_s=0)(1, 100, tokens=7)
    assert log.read_text().splitlines()[-1].endswith("· ETA --")  # under 5% done: no estimate yet
