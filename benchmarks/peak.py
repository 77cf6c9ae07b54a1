"""The machine's measured matmul peak: FLOP/s of large fp32 and bf16 matmuls on the current cores.

    OMP_NUM_THREADS=2 python benchmarks/peak.py [--sizes 1024,2048] [--seconds 2]

Utilisation figures (benchmarks/generation.py, training MFU) divide by these numbers, so they use
the same threads as the workload (torch.get_num_threads(), i.e. OMP_NUM_THREADS). Each entry is the
best repetition over `--seconds` (other processes sharing the cores only slow a repetition down).
bf16 is measured everywhere; on CPUs without native bf16 (see nebula_utils.inference.cpu) it is
emulated and reads slower than fp32, which is the point of measuring. Prints one line per dtype and
size, the bf16/fp32 ratio, then a JSON line; `measure_peak()` is what other benchmarks import.
"""

from __future__ import annotations

import argparse
import json

# torch.mm (MKL sgemm for fp32, oneDNN for bf16) and oneDNN with a pre-packed weight: the peak of a
# dtype is the faster of the two, since MKL's fp32 path is slow on AMD CPUs (this machine: 2-3x)
ROUTES = ("mm", "onednn")


def measure_peak(sizes: tuple[int, ...] = (2048,), seconds: float = 2.0) -> dict:
    """{"threads", "cpu", "flags", "float32": {size: FLOP/s}, "bfloat16": {...}, "peak": {dtype: best}}."""
    import torch

    from nebula_utils.inference import cpu

    out = {"threads": torch.get_num_threads(), "cpu": cpu.cpu_name(), "native_bf16": cpu.native_bf16()}
    out["flags"] = [f for f in cpu.FLAGS_OF_INTEREST if f in cpu.cpu_flags()]
    for dtype in ("float32", "bfloat16"):
        out[dtype] = {f"{route} {n}": _flops(dtype, n, seconds, route) for route in ROUTES for n in sizes}
    out["peak"] = {dtype: max(out[dtype].values()) for dtype in ("float32", "bfloat16")}
    return out


def _flops(dtype: str, size: int, seconds: float, route: str) -> float:
    from nebula_utils.inference import cpu

    try:
        return cpu.matmul_flops(dtype, size, seconds, route=route)
    except (RuntimeError, AttributeError, NotImplementedError):  # no oneDNN in this torch build
        return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,2048")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    result = measure_peak(tuple(int(s) for s in args.sizes.split(",")), args.seconds)
    print(f"{result['cpu']}, {result['threads']} threads, flags: {' '.join(result['flags'])}")
    for dtype in ("float32", "bfloat16"):
        for key, flops in result[dtype].items():
            route, size = key.split()
            print(f"{dtype:>9} {route:>6} {size:>5}^2 matmul: {flops / 1e9:8.1f} GFLOP/s")
    ratio = result["peak"]["bfloat16"] / result["peak"]["float32"]
    print(f"peak: fp32 {result['peak']['float32'] / 1e9:.1f}, bf16 {result['peak']['bfloat16'] / 1e9:.1f} GFLOP/s")
    print(f"bf16 / fp32 = {ratio:.2f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
