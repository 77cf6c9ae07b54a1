"""Fast verifiable evaluation: the workbench's own task suites, scored by its verifiers.

Prompts come from the same generators the data stages use (nebula_utils.data.sources) with an
evaluation seed the suites reserve; answers come from nebula_utils.inference.generation (transformers on
CPU, vLLM on GPU) with the chat template, greedy; scores come from nebula_utils.verifiers, so an
RL reward and its evaluation number are computed by one implementation. Nothing here reads
../shared unless a benchmark asks for a shared_* source (then a missing file is a skip).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .lm_tasks import MissingData
from .suites import Benchmark

# verifier -> the metric name its per-item score is (IFEval: all instructions followed, strict).
METRICS = {"math": "accuracy", "ifeval": "prompt_level_strict_acc", "code": "pass@1"}


def _count(b: Benchmark, limit: int) -> int | None:
    if b.n and limit:
        return min(b.n, limit)
    return b.n or limit or None


def load_items(b: Benchmark, data_root: str | Path, limit: int = 0) -> list[dict[str, Any]]:
    """Rows {id, prompt, messages, verifier, reference} of a verifiable benchmark."""
    from ..data import sources

    n = _count(b, limit)
    try:
        if b.source == "reasoning_gym":
            ds = sources.reasoning_gym_rl(b.task, n or 100, b.seed).dataset
        elif b.source == "ifeval_constraints":
            ds = sources.ifeval_constraint_prompts(n or 100, b.seed).dataset
        elif b.source == "humaneval":
            ds = sources.humaneval_rl(n, split=b.task or "eval").dataset
        elif b.source == "shared_gsm8k":
            ds = sources.shared_gsm8k(data_root, split="test", n=n, kind="rl").dataset
        elif b.source == "shared_ifeval":
            ds = sources.shared_ifeval(data_root, n).dataset
        else:
            raise ValueError(f"{b.name}: unknown verifiable source '{b.source}'")
    except FileNotFoundError as exc:
        raise MissingData(f"{b.name}: {exc}") from None
    rows = []
    for row in ds:
        ref = row["reference"]
        ref = json.loads(ref) if isinstance(ref, str) else dict(ref)
        rows.append(
            {
                "id": row["id"],
                "prompt": row["prompt"],
                "messages": row["messages"],
                "verifier": row["verifier"],
                "reference": ref,
            }
        )
    return rows


def _score(verifier: str, results: list) -> list[float]:
    # IFEval's reward gives partial credit per instruction; the benchmark number is prompt-level.
    if verifier == "ifeval":
        return [1.0 if r.passed else 0.0 for r in results]
    return [r.score for r in results]


def score_items(items: list[dict], responses: list[str], workers: int = 2) -> list[dict[str, Any]]:
    """Verify responses[i] against items[i]; rows in the stage's samples format (+ reason)."""
    from ..verifiers import get_verifier, verify_batch

    rows: list[dict[str, Any] | None] = [None] * len(items)
    for name in sorted({it["verifier"] for it in items}):
        idx = [i for i, it in enumerate(items) if it["verifier"] == name]
        verifier = get_verifier(name, **({"strict": True} if name == "ifeval" else {}))
        refs = [{"prompt": items[i]["prompt"]} | items[i]["reference"] for i in idx]
        results = verify_batch(verifier, [responses[i] for i in idx], refs, workers=workers)
        for i, res, score in zip(idx, results, _score(name, results)):
            rows[i] = {
                "id": items[i]["id"],
                "score": score,
                "prompt": items[i]["prompt"],
                "response": responses[i],
                "target": items[i]["reference"].get("answer", items[i]["reference"].get("instruction_id_list")),
                "reason": res.reason,
            }
    return rows  # type: ignore[return-value]


def generate(generator: Any, items: list[dict], max_gen_toks: int, seed: int = 0) -> list[str]:
    from ..inference.generation import SamplingParams

    params = SamplingParams(n=1, max_new_tokens=max_gen_toks, temperature=0.0, seed=seed)
    return [outs[0] for outs in generator.generate([it["messages"] for it in items], params)]


def run_benchmark(
    generator: Any, b: Benchmark, data_root: str | Path, limit: int, max_gen_toks: int, seed: int = 0
) -> tuple[list[dict], str]:
    """(per-item rows, metric name) for one verifiable benchmark."""
    items = load_items(b, data_root, limit)
    if not items:
        raise MissingData(f"{b.name}: the source produced no items")
    generator.progress_label = f"eval {b.name}"  # the line `nebula run` echoes while it decodes
    rows = score_items(items, generate(generator, items, max_gen_toks, seed))
    return rows, METRICS[items[0]["verifier"]]
