"""Pipeline references inside mapping params (51_mopd's `teachers: {task: "@step/model"}`) and an
ablation whose report step is an ablation notebook rather than 90_report."""

from __future__ import annotations

import pytest
import yaml

from nebula_utils.ablation import load_ablation
from nebula_utils.pipeline import load_pipeline

BASE = {
    "pipeline": "refs",
    "defaults": {"model": "tiny-random"},
    "steps": [
        {"notebook": "10_data_sft_mix"},
        {"notebook": "20_sft", "name": "20_sft_code", "params": {"data": "@10_data_sft_mix/sft", "max_steps": 2}},
        {
            "notebook": "51_mopd",
            "params": {
                "data": "@10_data_sft_mix/rl",
                "model": "@20_sft_code/model",
                "teacher": "tiny-random",
                "teachers": {"code": "@20_sft_code/model", "math_reasoning": "tiny-random"},
            },
        },
        {"notebook": "60_eval", "params": {"model": "@51_mopd/model", "limit": 2}},
    ],
}


def write(tmp_path, name, doc):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def test_references_resolve_inside_mapping_values(tmp_path):
    pipe = load_pipeline(write(tmp_path, "refs.yaml", BASE), tmp_path)
    sft, mopd = pipe.step("20_sft_code"), pipe.step("51_mopd")
    assert mopd.params["teachers"] == {"code": str(sft.run_dir / "model"), "math_reasoning": "tiny-random"}
    assert mopd.science["teachers"] == {"code": f"@{sft.run_id}/model", "math_reasoning": "tiny-random"}
    assert mopd.upstream.count("20_sft_code") == 2  # the student and the code teacher
    # changing the teacher's upstream step changes (and reruns) the MOPD step
    other = BASE | {"steps": [BASE["steps"][0], BASE["steps"][1] | {"params": {"max_steps": 3}}, *BASE["steps"][2:]]}
    other["steps"][1]["params"] |= {"data": "@10_data_sft_mix/sft"}
    assert load_pipeline(write(tmp_path, "o.yaml", other), tmp_path).step("51_mopd").run_id != mopd.run_id


def test_ablation_report_can_be_an_ablation_notebook(tmp_path):
    base = write(tmp_path, "refs.yaml", BASE)
    abl = load_ablation(
        write(
            tmp_path,
            "abl.yaml",
            {
                "ablation": "abl",
                "base": str(base),
                "grid": {"51_mopd.teachers": [{}, {"code": "@20_sft_code/model"}]},
                "report": {"notebook": "84_ablation_opd_vs_mopd", "step": "60_eval", "labels": ["opd", "mopd"]},
            },
        ),
        tmp_path,
    )
    opd, mopd = (v.pipeline for v in abl.variants)
    assert opd.step("51_mopd").params["teachers"] == {}
    assert mopd.step("51_mopd").params["teachers"] == {"code": str(mopd.step("20_sft_code").run_dir / "model")}
    assert opd.step("20_sft_code").run_id == mopd.step("20_sft_code").run_id  # shared, runs once
    assert abl.report.notebook == "84_ablation_opd_vs_mopd" and abl.report.params["labels"] == ["opd", "mopd"]
    assert abl.report.params["runs"] == [str(p.step("60_eval").run_dir) for p in (opd, mopd)]


def test_tulu3_demo_plans_sft_then_dpo_then_rlvr_each_from_the_previous_model(tmp_path):
    from tests.conftest import REPO

    pipe = load_pipeline(REPO / "params" / "pipelines" / "tulu3_demo.yaml", tmp_path)
    names = [s.name for s in pipe.steps]
    sft, dpo, rlvr = pipe.step("20_sft_tulu3"), pipe.step("31_dpo_tulu3"), pipe.step("40_grpo_rlvr")
    assert names.index(sft.name) < names.index(dpo.name) < names.index(rlvr.name)
    assert (sft.notebook, dpo.notebook, rlvr.notebook) == ("20_sft", "31_dpo", "40_grpo")
    assert dpo.params["model"] == str(sft.run_dir / "model") and rlvr.params["model"] == str(dpo.run_dir / "model")
    # RLVR: every verifiable RL prompt (no difficulty filter: this pipeline grades none), rewarded by the verifiers
    assert (
        rlvr.params["data"] == str(pipe.step("10_data_sft_mix").run_dir / "rl") and rlvr.params["difficulties"] == []
    )
    assert pipe.step("60_eval_tulu3_rlvr").params["model"] == str(rlvr.run_dir / "model")
    report = pipe.step("90_report_tulu3").params
    assert report["labels"] == ["base", "sft", "dpo", "rlvr"] and report["runs"][-1] == str(
        pipe.step("60_eval_tulu3_rlvr").run_dir
    )


