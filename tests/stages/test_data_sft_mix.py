"""Stage 10_data_sft_mix: one config truth, the paired notebook, and a papermill run."""

from __future__ import annotations

import dataclasses
import json

import pytest

from nebula_utils.config import field_types, merge_layers
from nebula_utils.stages import stage_defaults
from nebula_utils.stages.data_sft_mix import SFTMixConfig
from tests.conftest import SHARED

STAGE = "10_data_sft_mix"


def test_every_default_lives_in_yaml_not_in_the_dataclass():
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(SFTMixConfig))
    assert set(merge_layers(SFTMixConfig, STAGE, stage_defaults(STAGE))) == set(field_types(SFTMixConfig))


@pytest.mark.slow
def test_notebook_runs_with_papermill_and_writes_both_versions(run_notebook):
    from nebula_utils.data.sources import humaneval_split_ids
    from nebula_utils.data.versions import load_version, read_manifests, record_consumption

    shared = str(SHARED) if SHARED.is_dir() else ""
    params = {
        "sft_math_tasks": ["chain_sum", "lcm"],
        "sft_math_per_task": 5,
        "sft_code_n": 4,
        "sft_ifeval_n": 3,
        "rl_math_tasks": ["simple_equations"],
        "rl_math_per_task": 4,
        "rl_ifeval_n": 6,
        "rl_code_n": 3,
        "shared_data_dir": shared,
        "shared_per_source": 5,
    }
    run = run_notebook(STAGE, **params)
    assert (run / "mix_distributions.png").stat().st_size > 10_000

    sft = load_version(run / "sft", verify=True)
    assert len(sft) == 2 * 5 + 4 + 3 + (3 * 5 if shared else 0)
    unanswered = sft.filter(lambda r: r["messages"][-1]["role"] != "assistant")
    assert len(unanswered) == 3 and set(unanswered["verifier"]) == {"ifeval"}
    assert not {p for ps in sft["parents"] for p in ps} & set(humaneval_split_ids("eval"))
    rl = load_version(run / "rl", verify=True)
    assert len(rl) == 4 + 6 + 3 + (5 if shared else 0)
    assert set(rl["verifier"]) == {"math", "ifeval", "code"}
    assert not set(json.loads(r)["prompt"] for r in rl.filter(lambda r: r["verifier"] == "code")["reference"]) & {
        json.loads(r)["prompt"] for r in sft.filter(lambda r: r["task"] == "code")["reference"]
    }

    for version in ("sft", "rl"):
        manifests = read_manifests(run / version)
        steps = manifests["processing"]["steps"]
        assert steps[-1]["name"].startswith("mix:") and steps[-1]["count_out"] == manifests["version"]["num_rows"]
        assert all(s["count_in"] == s["count_out"] + s["filtered"] + s["quarantined"] for s in steps)
        assert manifests["evaluation_isolation"]["checked"] and manifests["evaluation_isolation"]["total_hits"] == 0
    record_consumption(run / "sft", "20_sft-test", "20_sft")
    assert read_manifests(run / "sft")["consumption"]["records"][0]["stage"] == "20_sft"
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["sft_rows"]["value"] == len(sft) and metrics["rl_prompts"]["value"] == len(rl)
    assert json.loads((run / "manifests" / "data_versions.json").read_text())["sft"]["num_rows"] == len(sft)


def test_isolation_counts_rows_of_benchmark_derived_sources():
    from datasets import concatenate_datasets

    from nebula_utils.data.mixing import source_isolation as isolation_for
    from nebula_utils.data.sources import humaneval_sft, reasoning_gym_sft

    derived = reasoning_gym_sft("gsm_symbolic", 3, seed=0).dataset
    leaked = humaneval_sft(2, split="eval").dataset
    iso = isolation_for(concatenate_datasets([derived, leaked, humaneval_sft(2).dataset]))
    assert {b["name"]: b["hits"] for b in iso["benchmarks"]} == {"humaneval/eval-split": 2, "gsm8k/test": 3}
    assert iso["total_hits"] == 5


def test_default_sft_mix_holds_if_prompts_for_the_teacher_apart_from_rl_and_eval():
    """The defaults' SFT rows by task: 200 math and 40 code with answers, 64 prompt-only IFEval-style
    rows (1-2 constraints, ifeval verifier + reference) whose ids and texts are neither the RL
    pool's nor the verifiable suite's ifeval_constraints benchmark (seed 7001)."""
    from collections import Counter

    from nebula_utils.data.sources import ifeval_constraint_prompts
    from nebula_utils.stages.data_sft_mix import rl_parts, sft_parts
    from tests.conftest import build_stage_config

    cfg = build_stage_config(STAGE)
    parts = sft_parts(cfg, quarantine_dir=None)
    rows = {name: list(p.dataset) for name, p in parts.items()}
    assert {name: len(r) for name, r in rows.items()} == {
        **{f"math/{t}": 40 for t in cfg.sft_math_tasks},
        "code/humaneval": 40,
        "complex_if/ifeval_constraints": 64,
    }
    ifs = rows["complex_if/ifeval_constraints"]
    assert all(r["task"] == "complex_if" and r["verifier"] == "ifeval" for r in ifs)
    assert all(len(r["messages"]) == 1 and r["messages"][0]["role"] == "user" for r in ifs)
    refs = [json.loads(r["reference"]) for r in ifs]
    assert all(ref["prompt"] == r["messages"][0]["content"] for ref, r in zip(refs, ifs))
    # seed 0 draws 46 one-constraint and 18 two-constraint prompts (the yaml's comment)
    assert Counter(len(ref["instruction_id_list"]) for ref in refs) == {1: 46, 2: 18}
    rl = rl_parts(cfg)["complex_if/ifeval_constraints"].dataset
    bench = ifeval_constraint_prompts(250, 7001).dataset  # params/suites/verifiable.yaml
    ids = {r["id"] for r in ifs}
    assert not ids & set(rl["id"]) and not ids & set(bench["id"])
    assert len({r["messages"][0]["content"] for r in ifs} & set(rl["prompt"])) <= 1
