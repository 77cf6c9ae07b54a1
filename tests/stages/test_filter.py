"""Stage 12_filter: the notebook cross-verifies candidate groups into sft + preference versions."""

from __future__ import annotations

import json

import pytest

from tests.factories import IF_NO_COMMA, balanced_steps, if_filter_run, small_distill_version, small_mix


def test_keep_rules_are_checked_when_the_config_is_built(stage_config):
    from nebula_utils.config import ConfigError

    with pytest.raises(ConfigError, match="key 'keep_rules'"):
        stage_config("12_filter", keep_rules={"code": ["verifier", "telepathy"]})
    with pytest.raises(ConfigError, match="key 'min_agreement'"):
        stage_config("12_filter", min_agreement=2.0)


@pytest.mark.slow
def test_notebook_writes_balanced_sft_and_preference_versions(tmp_path, run_notebook, tiny_model_path):
    from nebula_utils.data.versions import load_version, read_manifests

    distill = small_distill_version(tmp_path / "distill", small_mix(tmp_path / "mix") / "sft")
    groups = load_version(distill)
    run = run_notebook("12_filter", data=str(distill))
    for version in ("sft", "preference"):
        assert balanced_steps(run / version)[-1]["count_in"] == len(groups)
    sft_step = balanced_steps(run / "sft")[-1]
    dropped = (run / "dropped.jsonl").read_text().splitlines()
    assert len(dropped) == sft_step["filtered"] == sum(sft_step["drop_reasons"].values())
    assert (run / "filter_funnel.png").stat().st_size > 10_000
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["groups_in"]["value"] == len(groups)
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    assert [r["run_id"] for r in read_manifests(distill)["consumption"]["records"]] == [run_id]


def test_if_prompts_keep_a_teacher_answer_the_ifeval_verifier_passes(tmp_path):
    """10's prompt-only IF rows reach 12_filter with teacher candidates only (no dataset answer):
    the group with a passing answer keeps it, the group whose answers both break the constraint is
    counted as filtered by the verifier gate, and in = kept + filtered + quarantined."""
    from nebula_utils.data.versions import load_version, read_manifests

    run, ids = if_filter_run(tmp_path)
    distill = load_version(tmp_path / "distill")
    assert all(c["generator"] == "teacher" for g in distill for c in g["candidates"])
    sft = {r["id"]: r for r in load_version(run / "sft")}
    assert set(sft) == {ids["pass"], ids["two"]}
    kept = sft[ids["pass"]]
    assert kept["messages"][-1] == {"role": "assistant", "content": IF_NO_COMMA}
    assert kept["verifier"] == "ifeval" and json.loads(kept["quality"])["verifier"] == 1.0
    step = balanced_steps(run / "sft")[-1]
    assert (step["count_in"], step["count_out"], step["filtered"], step["quarantined"]) == (3, 2, 1, 0)
    # 11_distill scored every candidate with the ifeval verifier; 12_filter gates on that stored score
    scores = {g["id"]: [json.loads(c["scores"]) for c in g["candidates"]] for g in distill}
    verified = {
        gid: [v for s in ss for k, v in s.items() if k.startswith("verifier:ifeval")] for gid, ss in scores.items()
    }
    assert verified == {ids["pass"]: [1.0, 0.0], ids["fail"]: [0.0, 0.0], ids["two"]: [1.0, 0.0]}
    assert step["drop_reasons"] == {"verifier:stored_score": 1}
    assert step["answer_from"] == {"complex_if": {"teacher": 2, "dataset": 0}}
    dropped = [json.loads(line) for line in (run / "dropped.jsonl").read_text().splitlines()]
    assert [d["id"] for d in dropped] == [ids["fail"]]
    assert read_manifests(run / "sft")["version"]["num_rows"] == 2
