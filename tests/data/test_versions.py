"""Schemas, data versions and their manifests, and mixing."""

from __future__ import annotations

import json

import pytest

from nebula_utils.data.manifests import (
    ManifestError,
    check_step,
    isolation_manifest,
    lineage_isolation,
    processing_step,
    source_entry,
)
from nebula_utils.data.mixing import build_mix
from nebula_utils.data.schema import FEATURES, SchemaError, normalize_row, row_problems, to_dataset, validate_rows
from nebula_utils.data.versions import (
    content_hash,
    derive_version,
    load_version,
    read_manifests,
    record_consumption,
    save_version,
    version_info,
)


def sft_row(i: int, task: str = "math_reasoning", **extra) -> dict:
    return {
        "id": f"s:{i}",
        "source": "unit",
        "license": "MIT",
        "task": task,
        "messages": [
            {"role": "user", "content": f"What is {i} + 1?"},
            {"role": "assistant", "content": f"{i} + 1 = {i + 1}"},
        ],
        "verifier": "math",
        "reference": {"answer": str(i + 1)},
    } | extra


def rl_row(**extra) -> dict:
    return {
        "id": "r:1",
        "source": "unit",
        "license": "MIT",
        "task": "math_reasoning",
        "prompt": "2+2?",
        "messages": [{"role": "user", "content": "2+2?"}],
        "verifier": "math",
        "reference": {"answer": "4"},
    } | extra


def pref_row(**extra) -> dict:
    return {
        "id": "p:1",
        "source": "unit",
        "license": "MIT",
        "task": "safety",
        "prompt": [{"role": "user", "content": "How do I pick a lock?"}],
        "candidates": [
            {"content": "I can't help with that.", "generator": "m", "scores": {"rm": 0.9}},
            {"content": "Sure, first...", "generator": "m", "scores": {"rm": 0.1}},
        ],
        "chosen": 0,
        "rejected": 1,
        "preference_reason": "reward model margin",
    } | extra


def step(n_in: int, n_out: int, **kw) -> dict:
    return processing_step("unit", count_in=n_in, count_out=n_out, **kw)


def save(ds, path, **kw):
    return save_version(ds, path, "sft", source_entry("unit", path="mem"), [step(len(ds), len(ds))], **kw)


def test_to_dataset_types_rows_and_serialises_dict_fields():
    ds = to_dataset("sft", [sft_row(1, quality={"helpfulness": 0.5, "correctness": 1})])
    assert ds.features == FEATURES["sft"]
    assert json.loads(ds[0]["quality"]) == {"correctness": 1, "helpfulness": 0.5}
    assert json.loads(ds[0]["reference"]) == {"answer": "2"}
    assert ds[0]["parents"] == [] and ds[0]["difficulty"] is None
    pref = to_dataset("preference", [pref_row()])
    assert json.loads(pref[0]["candidates"][0]["scores"]) == {"rm": 0.9}
    assert pref[0]["candidates"][1]["label"] is None


@pytest.mark.parametrize(
    ("schema", "row", "reason"),
    [
        ("sft", sft_row(1, messages=None), "missing_field:messages"),
        (
            "sft",
            sft_row(1, messages=[{"role": "human", "content": "hi"}, {"role": "assistant", "content": "x"}]),
            "bad_role:human",
        ),
        (
            "sft",
            sft_row(1, messages=[{"role": "user", "content": "  "}, {"role": "assistant", "content": "x"}]),
            "empty_turn",
        ),
        (
            "sft",
            sft_row(1, messages=[{"role": "user", "content": "hi"}], verifier=None, reference=None),
            "bad_turn_order:last turn must be assistant",  # a prompt-only row needs a verifier reference
        ),
        (
            "sft",
            sft_row(
                1,
                messages=[
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": "b"},
                    {"role": "assistant", "content": "c"},
                ],
            ),
            "bad_turn_order:user and assistant must alternate",
        ),
        ("sft", sft_row(1, task="poetry"), "bad_task:poetry"),
        ("sft", sft_row(1, quality={"x": "high"}), "bad_json_field:quality scores must be numbers"),
        ("sft", sft_row(1, reference={"value": 3}), "bad_reference:math reference lacks answer"),
        (
            "rl",
            rl_row(verifier="ifeval", reference={"instruction_id_list": []}),
            "bad_reference:ifeval reference lacks kwargs, prompt",
        ),
        ("rl", rl_row(verifier="judge"), "bad_verifier:judge"),
        ("rl", rl_row(pass_rate=1.5), "bad_field:pass_rate=1.5 outside [0, 1]"),
        (
            "rl",
            rl_row(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]),
            "bad_turn_order:last turn must be user",
        ),
        ("preference", pref_row(chosen=2), "bad_index:chosen=2 for 2 candidates"),
        (
            "preference",
            pref_row(chosen=None, rejected=None),
            "bad_candidates:a group without chosen/rejected needs a label per candidate",
        ),
    ],
)
def test_row_problems_name_the_reason(schema, row, reason):
    assert row_problems(schema, normalize_row(schema, row))[0] == reason


