"""The evaluation harness: run one model on a list of benchmarks and write the report contract.

The stage (nebula_utils.stages.eval) configures it; 90_report reads exactly what it writes.

Outputs in the run folder (the report stage reads exactly these):
  metrics.json        eval/<benchmark> = {value, n, ci95} (bootstrap over per-item scores),
                      eval/average (unweighted mean of benchmark scores, n = benchmarks),
                      eval/capability/<capability> (same, per capability label)
  samples/<b>.jsonl   one line per item: {id, score (0..1), prompt, response, target}
  eval_summary.json   suite, part, model, benchmarks {score, n, ci95, capability, metric, path,
                      harness}, skipped {name: reason}, average, capabilities {cap: score}
  lm_eval/            generated task YAMLs and lm-eval's aggregate results (lm_eval harness)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from ..stats import bootstrap_mean, mean_of_estimates
from .lm_tasks import MissingData
from .suites import Benchmark, load_suite, select

# lm-eval's hf model has no measured batch size here; 8 kept the instruct suite's CPU runs at ~5 min.
LM_EVAL_DEFAULT_BATCH = 8


def model_lineage(model: str) -> dict[str, Any]:
    """{spec, path, parent_run}: parent_run is set when `model` is a run folder's model/ subfolder."""
    from ..io import read_json

    path = Path(model).expanduser()
    parent = path.parent / "run.json"
    run_id = read_json(parent).get("run_id") if path.is_dir() and parent.is_file() else None
    return {"spec": model, "path": str(path.resolve()) if path.is_dir() else None, "parent_run": run_id}


