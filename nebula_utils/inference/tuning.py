"""Measured choices for generation: weight dtype and batch size, per machine and architecture, cached.

`tune_generation(model)` times one decode step (random keys/values, `CONTEXT` cached tokens) at
batch sizes 1, 2, 4, ... for each candidate dtype, fits step time = a + b * rows to the points
(`step_model`, robust to single noisy points) and keeps:
- the dtype with the highest tokens/s, where bf16 is a candidate only on CPUs with native bf16
  (cpu.bf16_worth_trying: flags + a measured matmul) and is kept only when >= BF16_MARGIN x faster
  than fp32 (bf16 moves log-probs by up to ~0.14; see tests/inference/test_generation_fast.py);
- the smallest batch size within KNEE of that dtype's best: past the knee a step costs about as
  much per row, and a larger batch only holds more memory and leaves a longer tail of rows
  decoding alone.
The sweep takes ~1-3 min for SmolLM2-135M on 2 busy cores (a few s for tiny-random) and is cached in
$NEBULA_CACHE/tuning/generation.json keyed by cpu.machine_key() and the architecture, so a
machine measures once. On this project's 2-core AMD EPYC (avx512_bf16; thread clock; SmolLM2-135M):
fp32 steps cost 64 ms + 2.2 ms per row, bf16 38 ms + 1.4 ms per row -> bf16 at 128 rows (574 vs
366 tokens/s predicted at 128 rows). Generation throughput: benchmarks/generation.py.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
from typing import Any

from ..io import atomic_write_json
from . import cpu
from .models import cache_dir

SWEEP = (1, 2, 4, 8, 16, 32, 64, 128)
CONTEXT = 256  # cached tokens per row while timing: a ~100-token chat prompt plus half of a long answer
KNEE = 0.9
BF16_MARGIN = 1.1
STOP_BELOW = 0.8  # a size this far below the best so far is past the knee
STEPS = 3  # decode steps timed per (dtype, size) and pass; the fastest counts
PASSES = 1  # full sweeps, best per point kept: with the thread clock and the fit one suffices (2: 194 s here)
KV_BUDGET_BYTES = 4 << 30  # largest KV cache (CONTEXT tokens per row) a sweep will allocate
GPU_BATCH_SIZE = 64  # documented constant where nothing is measured (transformers backend on GPU)


def tuning_file():
    return cache_dir().parent / "tuning" / "generation.json"


def architecture_key(model: Any) -> str:
    c = model.config.get_text_config(decoder=True)
    parts = [getattr(c, k, None) for k in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads")]
    parts += [getattr(c, k, None) for k in ("num_key_value_heads", "intermediate_size", "vocab_size")]
    return "-".join(str(p) for p in parts)


def _kv_bytes_per_token(model: Any, dtype: str) -> int:
    c = model.config.get_text_config(decoder=True)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    return 2 * c.num_hidden_layers * heads * head_dim * (4 if dtype == "float32" else 2)


def _sweep(models: dict[str, Any], sizes: tuple[int, ...], fast_paths: bool) -> dict[str, dict[str, float]]:
    """{dtype: {batch size: tokens/s}}; dtypes interleaved at each size so that a burst of load from
    other processes hits both, best of STEPS steps each, stopped once every dtype has fallen below
    STOP_BELOW x its best for two sizes in a row (past the knee)."""
    from .engine import decode_step_seconds

    table: dict[str, dict[str, float]] = {name: {} for name in models}  # str keys: stored as JSON
    for _ in range(PASSES):
        strikes = dict.fromkeys(models, 0)
        for rows in sizes:
            for name, model in models.items():
                if rows > 1 and rows * CONTEXT * _kv_bytes_per_token(model, name) > KV_BUDGET_BYTES:
                    strikes[name] = 2
                if strikes[name] >= 2:
                    continue
                rate = rows / decode_step_seconds(model, rows, CONTEXT, steps=STEPS, fast_paths=fast_paths)
                rate = max(rate, table[name].get(str(rows), 0.0))
                table[name][str(rows)] = round(rate, 1)
                strikes[name] = strikes[name] + 1 if rate < STOP_BELOW * max(table[name].values()) else 0
            if all(v >= 2 for v in strikes.values()):
                break
    return table


def _model_dtype(model: Any) -> str:
    return str(model.dtype).removeprefix("torch.")


def candidates(model: Any, dtype: str = "auto") -> list[str]:
    if dtype != "auto":
        return [dtype]
    base = _model_dtype(model)
    return [base, "bfloat16"] if base == "float32" and cpu.bf16_worth_trying() else [base]


def step_model(rates: dict[str, float]) -> tuple[float, float]:
    """(a, b) with decode-step seconds = a + b * rows, fitted to {rows: tokens/s} by Theil-Sen (median
    of pairwise slopes): `a` is what a step costs whatever the batch (reading the weights, Python),
    `b` what each row adds. Medians, because on a shared machine single points are often 2-5x off
    (this machine, one sweep: bf16 at 64 rows read 93 tok/s, at 128 rows 446)."""
    points = sorted((int(k), int(k) / v) for k, v in rates.items() if v > 0)
    if len(points) == 1:
        return points[0][1], 0.0
    slopes = [(t2 - t1) / (n2 - n1) for i, (n1, t1) in enumerate(points) for n2, t2 in points[i + 1 :]]
    b = max(statistics.median(slopes), 0.0)
    return max(statistics.median(t - b * n for n, t in points), 1e-9), b


def predicted(fit: tuple[float, float], rows: int) -> float:
    return rows / (fit[0] + fit[1] * rows)


def choose(table: dict[str, dict[str, float]]) -> tuple[str, int]:
    """(dtype, batch size) from the sweep {dtype: {batch size: tokens/s}}, through `step_model`:
    tokens/s rises with the batch size towards 1/b; the best dtype is the fastest at its largest
    measured size (bf16 only if BF16_MARGIN x fp32), and the batch size the smallest measured one
    within KNEE of that."""
    fits = {d: step_model(t) for d, t in table.items()}
    sizes = {d: sorted(int(k) for k in t) for d, t in table.items()}
    best = {d: predicted(fits[d], sizes[d][-1]) for d in table}
    dtype = max(best, key=best.get)
    if "float32" in best and dtype != "float32" and best[dtype] < BF16_MARGIN * best["float32"]:
        dtype = "float32"
    return dtype, min(n for n in sizes[dtype] if predicted(fits[dtype], n) >= KNEE * best[dtype])


def tune_generation(
    model: Any, dtype: str = "auto", batch_size: int = 0, fast_paths: bool = True, refresh: bool = False
) -> dict[str, Any]:
    """{"dtype", "batch_size", "tokens_per_s": {dtype: {size: tok/s}}, "machine", "context"}, cached."""
    if model.device.type != "cpu":
        return {"dtype": _model_dtype(model) if dtype == "auto" else dtype, "batch_size": batch_size or GPU_BATCH_SIZE}
    dtypes = candidates(model, dtype)
    sizes = (batch_size,) if batch_size else SWEEP
    key = (
        f"{cpu.machine_key()}|{architecture_key(model)}|{'+'.join(dtypes)}|{sizes}|context={CONTEXT}|fast={fast_paths}"
    )
    path = tuning_file()
    cached = json.loads(path.read_text()) if path.is_file() else {}
    if key in cached and not refresh and not os.environ.get("NEBULA_RETUNE"):
        return cached[key]
    models = {
        name: model if name == _model_dtype(model) else copy.deepcopy(model).to(cpu_dtype(name)) for name in dtypes
    }
    table = _sweep(models, sizes, fast_paths)
    del models
    chosen, size = choose(table)
    result = {"dtype": chosen, "batch_size": size, "tokens_per_s": table, "machine": cpu.machine_key()}
    fits = {d: step_model(t) for d, t in table.items()}
    result["step_ms"] = {d: {"fixed": round(1e3 * a, 2), "per_row": round(1e3 * b, 3)} for d, (a, b) in fits.items()}
    result["context"] = CONTEXT
    cached = json.loads(path.read_text()) if path.is_file() else {}  # another process may have written
    atomic_write_json(path, cached | {key: result})
    return result


def cpu_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)