def _ancestors(pipe, name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for up in pipe.step(todo.pop()).upstream:
            if up not in seen:
                seen.add(up)
                todo.append(up)
    return seen


def test_every_sft_checkpoint_descends_from_distillation_and_cross_verification(tmp_path):
    """The curated corpus reaches training: in the smoke, the demo and every pipeline extending the
    demo, each 20_sft step's data and model run back through 12_filter and 11_distill (via 14 -> 15
    -> 16, and 17_patch for the third stage), and the third stage trains on 17_patch's mix."""
    from nebula_utils.paths import PARAMS_DIR

    files = [PARAMS_DIR / "pipelines" / n for n in ("smoke.yaml", "tulu3_demo.yaml")] + sorted(
        (PARAMS_DIR / "pipelines").glob("demo*.yaml")
    )
    checked = 0
    for path in files:
        pipe = load_pipeline(path, tmp_path / path.stem)
        classify = [
            s for s in pipe.steps if s.notebook == "14_classify_sample" and "12_filter" in _ancestors(pipe, s.name)
        ]
        assert classify and classify[0].params["data"] == str(pipe.step("12_filter").run_dir / "sft"), path
        for step in (s for s in pipe.steps if s.notebook == "20_sft"):
            assert {"11_distill", "12_filter", "14_classify_sample", "15_decontam"} <= _ancestors(pipe, step.name), (
                f"{path.name}: {step.name}"
            )
            checked += 1
        names = [s.name for s in pipe.steps]
        if "17_patch" in names:
            patch = pipe.step("17_patch")
            assert "20_sft_complex" in patch.upstream and patch.params["data"].endswith("/data")
            last = [s for s in pipe.steps if s.notebook == "20_sft" and "17_patch" in s.upstream]
            assert last and last[0].params["data"] == str(patch.run_dir / "patch")
    assert checked >= 3 + 1 + 3 + 4  # smoke 3 SFT stages, tulu3_demo 1, demo 3, demo_mopd/opd add general, math, code


DEMO_FILES = ("demo", "demo_preference", "tulu3_demo")


@pytest.mark.parametrize("name", DEMO_FILES)
def test_demo_pipelines_validate_with_run_plan(name, tmp_path, capsys, monkeypatch):
    from nebula_utils.cli import main
    from nebula_utils.paths import PARAMS_DIR

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["run", str(PARAMS_DIR / "pipelines" / f"{name}.yaml"), "--plan", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "config error" not in out and "\n60_eval_base " in out


def test_tulu3_demo_trains_on_the_demo_curated_corpus_and_shares_its_run_ids(tmp_path):
    """Tülu 3's one SFT stage trains on the whole decontaminated corpus; its curation steps and the
    base evaluation are the demo's runs (same results folder, same run ids: skipped when done), and
    every verifiable evaluation of the three demo files runs 200 items of 256 tokens."""
    from nebula_utils.paths import PARAMS_DIR

    pipes = {n: load_pipeline(PARAMS_DIR / "pipelines" / f"{n}.yaml", tmp_path) for n in DEMO_FILES}
    demo, tulu = pipes["demo"], pipes["tulu3_demo"]
    assert tulu.name == demo.name == "demo"
    assert tulu.step("20_sft_tulu3").params["data"] == str(demo.step("15_decontam").run_dir / "data")
    shared = ["10_data_sft_mix", "11_distill", "12_filter", "14_classify_sample", "15_decontam", "60_eval_base"]
    assert [tulu.step(n).run_id for n in shared] == [demo.step(n).run_id for n in shared]
    assert pipes["demo_preference"].step("60_eval_sft").run_id == demo.step("60_eval_sft").run_id
    for pipe in pipes.values():
        evals = [s for s in pipe.steps if s.notebook == "60_eval"]
        assert evals and all((s.params["limit"], s.params["max_gen_toks"]) == (200, 256) for s in evals), pipe.source
