"""Generation throughput: the old static batches vs continuous batching vs batch-1 `model.generate`.

    OMP_NUM_THREADS=2 python benchmarks/generation.py [--model packaged:smollm2-135m-instruct]
        [--rounds 3] [--workloads short,reasoning,mixed] [--batch1-prompts 3] [--quick]

Three paths over the same prompts, greedy, in one process:
- `static`: the base commit's path (TransformersGenerator(scheduler="static"): fp32, prompts
  sorted by length, batches of 8 through `model.generate`, each waiting for its longest row);
- `continuous`: the new default (engine.ContinuousBatcher; dtype, batch size and CPU fast paths
  chosen by measurement, see nebula_utils/inference/tuning.py and fastpath.py);
- `batch1`: plain `model.generate`, one prompt at a time, fp32 (on the first --batch1-prompts
  prompts of each workload; tokens/s is a rate, so a subset measures it).
Three workloads: `short` (48 one-line questions, max 32 new tokens), `reasoning` (12 word
problems, "think step by step", max 256), `mixed` (12 short + 6 reasoning + 6 open-ended prompts
under one 256-token cap: the eval/distillation case where static batches wait for the longest).

The machine is shared with other processes, so the paths run interleaved (A/B/C, B/C/A, ...)
round after round and the table reports medians over rounds; each ratio is the median of the
per-round ratios (both sides measured minutes apart). Tokens are generated tokens up to and
including the end-of-turn token. Utilisation = tokens/s x 2 x (matmul parameters) over the
measured matmul peak of the dtype the path ran in (benchmarks/peak.py, measured before and after,
best kept); prompt tokens are not counted, so it is the decode utilisation.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

COUNTRIES = ["France", "Japan", "Kenya", "Peru", "Canada", "Egypt", "Norway", "India", "Chile", "Spain", "Italy"]
WORDS = ["hot", "tall", "happy", "early", "light", "open", "full", "fast", "old", "rich", "strong", "soft"]
TOPICS = ["the ocean at night", "a city in the rain", "learning to code", "an old library", "friendship", "winter"]
EXPLAIN = ["how a bicycle stays upright", "why leaves change colour", "what a database index is"]


def short_prompts(n: int = 48) -> list[str]:
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            out.append(f"What is {17 + 3 * i} + {25 + 7 * i}? Reply with the number only.")
        elif kind == 1:
            out.append(f"What is the capital of {COUNTRIES[i % len(COUNTRIES)]}? Answer in one word.")
        elif kind == 2:
            out.append(f"Give the opposite of the word '{WORDS[i % len(WORDS)]}'. One word only.")
        else:
            out.append(f"Is {11 * i + 4} an even number? Answer yes or no.")
    return out


def reasoning_prompts(n: int = 16) -> list[str]:
    out = []
    for i in range(n):
        a, b, c = 12 + 5 * i, 3 + i % 5, 4 + i % 7
        out.append(
            f"A shop has {a} apples. It receives {b} boxes with {c} apples each, then sells {a // 2} apples. "
            "How many apples are left? Think step by step, then give the final answer."
        )
    return out


def open_prompts(n: int = 8) -> list[str]:
    poems = [f"Write a short poem about {t}." for t in TOPICS]
    explain = [f"Explain {e} in one paragraph." for e in EXPLAIN]
    paired = [p for pair in zip(poems, explain) for p in pair]
    return (paired + poems[len(explain) :])[:n]


def workloads() -> dict[str, tuple[list[str], int]]:
    mixed = []
    shorts, reasons, opens = short_prompts(12), reasoning_prompts(6), open_prompts(6)
    for i in range(6):  # interleaved, as a real mixed request list would be
        mixed += shorts[2 * i : 2 * i + 2] + [reasons[i], opens[i]]
    return {"short": (short_prompts(), 32), "reasoning": (reasoning_prompts(12), 256), "mixed": (mixed, 256)}


def load_peak():
    spec = importlib.util.spec_from_file_location("peak", Path(__file__).with_name("peak.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.measure_peak


def matmul_params(model) -> int:
    from torch import nn

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def run_generator(gen, prompts, params) -> tuple[int, float, list[str]]:
    start = time.perf_counter()
    groups = gen.generate_full(prompts, params)
    seconds = time.perf_counter() - start
    return sum(g[0].num_tokens for g in groups), seconds, [g[0].text for g in groups]


def run_batch1(gen, prompts, max_new_tokens) -> tuple[int, float, list[str]]:
    """Plain `model.generate`, one prompt at a time, on the static generator's (fp32) model."""
    import torch

    tok, model, tokens, texts = gen.tokenizer, gen.model, 0, []
    start = time.perf_counter()
    for text in gen.chat_texts(prompts):
        enc = tok(text, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        completion = gen._completion(out[0, enc["input_ids"].shape[1] :].tolist(), None)
        tokens += completion.num_tokens
        texts.append(completion.text)
    return tokens, time.perf_counter() - start, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workloads", default="short,reasoning,mixed")
    parser.add_argument("--batch1-prompts", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 round, a quarter of the prompts (smoke check)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    import torch

    from nebula_utils.inference.generation import SamplingParams, TransformersGenerator
    from nebula_utils.inference.models import load_model_and_tokenizer

    measure_peak = load_peak()
    peak_before = measure_peak(seconds=1.0)
    model, tok = load_model_and_tokenizer(args.model, device="cpu")
    static = TransformersGenerator(model, tok, model_spec=args.model, scheduler="static")
    new = TransformersGenerator(copy.deepcopy(model), tok, model_spec=args.model, owns_model=True)
    tune_start = time.perf_counter()
    spec = new.spec()  # resolves dtype and batch size (measured once per machine, then cached)
    print(f"continuous: {json.dumps(spec)} (resolved in {time.perf_counter() - tune_start:.1f} s)", flush=True)
    flops_per_token = 2 * matmul_params(model)

    chosen = {w: workloads()[w] for w in args.workloads.split(",")}
    rounds = 1 if args.quick else args.rounds
    if args.quick:
        chosen = {w: (p[: max(4, len(p) // 4)], m) for w, (p, m) in chosen.items()}
    warm = SamplingParams(max_new_tokens=4)
    for gen in (static, new):
        gen.generate_full(["Hello"] * 2, warm)  # allocations, kernels, packed weights

    paths = ["static", "continuous", "batch1"]
    rates: dict[tuple[str, str], list[float]] = {}
    texts: dict[tuple[str, str], list[str]] = {}
    for r in range(rounds):
        order = paths[r % 3 :] + paths[: r % 3]
        for name, (prompts, max_new) in chosen.items():
            params = SamplingParams(max_new_tokens=max_new)
            for path in order:
                if path == "batch1":
                    tokens, seconds, out = run_batch1(static, prompts[: args.batch1_prompts], max_new)
                else:
                    tokens, seconds, out = run_generator(static if path == "static" else new, prompts, params)
                rates.setdefault((name, path), []).append(tokens / seconds)
                texts[(name, path)] = out
                print(
                    f"round {r} {name:>9} {path:>10}: {tokens:5d} tokens {seconds:7.1f} s {tokens / seconds:7.1f} tok/s"
                )
                sys.stdout.flush()
    peak_after = measure_peak(seconds=1.0)
    peak = {d: max(peak_before["peak"][d], peak_after["peak"][d]) for d in ("float32", "bfloat16")}

    dtype_of = {"static": "float32", "batch1": "float32", "continuous": spec["dtype"]}
    print(f"\n{args.model}, {torch.get_num_threads()} threads, {rounds} round(s), medians over rounds")
    print(f"matmul peak: fp32 {peak['float32'] / 1e9:.0f} GFLOP/s, bf16 {peak['bfloat16'] / 1e9:.0f} GFLOP/s")
    print(f"{'workload':>9} {'path':>10} {'tok/s':>8} {'x static':>9} {'x batch1':>9} {'% peak':>7}")
    summary = {}
    for name in chosen:
        for path in paths:
            rate = statistics.median(rates[(name, path)])
            vs_static = statistics.median(a / b for a, b in zip(rates[(name, path)], rates[(name, "static")]))
            vs_b1 = statistics.median(a / b for a, b in zip(rates[(name, path)], rates[(name, "batch1")]))
            util = rate * flops_per_token / peak[dtype_of[path]]
            summary[f"{name}/{path}"] = {"tok_s": round(rate, 1), "x_static": round(vs_static, 2)}
            summary[f"{name}/{path}"] |= {"x_batch1": round(vs_b1, 2), "pct_peak": round(100 * util, 2)}
            print(f"{name:>9} {path:>10} {rate:8.1f} {vs_static:8.2f}x {vs_b1:8.2f}x {100 * util:6.2f}%")
        same = sum(a == b for a, b in zip(texts[(name, "continuous")], texts[(name, "static")]))
        print(f"{name:>9} continuous completions identical to static: {same}/{len(texts[(name, 'static')])}")
    print(json.dumps({"model": args.model, "peak": peak, "spec": spec, "rounds": rounds, "summary": summary}))


if __name__ == "__main__":
    main()
