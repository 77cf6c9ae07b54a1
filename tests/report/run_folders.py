"""Realistic run folders for report tests: the demo pipeline's shape, written by the same contracts
the stages write (run.json, config.yaml with absolute paths, metrics.json, data versions with their
four manifests via nebula_utils.data.versions, train_log.json, and 60_eval's eval_summary.json +
samples/<benchmark>.jsonl per nebula_utils/evaluate/harness.py).

results/demo/
  10_data_sft_mix-…       data versions sft (24 rows) and rl
  14_classify_sample-…    data: derived from 10_data_sft_mix/sft (classified, sampled)
  16_curriculum-…         base and complex: derived from 14_classify_sample/data
  20_sft-…  (stage 1)     packaged:smollm2-135m-instruct on 16_curriculum/base
  20_sft-…  (stage 2)     stage 1's model on 16_curriculum/complex
  60_eval-…  base / sft   the verifiable suite at 200 items per benchmark
  60_eval-…  sft@24       the same checkpoint at 24 items per benchmark (the old demo's size)

Per-item scores are correlated across runs as real checkpoints are (an easy item stays easy): an
item's latent ease u decides the base run; a later run keeps u with probability `keep` and draws it
afresh otherwise, then compares it against its own rate.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

# benchmark -> (capability, base rate, SFT rate): math gains, instruction following holds, code
# drifts down a little (within noise at 200 items).
SUITE = {
    "rg_chain_sum": ("math", 0.31, 0.52),
    "rg_leg_counting": ("math", 0.22, 0.30),
    "ifeval_constraints": ("instruction_following", 0.41, 0.40),
    "humaneval_eval": ("code", 0.12, 0.09),
}
VERSIONS = {"python": "3.11.7", "torch": "2.13.0+cpu", "transformers": "5.23.0", "trl": "1.16.0"}


def write_run(run_dir: Path, stage: str, config: dict, metrics: dict | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    full = {"seed": 0, "device": "auto", "num_threads": 2} | config | {"run_id": run_dir.name, "run_dir": str(run_dir)}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(full, sort_keys=True))
    info = {
        "run_id": run_dir.name,
        "stage": stage,
        "status": "complete",
        "config_hash": run_dir.name.rsplit("-", 1)[1],
        "started": 1796166333.0,
        "finished": 1796166400.0,
        "versions": VERSIONS,
    }
    (run_dir / "run.json").write_text(json.dumps(info, indent=2))
    doc = {"schema_version": 1, "run_id": run_dir.name, "stage": stage, "metrics": metrics or {}}
    (run_dir / "metrics.json").write_text(json.dumps(doc, indent=2))
    return run_dir


def _item_text(bench: str, i: int, rng: np.random.Generator) -> tuple[str, str]:
    a, b, c = (int(v) for v in rng.integers(2, 60, size=3))
    if bench == "rg_chain_sum":
        return f"State the final answer to the following arithmetic problem: {a} + {b} - {c} =", str(a + b - c)
    if bench == "rg_leg_counting":
        return f"How many legs are there in total if I have {a % 7} dogs and {b % 5} chickens?", str(
            4 * (a % 7) + 2 * (b % 5)
        )
    if bench == "ifeval_constraints":
        return (
            f"Write a haiku about rivers. Your answer must contain exactly {a % 4 + 2} bullet points.",
            "constraints",
        )
    return f"def add_{i}(x, y):\n    '''Return x plus y.'''\n", "    return x + y\n"


def write_eval(run_dir: Path, model: str, scores: dict[str, np.ndarray], seed: int = 0) -> Path:
    """A 60_eval run folder: config, run.json, metrics (eval/...), samples/*.jsonl, eval_summary.json."""
    from nebula_utils.stats import bootstrap_mean

    rng = np.random.default_rng(seed)
    benches, metrics = {}, {}
    (run_dir / "samples").mkdir(parents=True, exist_ok=True)
    for name, s in scores.items():
        cap = SUITE[name][0]
        rows = []
        for i, v in enumerate(s):
            prompt, target = _item_text(name, i, rng)
            response = target if v else "I think the answer is 7."
            rows.append(
                {"id": f"{name}/{i}", "score": float(v), "prompt": prompt, "response": response, "target": target}
            )
        (run_dir / "samples" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        est = bootstrap_mean(s, resamples=200)
        benches[name] = {
            "score": est.value,
            "n": len(s),
            "ci95": [est.low, est.high],
            "capability": cap,
            "metric": "exact_match" if cap == "math" else ("pass@1" if cap == "code" else "strict_all"),
            "path": f"samples/{name}.jsonl",
            "harness": "verifiable",
        }
        metrics[f"eval/{name}"] = est.as_metric()
    average = float(np.mean([b["score"] for b in benches.values()]))
    metrics["eval/average"] = {"value": average, "n": len(benches), "ci95": None}
    caps = {}
    for b in benches.values():
        caps.setdefault(b["capability"], []).append(b["score"])
    config = {"model": model, "suite": "verifiable", "part": "dev", "limit": len(next(iter(scores.values())))}
    write_run(run_dir, "60_eval", config | {"max_gen_toks": 256, "bootstrap_resamples": 1000}, metrics)
    summary = {
        "suite": "verifiable",
        "part": "dev",
        "model": model,
        "benchmarks": benches,
        "skipped": {},
        "average": average,
        "capabilities": {c: float(np.mean(v)) for c, v in caps.items()},
    }
    (run_dir / "eval_summary.json").write_text(json.dumps(summary, indent=2))
    return run_dir


def correlated_scores(n: int, base_rate: float, new_rate: float, keep: float, rng: np.random.Generator):
    """(base, new) 0/1 scores of n items: one latent ease per item, kept by the new run with
    probability `keep` (the rest redrawn), each run correct below its own rate."""
    ease = rng.random(n)
    later = np.where(rng.random(n) < keep, ease, rng.random(n))
    return (ease < base_rate).astype(float), (later < new_rate).astype(float)


def _sft_rows(n: int, task: str = "math_reasoning", start: int = 0) -> list[dict]:
    return [
        {
            "id": f"rg:chain_sum:{i}",
            "source": "reasoning_gym",
            "license": "Apache-2.0",
            "task": task,
            "messages": [{"role": "user", "content": f"{i} + 3 = ?"}, {"role": "assistant", "content": str(i + 3)}],
            "verifier": "math",
            "reference": {"answer": str(i + 3)},
        }
        for i in range(start, start + n)
    ]


def _data_chain(root: Path) -> dict[str, Path]:
    """10_data_sft_mix (sft, rl) -> 14_classify_sample/data -> 16_curriculum/{base, complex}."""
    from nebula_utils.data.manifests import processing_step, source_entry
    from nebula_utils.data.schema import to_dataset
    from nebula_utils.data.versions import derive_version, record_consumption, save_version

    data = write_run(root / "10_data_sft_mix-bf4cb6dc", "10_data_sft_mix", {"sft_math_per_task": 12})
    ds = to_dataset("sft", _sft_rows(24))
    sources = [source_entry("reasoning_gym", path="reasoning_gym", license="Apache-2.0"), source_entry("humaneval")]
    steps = [processing_step("generate:reasoning_gym/chain_sum", count_in=26, count_out=24, drop_reasons={"dup": 2})]
    save_version(ds, data / "sft", "sft", sources, steps)
    rl = to_dataset("sft", _sft_rows(12, start=100))
    save_version(rl, data / "rl", "sft", sources[:1], [processing_step("generate", count_in=12, count_out=12)])
    cls = write_run(root / "14_classify_sample-0e6b7365", "14_classify_sample", {"data": str(data / "sft")})
    derive_version(
        data / "sft",
        ds.select(range(19)),
        cls / "data",
        processing_step("diversity_sample", count_in=24, count_out=19, drop_reasons={"not_sampled": 5}),
    )
    cur = write_run(
        root / "16_curriculum-770b09bf", "16_curriculum", {"data": str(cls / "data"), "rl_data": str(data / "rl")}
    )
    derive_version(
        cls / "data",
        ds.select(range(12)),
        cur / "base",
        processing_step("mix:base", count_in=19, count_out=12, drop_reasons={"other_mix": 7}),
    )
    derive_version(
        cls / "data",
        ds.select(range(12, 19)),
        cur / "complex",
        processing_step("mix:complex", count_in=19, count_out=7, drop_reasons={"other_mix": 12}),
    )
    for version, reader in ((data / "sft", cls), (cls / "data", cur), (data / "rl", cur)):
        record_consumption(version, reader.name, reader.name.rsplit("-", 1)[0])
    return {"data": data, "classify": cls, "curriculum": cur}


def _sft_run(root: Path, name: str, model: str, data: Path, steps: int, start_loss: float) -> Path:
    run = write_run(
        root / name,
        "20_sft",
        {"model": model, "data": str(data), "learning_rate": 5e-5, "max_length": 512},
        {"train/loss_last": {"value": start_loss * 0.55, "n": steps, "ci95": None}},
    )
    log = [
        {"step": s, "loss": round(start_loss * (0.55 + 0.45 * np.exp(-s / (steps / 3))), 4), "learning_rate": 5e-5}
        for s in range(1, steps + 1)
    ]
    (run / "train_log.json").write_text(json.dumps(log + [{"step": steps, "train_runtime": 61.0}]))
    from nebula_utils.data.versions import record_consumption

    record_consumption(data, run.name, "20_sft")
    (run / "model").mkdir()
    (run / "model" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return run


def build_demo_results(root: Path, n_items: int = 200, small_n: int = 24, seed: int = 11) -> dict[str, Path]:
    """The demo-shaped results tree under `root` (a results root); returns the named run folders."""
    base_model = "packaged:smollm2-135m-instruct"
    folder = root / "demo"
    chain = _data_chain(folder)
    sft1 = _sft_run(folder, "20_sft-437d448b", base_model, chain["curriculum"] / "base", 30, 2.1)
    sft2 = _sft_run(folder, "20_sft-9a1c03e2", str(sft1 / "model"), chain["curriculum"] / "complex", 20, 1.4)
    rng = np.random.default_rng(seed)
    base, sft = {}, {}
    for name, (_, p_base, p_sft) in SUITE.items():
        base[name], sft[name] = correlated_scores(n_items, p_base, p_sft, keep=0.7, rng=rng)
    runs = {
        "base": write_eval(folder / "60_eval-5b2e10c4", base_model, base),
        "sft": write_eval(folder / "60_eval-d81f5a09", str(sft2 / "model"), sft),
        "sft@24": write_eval(
            folder / "60_eval-3c7e2b1d", str(sft2 / "model"), {k: v[:small_n] for k, v in sft.items()}
        ),
    }
    return chain | {"sft1": sft1, "sft2": sft2} | runs