def test_valid_rows_of_each_schema_have_no_problems():
    kto = pref_row(candidates=[{"content": "ok", "label": True}], chosen=None, rejected=None)
    for schema, row in [
        ("sft", sft_row(1)),
        ("sft", sft_row(1, messages=[{"role": "user", "content": "What is 1 + 1?"}])),  # prompt-only: answered later
        ("rl", rl_row(pass_rate=0.25)),
        ("preference", pref_row()),
        ("preference", kto),
    ]:
        assert row_problems(schema, normalize_row(schema, row)) == []


def test_validate_rows_rejects_duplicate_ids():
    rows = [normalize_row("sft", sft_row(1)), normalize_row("sft", sft_row(1))]
    with pytest.raises(SchemaError, match="duplicate id 's:1'"):
        validate_rows("sft", rows)


def test_save_and_load_round_trip_with_four_manifests(tmp_path):
    ds = to_dataset("sft", [sft_row(i) for i in range(5)])
    info = save(ds, tmp_path / "v")
    loaded = load_version(tmp_path / "v", verify=True)
    assert loaded.to_list() == ds.to_list()
    manifests = read_manifests(tmp_path / "v")
    assert set(manifests) == {"version", "source", "processing", "consumption", "evaluation_isolation"}
    assert manifests["version"]["num_rows"] == 5 and manifests["version"]["content_hash"] == info.content_hash
    assert manifests["processing"]["steps"][0]["count_out"] == 5
    assert manifests["evaluation_isolation"]["checked"] is False
    assert version_info(tmp_path / "v") == info
    assert [p.name for p in tmp_path.iterdir()] == ["v"]  # no temp folder left behind


def test_content_hash_ignores_row_order_but_not_content():
    ds = to_dataset("sft", [sft_row(i) for i in range(6)])
    assert content_hash(ds) == content_hash(ds.shuffle(seed=1))
    assert content_hash(ds) != content_hash(ds.select(range(5)))


def test_save_version_validates_before_writing(tmp_path):
    bad = to_dataset("sft", [sft_row(1)]).map(lambda r: {"task": "poetry"})
    with pytest.raises(SchemaError, match="bad_task:poetry"):
        save(bad, tmp_path / "v")
    ds = to_dataset("sft", [sft_row(1), sft_row(2)])
    with pytest.raises(ManifestError, match="keeps 1 rows but the dataset has 2"):
        save_version(ds, tmp_path / "v", "sft", source_entry("u", path="m"), [step(1, 1)])
    with pytest.raises(ManifestError, match="at least one processing step"):
        save_version(ds, tmp_path / "v", "sft", source_entry("u", path="m"), [])
    assert list(tmp_path.iterdir()) == []


def test_processing_steps_must_balance():
    good = step(10, 6, quarantined=1, drop_reasons={"too_long": 3, "invalid_json": 1})
    assert good["filtered"] == 3 and good["quarantined"] == 1
    with pytest.raises(ManifestError, match="does not balance"):
        step(10, 6, drop_reasons={"too_long": 3})
    with pytest.raises(ManifestError, match="does not balance"):
        check_step(good | {"count_out": 7})


def test_record_consumption_appends_once_per_run_and_survives_identical_rewrite(tmp_path):
    ds = to_dataset("sft", [sft_row(1)])
    save(ds, tmp_path / "v")
    record_consumption(tmp_path / "v", "20_sft-abc", "20_sft")
    record_consumption(tmp_path / "v", "20_sft-abc", "20_sft")
    record_consumption(tmp_path / "v", "30_dpo-def", "30_dpo")
    records = read_manifests(tmp_path / "v")["consumption"]["records"]
    assert [r["run_id"] for r in records] == ["20_sft-abc", "30_dpo-def"]
    save(ds, tmp_path / "v")  # same rows: who read it is kept
    assert len(read_manifests(tmp_path / "v")["consumption"]["records"]) == 2
    save(to_dataset("sft", [sft_row(2)]), tmp_path / "v")  # new rows: a new version, nobody read it yet
    assert read_manifests(tmp_path / "v")["consumption"]["records"] == []


