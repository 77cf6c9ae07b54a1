"""Distillation throughput: generated tokens/s at batch 1 vs batch 8, same process, same prompts.

    OMP_NUM_THREADS=2 python benchmarks/distillation.py [--model packaged:smollm2-135m-instruct]
        [--prompts 8] [--max-new-tokens 64] [--k 2] [--backend transformers]

Each setting runs the same distillation call (k sampled answers per prompt, the teacher's
sampling params) after one untimed warm-up call; tokens are generated tokens up to and
including the end-of-turn token. Prints one line per batch size and the ratio to batch 1.
"""

from __future__ import annotations

import argparse
import json
import time

PROMPTS = [
    "What is 17 + 25? Explain briefly.",
    "Write a haiku about autumn leaves.",
    "Explain why the sky is blue in two sentences.",
    "Give three tips for learning a new language.",
    "What is the capital of France, and what is it known for?",
    "Write a Python function that reverses a string.",
    "Summarize the water cycle for a child.",
    "List four planets of the solar system.",
    "How many legs do three spiders have?",
    "Describe a sunrise over the sea.",
    "What does a compiler do?",
    "Suggest a name for a friendly robot.",
    "Why do we need sleep?",
    "Convert 5 kilometres to metres.",
    "Name two benefits of regular exercise.",
    "What is photosynthesis?",
]


def measure(generator, prompts, params) -> dict:
    from nebula_utils.inference.generation import GenerationStats

    generator.stats = GenerationStats()
    start = time.perf_counter()
    groups = generator.generate_full(prompts, params)
    seconds = time.perf_counter() - start
    tokens = sum(c.num_tokens for g in groups for c in g)
    return {
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
        "truncated": sum(c.truncated for g in groups for c in g),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--backend", default="transformers")
    parser.add_argument("--batch-sizes", default="1,8")
    args = parser.parse_args()

    import torch

    from nebula_utils.inference.generation import SamplingParams, make_generator

    gen = make_generator(args.model, backend=args.backend)
    params = SamplingParams(n=args.k, max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.95, seed=0)
    prompts = PROMPTS[: args.prompts]
    gen.generate_full(prompts[:2], SamplingParams(max_new_tokens=4))  # warm-up (allocations, kernels)
    results = {}
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        gen.batch_size = bs
        results[bs] = measure(gen, prompts, params)
        base = results[min(results)]["tokens_per_s"]
        print(
            f"batch {bs:>2}: {results[bs]['tokens_per_s']:7.1f} tok/s "
            f"({results[bs]['tokens']} tokens in {results[bs]['seconds']} s, {results[bs]['truncated']} truncated) "
            f"x{results[bs]['tokens_per_s'] / base:.2f} vs batch {min(results)}",
            flush=True,
        )
    print(
        json.dumps(
            {
                "model": args.model,
                "backend": gen.spec()["backend"],
                "threads": torch.get_num_threads(),
                "prompts": len(prompts),
                "k": args.k,
                "max_new_tokens": args.max_new_tokens,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
