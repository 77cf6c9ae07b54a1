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
# wall: perf_counter, the usual peak. thread: the main thread's CPU time, which on a machine shared
# with other processes approximates the unshared wall time (see engine.decode_step_seconds).
CLOCKS = ("wall", "thread")


def measure_peak(sizes: tuple[int, ...] = (2048,), seconds: float = 2.0) -> dict:
    """{"threads", "cpu", "flags", "float32": {size: FLOP/s}, "bfloat16": {...}, "peak": {dtype: best}}."""
    import torch

    from nebula_utils.inference import cpu

    out = {"threads": torch.get_num_threads(), "cpu": cpu.cpu_name(), "native_bf16": cpu.native_bf16()}
    out["flags"] = [f for f in cpu.FLAGS_OF_INTEREST if f in cpu.cpu_flags()]
    for clock in CLOCKS:
        for dtype in ("float32", "bfloat16"):
            runs = {f"{route} {n}": _flops(dtype, n, seconds, route, clock) for route in ROUTES for n in sizes}
            out[f"{dtype} {clock}"] = runs
        out[f"peak {clock}"] = {d: max(out[f"{d} {clock}"].values()) for d in ("float32", "bfloat16")}
    out["peak"] = out["peak wall"]
    return out


def _flops(dtype: str, size: int, seconds: float, route: str, clock: str) -> float:
    from nebula_utils.inference import cpu

    try:
        return cpu.matmul_flops(dtype, size, seconds, route=route, clock=clock)
    except (RuntimeError, AttributeError, NotImplementedError):  # no oneDNN in this torch build
        return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,2048")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    result = measure_peak(tuple(int(s) for s in args.sizes.split(",")), args.seconds)
    print(f"{result['cpu']}, {result['threads']} threads, flags: {' '.join(result['flags'])}")
    for clock in CLOCKS:
        for dtype in ("float32", "bfloat16"):
            for key, flops in result[f"{dtype} {clock}"].items():
                route, size = key.split()
                print(f"{clock:>6} {dtype:>9} {route:>6} {size:>5}^2 matmul: {flops / 1e9:8.1f} GFLOP/s")
        peak = result[f"peak {clock}"]
        ratio = peak["bfloat16"] / peak["float32"]
        print(
            f"{clock} peak: fp32 {peak['float32'] / 1e9:.1f}, bf16 {peak['bfloat16'] / 1e9:.1f} GFLOP/s, {ratio:.2f}x"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