def test_derive_version_appends_a_step_and_links_the_parent(tmp_path):
    ds = to_dataset("sft", [sft_row(i) for i in range(4)])
    parent = save(ds, tmp_path / "parent", isolation=isolation_manifest([{"name": "gsm8k/test", "hits": 0}]))
    child_ds = ds.filter(lambda r: r["id"] != "s:3")
    child = derive_version(
        tmp_path / "parent", child_ds, tmp_path / "child", step(4, 3, drop_reasons={"near_duplicate": 1})
    )
    manifests = read_manifests(tmp_path / "child")
    assert child.parents == [parent.content_hash]
    assert [s["count_out"] for s in manifests["processing"]["steps"]] == [4, 3]
    assert manifests["source"]["sources"][0]["name"] == "unit"
    assert manifests["evaluation_isolation"]["inherited_from"] == parent.content_hash
    with pytest.raises(ManifestError, match="reads 5 rows but parent"):
        derive_version(tmp_path / "parent", child_ds, tmp_path / "c2", step(5, 3, drop_reasons={"x": 2}))


def test_save_version_refuses_to_replace_a_folder_that_is_not_a_version(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a data version"):
        save(to_dataset("sft", [sft_row(1)]), tmp_path / "v")


def test_load_version_verify_detects_a_changed_hash(tmp_path):
    save(to_dataset("sft", [sft_row(1)]), tmp_path / "v")
    doc = json.loads((tmp_path / "v" / "version.json").read_text())
    (tmp_path / "v" / "version.json").write_text(json.dumps(doc | {"content_hash": "0" * 64}))
    load_version(tmp_path / "v")
    with pytest.raises(ValueError, match="do not match the content hash"):
        load_version(tmp_path / "v", verify=True)
    with pytest.raises(FileNotFoundError, match="not a data version"):
        load_version(tmp_path)


def test_lineage_isolation_counts_rows_naming_held_out_items():
    rows = [sft_row(1, parents=["HumanEval/0"]), sft_row(2, parents=["HumanEval/5"]), sft_row(3)]
    hits = lineage_isolation(rows, {"humaneval/eval": ["HumanEval/0", "HumanEval/1"]})
    assert hits == [{"name": "humaneval/eval", "hits": 1, "n_items": 2, "match": "id/parent"}]
    assert isolation_manifest(hits)["total_hits"] == 1


def test_build_mix_caps_parts_balances_and_logs_changes():
    parts = {
        "math": to_dataset("sft", [sft_row(i) for i in range(10)]),
        "code": to_dataset("sft", [sft_row(100 + i, task="code") for i in range(4)]),
    }
    mix, first = build_mix(parts, "sft", seed=3, quotas={"math": 6}, name="base")
    assert len(mix) == 10 and first["count_in"] == 14 and first["drop_reasons"] == {"over_quota:math": 4}
    assert first["params"]["counts"]["tasks"] == {"code": 4, "math_reasoning": 6}
    again, _ = build_mix(parts, "sft", seed=3, quotas={"math": 6}, name="base")
    assert again["id"] == mix["id"]  # the seed fixes the sample and the order
    patched, second = build_mix(
        parts, "sft", seed=3, quotas={"math": 8}, name="base", previous=first, reason="more math after eval"
    )
    log = second["params"]["changelog"]
    assert log["reason"] == "more math after eval"
    assert log["changes"]["parts"] == {"math": {"before": 6, "after": 8}}
    assert log["changes"]["tasks"] == {"math_reasoning": {"before": 6, "after": 8}}
    with pytest.raises(ValueError, match="unknown part"):
        build_mix(parts, "sft", seed=0, quotas={"chat": 1})


def test_an_empty_version_round_trips(tmp_path):
    """A filter can keep nothing (e.g. every tiny-model answer truncated); the version must still load."""
    from datasets import Dataset

    from nebula_utils.data.manifests import processing_step
    from nebula_utils.data.schema import FEATURES
    from nebula_utils.data.versions import load_version, save_version

    empty = Dataset.from_dict({c: [] for c in FEATURES["sft"]}, features=FEATURES["sft"])
    save_version(
        empty,
        tmp_path / "v",
        "sft",
        {"name": "t", "path": "t", "license": "cc0"},
        [processing_step("filter", count_in=3, count_out=0, drop_reasons={"truncated": 3})],
    )
    assert len(load_version(tmp_path / "v")) == 0