class Evaluation:
    """Runs the benchmarks of a config into a run folder; `summary()` is the contract's summary."""

    def __init__(self, cfg: Any, run_dir: str | Path):
        """`cfg`: the 60_eval config (nebula_utils.stages.eval.EvalStageConfig); its
        `suite_path()` and `data_path()` are absolute, so nothing here reads the repo layout."""
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.suite = load_suite(cfg.suite_path())
        self.benchmarks = select(self.suite, cfg.part, cfg.benchmarks)
        self.rows: dict[str, list[dict]] = {}
        self.metric: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.timing: dict[str, float] = {}

    def _unsafe(self, b: Benchmark) -> bool:
        code = b.capability == "code" or b.source == "humaneval" or b.task.startswith("humaneval")
        if code and not self.cfg.confirm_run_unsafe_code:
            self.skipped[b.name] = "runs model-written code: set confirm_run_unsafe_code: true to run it"
        return code and not self.cfg.confirm_run_unsafe_code

    def run_fast(self) -> None:
        from . import fast

        todo = [b for b in self.benchmarks if b.harness == "verifiable" and not self._unsafe(b)]
        if not todo:
            return
        generator = self._generator()
        for b in todo:
            start = time.perf_counter()
            try:
                self.rows[b.name], self.metric[b.name] = fast.run_benchmark(
                    generator,
                    b,
                    self.cfg.data_path(),
                    self.cfg.limit,
                    b.gen_budget(self.cfg.max_gen_toks),
                    self.cfg.seed,
                )
            except MissingData as exc:
                self.skipped[b.name] = str(exc)
            self.timing[b.name] = time.perf_counter() - start

    def _generator(self):
        from ..inference.generation import make_generator

        backend = {"hf": "transformers", "vllm": "vllm"}[self.cfg.resolved_backend()]
        c = self.cfg
        return make_generator(
            c.model,
            backend=backend,
            device=c.device,
            batch_size=c.batch_size,
            tensor_parallel_size=c.tensor_parallel_size,
        )

    def run_lm_eval(self) -> None:
        todo = [b for b in self.benchmarks if b.harness == "lm_eval" and not self._unsafe(b)]
        if not todo:
            return
        tasks, task_dir = self._tasks(todo)
        if not tasks:
            return
        start = time.perf_counter()
        results = self._simple_evaluate(tasks, task_dir)
        self.timing["lm_eval"] = time.perf_counter() - start
        self._save_lm_eval(results)
        from .lm_tasks import sample_rows

        for b in todo:
            if b.name in tasks:
                self.rows[b.name] = sample_rows(b.name, results["samples"][tasks[b.name]], b.metric)
                self.metric[b.name] = b.metric

    def _tasks(self, todo: list[Benchmark]) -> tuple[dict[str, str], Path | None]:
        from .lm_tasks import write_local_tasks

        if self.cfg.task_source == "official":
            return {b.name: b.task for b in todo}, None
        task_dir = self.run_dir / "lm_eval" / "tasks"
        tasks, skipped = write_local_tasks(todo, self.cfg.data_path(), task_dir)
        self.skipped.update(skipped)
        return tasks, task_dir

    def _simple_evaluate(self, tasks: dict[str, str], task_dir: Path | None) -> dict[str, Any]:
        from ..inference.models import pick_device, resolve_model_path
        from .lm_tasks import run_lm_eval

        c = self.cfg
        return run_lm_eval(
            tasks,
            task_dir,
            resolve_model_path(c.model),
            backend=c.resolved_backend(),
            device=pick_device(c.device),
            batch_size=c.batch_size or LM_EVAL_DEFAULT_BATCH,
            limit=c.limit,
            num_fewshot=c.num_fewshot,
            apply_chat_template=c.apply_chat_template,
            max_gen_toks=c.max_gen_toks,
            confirm_run_unsafe_code=c.confirm_run_unsafe_code,
            seed=c.seed,
            tensor_parallel_size=c.tensor_parallel_size,
        )

    def _save_lm_eval(self, results: dict[str, Any]) -> None:
        keep = {
            k: results.get(k)
            for k in ("results", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "config")
        }
        # configs hold callables (process_results...): record their names rather than failing
        text = json.dumps(keep, indent=2, sort_keys=True, default=lambda o: getattr(o, "__name__", str(o)))
        atomic_write_text(self.run_dir / "lm_eval" / "results.json", text + "\n")

    def write(self) -> dict[str, Any]:
        """Write samples/, eval_summary.json; return {metric name: entry} for run.log_metrics."""
        for name, rows in self.rows.items():
            atomic_write_jsonl(self.run_dir / "samples" / f"{name}.jsonl", rows)
        summary = self.summary()
        atomic_write_json(self.run_dir / "eval_summary.json", summary)
        return self.metrics(summary)

    def summary(self) -> dict[str, Any]:
        c, by_name = self.cfg, {b.name: b for b in self.benchmarks}
        scored = {}
        for name, rows in self.rows.items():
            est = bootstrap_mean([r["score"] for r in rows], c.bootstrap_resamples, seed=c.seed)
            scored[name] = {
                "score": est.value,
                "n": est.n,
                "ci95": [est.low, est.high],
                "capability": by_name[name].capability,
                "metric": self.metric[name],
                "path": f"samples/{name}.jsonl",
                "harness": by_name[name].harness,
                "seconds": self.timing.get(name),
            }
        caps = sorted({v["capability"] for v in scored.values()})
        capabilities = {
            cap: mean_of_estimates([v["score"] for v in scored.values() if v["capability"] == cap]) for cap in caps
        }
        return {
            "suite": self.suite[0].suite,
            "part": c.part,
            "model": model_lineage(c.model),
            "benchmarks": scored,
            "skipped": dict(sorted(self.skipped.items())),
            "average": mean_of_estimates([v["score"] for v in scored.values()]),
            "capabilities": capabilities,
            "limit": c.limit,
            "backend": c.resolved_backend(),
            "task_source": c.task_source,
            "timing": self.timing,
        }

    @staticmethod
    def metrics(summary: dict[str, Any]) -> dict[str, Any]:
        out = {
            f"eval/{name}": {"value": v["score"], "n": v["n"], "ci95": v["ci95"]}
            for name, v in summary["benchmarks"].items()
        }
        if summary["benchmarks"]:
            out["eval/average"] = {"value": summary["average"], "n": len(summary["benchmarks"])}
        for cap, value in summary["capabilities"].items():
            n = sum(v["capability"] == cap for v in summary["benchmarks"].values())
            out[f"eval/capability/{cap}"] = {"value": value, "n": n}
        return out


def evaluate(cfg: Any, run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run every selected benchmark and write the contract files; returns (summary, metrics),
    the metrics for the stage's epilogue (`run.finish(metrics=...)`)."""
    start = time.perf_counter()
    ev = Evaluation(cfg, run_dir)
    ev.run_fast()
    ev.run_lm_eval()
    metrics = ev.write()
    metrics["timing/eval_wall_s"] = {"value": time.perf_counter() - start}
    return json.loads((Path(run_dir) / "eval_summary.json").read_text()), metrics
