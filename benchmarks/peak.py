"""Matmul peak of this machine: FLOP/s of a large fp32 and bf16 matmul on the same cores.

    OMP_NUM_THREADS=2 python benchmarks/peak.py [--n 2048] [--threads 2]

The denominator of every MFU / fraction-of-peak figure (benchmarks/sft_throughput.py, the SFT
stage's timing/train_mfu): best of 6 windows of 0.25 s of an n x n matmul (2 n^3 FLOP each) after a
warm-up call, timed by the process's CPU time / threads so that other processes sharing the cores
do not lower it (the wall-clock rate is printed beside it). Training caches the same measurement
per machine in $NEBULA_CACHE/peak_flops.json (nebula_utils.train.throughput.peak_flops).
"""

from __future__ import annotations

import argparse
import time


def measure_peak(dtype, n: int = 2048, threads: int = 2) -> float:
    """FLOP/s of an n x n matmul in `dtype` (torch dtype or its name) on `threads` CPU threads."""
    from nebula_utils.train.throughput import measure_matmul_peak

    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    return measure_matmul_peak(name, n=n, threads=threads)


def wall_rate(dtype: str, n: int, threads: int, seconds: float = 1.0) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n).to(getattr(torch, dtype)), torch.randn(n, n).to(getattr(torch, dtype))
    a @ b
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        a @ b
        calls += 1
    return 2 * n**3 * calls / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from nebula_utils.train.throughput import cpu_flags, cpu_model, native_cpu_bf16

    print(f"{cpu_model()}, {args.threads} threads, bf16 instructions: {native_cpu_bf16(cpu_flags()) or 'none'}")
    peaks = {}
    for dtype in ("float32", "bfloat16"):
        peaks[dtype] = measure_peak(dtype, args.n, args.threads)
        wall = wall_rate(dtype, args.n, args.threads)
        print(f"{dtype:9s} {peaks[dtype] / 1e9:8.0f} GFLOP/s (CPU time)  {wall / 1e9:8.0f} GFLOP/s (wall clock)")
    print(f"bf16 / fp32: {peaks['bfloat16'] / peaks['float32']:.2f}x")


if __name__ == "__main__":
    main()
