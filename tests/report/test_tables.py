"""The report's comparison columns (MDE), its results sentences, its HTML tables and the compact
lineage tree, on demo-shaped run folders (tests/report/run_folders.py)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from nebula_utils.report import compare as rp
from nebula_utils.report import html as rh
from nebula_utils.report import lineage as lin

from .run_folders import build_demo_results, write_eval

LABELS = ["base", "sft", "sft@24"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("results")
    folders = build_demo_results(root)
    runs = rp.load_runs([folders[k] for k in LABELS], LABELS)
    long = rp.comparison(runs, "base", resamples=400)
    return {"root": root, "folders": folders, "runs": runs, "long": long, "trees": [lin.lineage(r.path) for r in runs]}


def cell(long, run: str, column: str):
    return long[(long["run"] == run) & (long["column"] == column)].iloc[0]


def test_comparison_carries_the_mde_and_flat_means_inside_it(demo):
    long = demo["long"]
    assert long.loc[long["mark"] == "baseline", "mde"].isna().all()
    compared = long[long["mark"].isin(["up", "down", "flat"]) & (long["kind"] == "benchmark")]
    assert (compared["mde"] > 0).all() and set(compared["mde_basis"]) <= {"paired", "floor", "unpaired bound"}
    # 24 items cannot resolve what 200 can: the same checkpoint's MDE grows about sqrt(200/24) = 2.9x
    ratio = cell(long, "sft@24", "ifeval_constraints")["mde"] / cell(long, "sft", "ifeval_constraints")["mde"]
    assert 2.0 < ratio < 4.0
    flat = compared[compared["mark"] == "flat"]
    assert (flat["delta"].abs() <= flat["mde"] + 0.01).all()
    avg = cell(long, "sft", "average")
    bench = [
        cell(long, "sft", b)["mde"]
        for b in ("humaneval_eval", "ifeval_constraints", "rg_chain_sum", "rg_leg_counting")
    ]
    assert avg["mde"] == pytest.approx(math.sqrt(sum(m * m for m in bench)) / 4)
    metrics = rp.delta_metrics(long)
    assert metrics["report/mde/sft/average"]["value"] == pytest.approx(avg["mde"])


def test_results_text_reads_as_sentences_with_signed_changes(demo):
    text = rp.results_text(demo["long"], "base", 0.05)
    sft, small = text.split("\n\n")
    assert sft.startswith("**sft** against **base**: suite average 0.")
    assert "Better on rg_chain_sum (+0.220), rg_leg_counting (+0.125)." in sft
    assert "Worse on humaneval_eval (−0.060)." in sft
    assert re.search(r"Flat on ifeval_constraints \(\+0\.005, MDE ±0\.06 at n = 200\)", sft)
    assert "needs about" in small and "n = 24" in small


def test_results_table_is_one_grouped_table_without_indices_or_paths(demo):
    page = rh.results_table(demo["long"], demo["runs"], "base")
    assert page.count("<table") == 1 and "<th>Benchmark</th>" in page
    rows = re.findall(r"<tr class='([^']*)'><td>(.*?)</td>", page)
    names = [re.sub(r"<.*", "", label) for _, label in rows]
    # grouped by capability; math has two benchmarks so it gets a mean row; the average closes
    assert names == [
        "humaneval_eval",
        "ifeval_constraints",
        "rg_chain_sum",
        "rg_leg_counting",
        "math mean ",
        "Suite average ",
    ]
    assert "≈ flat (MDE ±0.056)" in page and "▲ up" in page and "▼ down" in page
    assert 'class="d up"' in page and 'class="d down"' in page and 'class="d flat"' in page
    assert "(n=24)" in page  # the small run's cells say they scored fewer items than the row's n
    assert str(demo["root"]) not in page and "dtype" not in page


def test_frame_html_drops_the_index_and_shows_missing_values_as_dashes():
    import pandas as pd

    grid = pd.DataFrame(
        [
            {"band": "easy", "steps": 3, "zero-variance groups": 0.8, "held-out pass Δ": None, "lr": 5e-5},
            {"band": "hard", "steps": 3, "zero-variance groups": float("nan"), "held-out pass Δ": None, "lr": 0.01},
        ]
    )
    page = rh.frame_html(grid)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", page)
    assert cells[:5] == ["easy", "3", "0.800", "<span class='na'>—</span>", "5e-05"]  # not 0.000
    assert cells[9] == "0.010"
    assert "None" not in page and "nan" not in page and ">0<" not in page  # no pandas index, no raw missing values
    assert "<th class='num'>steps</th>" in page and "<th class=''>band</th>" in page
    assert "/<wbr>" in rh.frame_html(pd.DataFrame([{"start checkpoint": "<results>/demo/20_sft-5f5f/model"}]))


def test_power_table_lists_each_comparison_once_and_drops_one_benchmark_capabilities(demo):
    page = rh.power_table(demo["long"], "base", 0.05)
    assert page.count("vs base</td>") == 2
    assert "code mean" not in page and "math mean" in page
    assert page.count("Suite average") == 2 and "n for ±0.05" in page
    assert "0/1 items: ≥4 must flip" in page or "uncorrelated" in page


def test_runs_table_and_lineage_show_repo_or_results_relative_paths(demo):
    bases = {"<results>/": demo["root"]}
    page = rh.runs_table(demo["runs"], demo["trees"], bases) + rh.lineage_html(demo["runs"], demo["trees"], bases)
    assert str(demo["root"]) not in page and "/tmp/" not in page
    assert '<span class="seg">&lt;results&gt;</span>/<wbr><span class="seg">demo</span>' in page
    assert page.count("<details>") == 3 and "packaged:smollm2-135m-instruct" in page


def test_lineage_tree_lists_each_run_and_version_once(demo):
    tree = demo["trees"][1]
    lines = lin.lineage_lines(tree, {"<results>/": demo["root"]})
    assert len(lines) <= 10  # the raw walk has 24 nodes, most of them repeats
    assert len(list(lin.iter_nodes(tree))) > 20
    versions = [re.search(r"data: (\S+)", line) for line in lines]
    named = [m.group(1) for m in versions if m]
    assert len(named) == len(set(named))
    assert lines[1].startswith("└─ model: <results>/demo/20_sft-9a1c03e2/model (checkpoint of 20_sft)")
    assert any("↑ inputs of 16_curriculum-770b09bf above" in line for line in lines)
    chain = lin.lineage_chain(tree)
    assert chain == (
        "60_eval-d81f5a09 ← 20_sft-9a1c03e2 [16_curriculum-770b09bf/complex] ← "
        "20_sft-437d448b [16_curriculum-770b09bf/base] ← packaged:smollm2-135m-instruct"
    )


def test_short_path_prefers_the_first_base_that_holds_the_path(tmp_path):
    repo, results = tmp_path / "repo", tmp_path / "repo" / "results"
    assert lin.short_path(results / "demo" / "x", {"": repo, "<results>/": results}) == "results/demo/x"
    assert lin.short_path(results / "demo" / "x", {"<results>/": results, "": repo}) == "<results>/demo/x"
    assert lin.short_path(tmp_path / "shared" / "data", {"": repo, "../": tmp_path}) == "../shared/data"
    assert lin.short_path("/opt/models/m", {"": repo}) == "/opt/models/m"
    assert lin.short_path(None) == ""


def test_identical_runs_are_flat_with_the_uncorrelated_bound(demo, tmp_path):
    """A rerun that answers every item as the baseline did: every change is exactly 0, and the
    flat mark states the MDE a real change would have needed (not 0)."""
    base = demo["folders"]["base"]
    lines = (base / "samples" / "rg_chain_sum.jsonl").read_text().splitlines()
    scores = np.array([json.loads(line)["score"] for line in lines])  # file order = item order
    rerun = write_eval(
        tmp_path / "demo" / "60_eval-00000000", "packaged:smollm2-135m-instruct", {"rg_chain_sum": scores}
    )
    long = rp.comparison(rp.load_runs([base, rerun], ["base", "rerun"]), 0, resamples=200)
    row = cell(long, "rerun", "rg_chain_sum")
    p = row["score"]
    assert row["delta"] == 0 and row["mark"] == "flat" and row["mde_basis"] == "unpaired bound"
    assert row["mde"] == pytest.approx(1.959964 * math.sqrt(2 * p * (1 - p) / 200))
    assert rp.mark_label("flat", row["mde"]) == f"≈ flat (MDE ±{row['mde']:.2g})"
