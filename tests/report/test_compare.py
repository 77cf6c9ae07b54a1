"""Stage 90_report on fixture run folders written exactly as 60_eval / 20_sft / 10_data write them:
marks (flat / up / down), lineage walk, HTML rendering with code hidden, and a papermill run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from nebula_utils.config import ConfigError
from nebula_utils.data.manifests import processing_step, source_entry
from nebula_utils.data.schema import to_dataset
from nebula_utils.data.versions import derive_version, save_version
from nebula_utils.report import compare as rp
from nebula_utils.report import lineage as lin
from nebula_utils.report import plots
from nebula_utils.report.html import render_html
from nebula_utils.stats import bootstrap_mean

BENCHMARKS = {"gsm8k": "math", "mmlu": "knowledge", "ifeval": "instruction_following"}
N_ITEMS = 120


def write_run(run_dir: Path, stage: str, config: dict, metrics: dict | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config | {"run_id": run_dir.name, "run_dir": str(run_dir)}))
    (run_dir / "run.json").write_text(
        json.dumps(
            {
                "run_id": run_dir.name,
                "stage": stage,
                "status": "complete",
                "config_hash": run_dir.name.rsplit("-", 1)[1],
                "versions": {"python": "3.11"},
            }
        )
    )
    (run_dir / "metrics.json").write_text(
        json.dumps({"schema_version": 1, "run_id": run_dir.name, "stage": stage, "metrics": metrics or {}})
    )
    return run_dir


def write_eval(run_dir: Path, model: str, scores: dict[str, np.ndarray]) -> Path:
    """An eval run folder by the 60_eval contract: config, run.json, metrics, samples, eval_summary."""
    benches, metrics = {}, {}
    for name, s in scores.items():
        rows = [
            {"id": f"{name}/{i}", "score": float(v), "prompt": f"q{i}", "response": "r", "target": "t"}
            for i, v in enumerate(s)
        ]
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        (run_dir / "samples" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        est = bootstrap_mean(s)
        benches[name] = {
            "score": est.value,
            "n": len(s),
            "ci95": [est.low, est.high],
            "capability": BENCHMARKS[name],
            "metric": "acc",
            "path": f"samples/{name}.jsonl",
        }
        metrics[f"eval/{name}"] = est.as_metric()
    average = float(np.mean([b["score"] for b in benches.values()]))
    metrics["eval/average"] = {"value": average, "n": None, "ci95": None}
    write_run(run_dir, "60_eval", {"model": model, "suite": "fixture", "part": "all", "seed": 0}, metrics)
    (run_dir / "eval_summary.json").write_text(
        json.dumps(
            {
                "suite": "fixture",
                "part": "all",
                "model": model,
                "benchmarks": benches,
                "skipped": {},
                "average": average,
                "capabilities": {c: benches[b]["score"] for b, c in BENCHMARKS.items() if b in benches},
            }
        )
    )
    return run_dir


def sft_rows(n: int) -> list[dict]:
    return [
        {
            "id": f"s:{i}",
            "source": "unit",
            "license": "MIT",
            "task": "math_reasoning",
            "messages": [{"role": "user", "content": f"{i}+1?"}, {"role": "assistant", "content": str(i + 1)}],
            "verifier": "math",
            "reference": {"answer": str(i + 1)},
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict[str, Path]:
    """results/fx/: a data run (version + derived version), an SFT run on the derived version, and
    four eval runs: base, identical to base, a few items flipped both ways, and clearly better."""
    root = tmp_path_factory.mktemp("results") / "fx"
    data_run = write_run(root / "10_data_sft_mix-aaaa0000", "10_data_sft_mix", {"seed": 0})
    ds = to_dataset("sft", sft_rows(10))
    save_version(
        ds,
        data_run / "sft",
        "sft",
        source_entry("unit-gen", path="generator"),
        [processing_step("generate", count_in=12, count_out=10, drop_reasons={"too_long": 2})],
    )
    derive_version(
        data_run / "sft",
        ds.select(range(8)),
        data_run / "sft_dedup",
        processing_step("dedup", count_in=10, count_out=8, drop_reasons={"near_duplicate": 2}),
    )
    sft = write_run(
        root / "20_sft-bbbb0000",
        "20_sft",
        {"model": "tiny-random", "data": str(data_run / "sft_dedup")},
        {"train/loss_last": {"value": 1.0, "n": 8, "ci95": None}},
    )
    (sft / "train_log.json").write_text(
        json.dumps(
            [{"step": s, "loss": 3.0 / s, "learning_rate": 1e-5} for s in range(1, 6)]
            + [{"step": 5, "train_runtime": 1.0}]
        )
    )
    (sft / "model").mkdir()
    (sft / "model" / "config.json").write_text("{}")

    rng = np.random.default_rng(7)
    base = {b: (rng.random(N_ITEMS) < 0.35).astype(float) for b in BENCHMARKS}
    flipped = {b: s.copy() for b, s in base.items()}
    for s in flipped.values():  # 3 items gained, 3 lost: a planted no-change with noise
        ones, zeros = np.flatnonzero(s == 1)[:3], np.flatnonzero(s == 0)[:3]
        s[ones], s[zeros] = 0.0, 1.0
    better = {b: np.maximum(s, (rng.random(N_ITEMS) < 0.6).astype(float)) for b, s in base.items()}
    better["ifeval"] = base["ifeval"].copy()  # the SFT run gains on math and knowledge only
    better["ifeval"][np.flatnonzero(base["ifeval"] == 1)[:30]] = 0.0  # ...and loses instruction following
    return {
        "root": root,
        "data_run": data_run,
        "sft": sft,
        "base": write_eval(root / "60_eval-c0000000", "tiny-random", base),
        "same": write_eval(root / "60_eval-c1111111", "tiny-random", {b: s.copy() for b, s in base.items()}),
        "flip": write_eval(root / "60_eval-c2222222", "tiny-random", flipped),
        "sft_eval": write_eval(root / "60_eval-d0000000", str(sft / "model"), better),
    }


def marks(long, run: str) -> dict[str, str]:
    return dict(long.loc[long["run"] == run, ["column", "mark"]].itertuples(index=False))


def test_identical_and_noisy_no_change_runs_are_flat_and_better_is_up(chain):
    runs = rp.load_runs([chain[k] for k in ("base", "same", "flip", "sft_eval")], ["base", "same", "flip", "sft"])
    long = rp.comparison(runs, "base", resamples=500)
    assert set(marks(long, "base").values()) == {"baseline"}
    assert set(marks(long, "same").values()) == {"flat"}
    assert set(marks(long, "flip").values()) == {"flat"}
    sft = marks(long, "sft")
    assert sft["gsm8k"] == sft["mmlu"] == sft["cap/math"] == "up"
    assert sft["ifeval"] == sft["cap/instruction_following"] == "down"
    same = long[long["run"] == "same"]
    assert (same["delta"] == 0).all() and (same["n_paired"] > 0).all()
    avg = long[(long["run"] == "sft") & (long["column"] == "average")].iloc[0]
    scores = [runs[3].benchmarks[b]["score"] for b in BENCHMARKS]
    assert avg["score"] == pytest.approx(np.mean(scores))  # suite average = mean of benchmark scores
    assert avg["benchmarks_paired"] == 3 and avg["n_paired"] == 3 * N_ITEMS


def test_pairing_is_by_item_id_not_by_line_order(chain, tmp_path):
    shuffled = tmp_path / "fx" / "60_eval-e0000000"
    write_eval(shuffled, "tiny-random", {"gsm8k": np.zeros(1)})
    lines = (chain["same"] / "samples" / "gsm8k.jsonl").read_text().splitlines()
    (shuffled / "samples" / "gsm8k.jsonl").write_text("\n".join(reversed(lines)) + "\n")
    summary = json.loads((chain["same"] / "eval_summary.json").read_text())
    summary["benchmarks"] = {"gsm8k": summary["benchmarks"]["gsm8k"]}
    (shuffled / "eval_summary.json").write_text(json.dumps(summary))
    long = rp.comparison(rp.load_runs([chain["base"], shuffled], ["a", "b"]), 0, resamples=200)
    row = long[(long["run"] == "b") & (long["column"] == "gsm8k")].iloc[0]
    assert row["mark"] == "flat" and row["delta_lo"] == row["delta_hi"] == 0.0


def test_bad_inputs_name_the_file_and_line(chain, tmp_path):
    bad = tmp_path / "fx" / "60_eval-f0000000"
    write_eval(bad, "tiny-random", {"gsm8k": np.ones(3)})
    with open(bad / "samples" / "gsm8k.jsonl", "a") as fh:
        fh.write(json.dumps({"id": "gsm8k/1", "score": 1.0}) + "\n")
    with pytest.raises(ValueError, match=r"gsm8k.jsonl:4: duplicate item id"):
        rp.load_run(bad)
    with pytest.raises(ConfigError, match="baseline: 'nope' is not a run label"):
        rp.baseline_index(rp.load_runs([chain["base"]], ["a"]), "nope")
    (bad / "run.json").write_text(json.dumps({"run_id": bad.name, "status": "running"}))
    with pytest.raises(ValueError, match="not 'complete'"):
        rp.load_run(bad)


def test_lineage_walks_eval_to_checkpoint_training_run_and_data_versions(chain):
    tree = lin.lineage(chain["sft_eval"])
    nodes = [(d, n["kind"], n.get("key")) for d, n in lin.iter_nodes(tree)]
    assert nodes[:4] == [(0, "run", ""), (1, "checkpoint", "model"), (2, "run", "produced_by"), (3, "model", "model")]
    versions = [n for _, n in lin.iter_nodes(tree) if n["kind"] == "data_version"]
    assert [Path(v["path"]).name for v in versions] == ["sft_dedup", "sft"]  # the version, then its parent
    assert versions[0]["manifests"]["processing"]["steps"][-1]["name"] == "dedup"
    producers = [n["run_id"] for _, n in lin.iter_nodes(tree) if n.get("key") == "produced_by"]
    assert producers == ["20_sft-bbbb0000", "10_data_sft_mix-aaaa0000", "10_data_sft_mix-aaaa0000"]
    assert lin.training_runs(tree) == [chain["sft"].resolve()]
    assert lin.data_version_label(tree).startswith("10_data_sft_mix-aaaa0000/sft_dedup@")
    assert lin.data_version_label(lin.lineage(chain["base"])) == "—"
    table = lin.lineage_table(tree)
    assert "8 rows" in table["detail"].iloc[4] and "sources: unit-gen" in table["detail"].iloc[4]
    funnel = rp.funnel_table(lin.data_versions([tree]))
    assert funnel[["step", "in", "out"]].values.tolist() == [
        ["generate", 12, 10],
        ["dedup", 10, 8],
        ["generate", 12, 10],
    ]
    leaves = rp.funnel_table(lin.data_versions([tree], leaves_only=True))
    assert leaves[["step", "out"]].values.tolist() == [["generate", 10], ["dedup", 8]]


def test_html_has_the_table_and_no_code(chain, tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    runs = rp.load_runs([chain["base"], chain["sft_eval"]], ["base", "sft"])
    table = rp.summary_table(runs, rp.comparison(runs, 0, resamples=200))
    cell = new_code_cell(
        "SECRET_CODE = rp.summary_table(runs)",
        outputs=[
            new_output("execute_result", {"text/html": table.to_html(), "text/plain": str(table)}, execution_count=1)
        ],
    )
    nbformat.write(new_notebook(cells=[cell]), tmp_path / "nb.ipynb")
    html = render_html(tmp_path / "nb.ipynb", tmp_path / "out" / "r.html").read_text()
    assert "SECRET_CODE" not in html and "config hash" in html and "▲ up" in html
    from nebula_utils.cli import main  # `nebula render`, for a notebook executed without the runner

    assert main(["render", str(tmp_path / "nb.ipynb")]) == 0
    assert "SECRET_CODE" not in (tmp_path / "nb.html").read_text()


@pytest.mark.slow
def test_report_notebook_runs_through_the_runner_and_renders_html(chain, tmp_path):
    from nebula_utils.pipeline import load_pipeline
    from nebula_utils.runner import run_pipeline

    pipe = tmp_path / "report.yaml"
    pipe.write_text(
        yaml.safe_dump(
            {
                "pipeline": "rep",
                "steps": [
                    {
                        "notebook": "90_report",
                        "params": {
                            "runs": [str(chain[k]) for k in ("base", "same", "sft_eval")],
                            "labels": ["base", "same", "sft"],
                            "baseline": "base",
                            "report_name": "fx",
                            "bootstrap_resamples": 300,
                        },
                    }
                ],
            }
        )
    )
    results = tmp_path / "results"
    log: list[str] = []
    assert run_pipeline(load_pipeline(pipe, results), echo=log.append) == {"90_report": "ran"}
    html = (results / "reports" / "fx.html").read_text()
    assert "config hash" in html and "≈ flat" in html and "▲ up" in html and "<img" in html
    assert "start_run(" not in html and "rp.comparison" not in html  # code cells' input is hidden
    step = load_pipeline(pipe, results).steps[0]
    metrics = json.loads((step.run_dir / "metrics.json").read_text())["metrics"]
    assert metrics["report/runs"]["value"] == 3
    assert metrics["report/delta/same/average"]["ci95"] == [0.0, 0.0]
    assert metrics["report/delta/sft/cap/math"]["ci95"][0] > 0
    (results / "reports" / "fx.html").unlink()  # a skipped report step re-renders a missing file
    assert run_pipeline(load_pipeline(pipe, results), echo=log.append) == {"90_report": "skipped"}
    assert (results / "reports" / "fx.html").is_file()


def test_training_runs_are_rows_without_scores_with_their_train_metrics_and_curves(chain):
    import matplotlib

    matplotlib.use("Agg")
    runs = rp.load_runs([chain["sft"], chain["sft"].parent / "20_sft-bbbb0000"], ["a", "b"])
    long = rp.comparison(runs, "a")
    assert long.empty
    trees = [lin.lineage(r.path) for r in runs]
    table = rp.summary_table(runs, long, trees)
    assert table["train/loss_last"].tolist() == [1.0, 1.0] and "gsm8k" not in table
    assert (
        table["data version"]
        .iloc[0]
        .endswith(f"@{lin.read_manifests(chain['data_run'] / 'sft_dedup')['version']['content_hash'][:8]}")
    )
    fig = plots.plot_training_curves(runs, trees)
    assert [len(ax.lines) for ax in fig.axes] == [1, 1]
    only = plots.plot_training_curves(runs, trees, stages=("51_mopd",))  # no such run: one empty panel
    assert len(only.axes) == 1 and not only.axes[0].lines and "no training runs" in only.axes[0].get_title()
    assert [len(ax.lines) for ax in plots.plot_training_curves(runs, trees, stages=("20_sft",)).axes] == [1, 1]
    for plot in (plots.plot_benchmark_bars(long), plots.plot_tradeoff(long)):
        assert "no " in plot.axes[0].texts[0].get_text()


def test_lineage_follows_parent_run_and_flags_a_vanished_checkpoint(chain, tmp_path):
    linked = write_eval(chain["root"] / "60_eval-g0000000", "tiny-random", {"gsm8k": np.ones(2)})
    info = json.loads((linked / "run.json").read_text())
    (linked / "run.json").write_text(json.dumps(info | {"parent_run": "20_sft-bbbb0000"}))
    kinds = [(n["kind"], n.get("key"), n.get("run_id")) for _, n in lin.iter_nodes(lin.lineage(linked))]
    assert ("run", "parent_run", "20_sft-bbbb0000") in kinds and ("data_version", "data", None) in kinds
    gone = write_eval(tmp_path / "fx" / "60_eval-h0000000", str(tmp_path / "moved" / "model"), {"gsm8k": np.ones(2)})
    table = lin.lineage_table(lin.lineage(gone))
    assert table["kind"].tolist() == ["run", "missing"] and "no longer exists" in table["detail"].iloc[1]
