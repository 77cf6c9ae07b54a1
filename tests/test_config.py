"""Layered typed configs: unknown keys, wrong types, missing files, run ids."""

from pathlib import Path

import pytest
import yaml

from nebula_utils.config import ConfigError, coerce, make_run_id
from nebula_utils.pipeline import load_pipeline
from tests.conftest import REPO


def write(tmp_path: Path, doc: dict, name="p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def sft_pipeline(**params):
    return {
        "pipeline": "t",
        "defaults": {"model": "tiny-random"},
        "steps": [{"notebook": "20_sft", "params": {"data": "x.jsonl", **params}}],
    }


def test_unknown_step_key_names_file_and_key(tmp_path):
    path = write(tmp_path, sft_pipeline(lerning_rate=0.1))
    with pytest.raises(ConfigError) as err:
        load_pipeline(path, results_root=tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "'lerning_rate'" in msg and "20_sft" in msg
    assert "\n" not in msg


def test_wrong_type_names_file_and_key(tmp_path):
    path = write(tmp_path, sft_pipeline(max_steps="many"))
    with pytest.raises(ConfigError, match=r"p\.yaml.*'max_steps'.*expected int"):
        load_pipeline(path, results_root=tmp_path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_pipeline(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [\n  - notebook: 20_sft\n  params: {")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: malformed YAML"):
        load_pipeline(bad)


def test_unknown_top_level_and_defaults_keys(tmp_path):
    doc = sft_pipeline()
    doc["stepz"] = []
    with pytest.raises(ConfigError, match="unknown key 'stepz'"):
        load_pipeline(write(tmp_path, doc), results_root=tmp_path)
    doc = sft_pipeline()
    doc["defaults"]["temperature_typo"] = 1
    with pytest.raises(ConfigError, match="defaults key 'temperature_typo'"):
        load_pipeline(write(tmp_path, doc), results_root=tmp_path)


def test_reference_must_point_to_earlier_step(tmp_path):
    doc = sft_pipeline()
    doc["steps"][0]["params"]["data"] = "@later/sft"
    with pytest.raises(ConfigError, match="not an earlier step"):
        load_pipeline(write(tmp_path, doc), results_root=tmp_path)


def test_yaml_float_quirk_and_int_widening():
    assert coerce("1e-4", float, "x") == 1e-4
    assert coerce(3, float, "x") == 3.0
    with pytest.raises(ConfigError):
        coerce(True, int, "x")
    assert coerce(["a"], list[str], "x") == ["a"]


def test_run_id_same_config_same_id_runtime_knobs_excluded(tmp_path):
    a = load_pipeline(write(tmp_path, sft_pipeline(), "a.yaml"), results_root=tmp_path).steps[0]
    b = load_pipeline(
        write(tmp_path, sft_pipeline(logging_steps=50, num_threads=1), "b.yaml"), results_root=tmp_path
    ).steps[0]
    c = load_pipeline(write(tmp_path, sft_pipeline(learning_rate=1e-3), "c.yaml"), results_root=tmp_path).steps[0]
    assert a.run_id == b.run_id  # logging and threads are runtime-only
    assert a.run_id != c.run_id
    assert a.run_id.startswith("20_sft-") and len(a.run_id) == len("20_sft-") + 8
    assert make_run_id("20_sft", a.science) == a.run_id


def test_upstream_change_propagates_downstream_only(tmp_path):
    def doc(lr):
        return {
            "pipeline": "t",
            "defaults": {"model": "tiny-random"},
            "steps": [
                {"notebook": "00_environment", "params": {"models": ["tiny-random"]}},
                {"notebook": "20_sft", "name": "sft1", "params": {"data": "x.jsonl", "learning_rate": lr}},
                {"notebook": "20_sft", "name": "sft2", "params": {"data": "x.jsonl", "model": "@sft1/model"}},
            ],
        }

    p1 = load_pipeline(write(tmp_path, doc(1e-4), "a.yaml"), results_root=tmp_path)
    p2 = load_pipeline(write(tmp_path, doc(2e-4), "b.yaml"), results_root=tmp_path)
    ids1, ids2 = [s.run_id for s in p1.steps], [s.run_id for s in p2.steps]
    assert ids1[0] == ids2[0] and ids1[1] != ids2[1] and ids1[2] != ids2[2]
    assert p1.steps[2].params["model"] == str(p1.steps[1].run_dir / "model")
    assert p1.steps[2].upstream == ["sft1"]


def test_shipped_pipelines_resolve():
    for path in sorted((REPO / "params" / "pipelines").glob("*.yaml")):
        pipeline = load_pipeline(path)
        assert pipeline.steps, path
