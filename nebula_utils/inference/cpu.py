"""What this CPU can do fast, detected at run time: instruction-set flags plus a measured matmul.

Fast paths (bf16 weights for generation, bf16 autocast for training) are only worth taking where
the hardware has native bf16 dot products: on this project's 2-core AMD EPYC (`avx512_bf16`,
no AMX) a 2048^2 matmul runs at ~150 GFLOP/s in fp32 and ~1,330 GFLOP/s in bf16 (8.9x), while on a
CPU without them PyTorch emulates bf16 and it is slower than fp32. The flags say whether to try;
the measurement decides. CI machines differ, so nothing here is hard-coded per machine.

    native_bf16()            # flag check (Linux /proc/cpuinfo; Apple silicon and others: False)
    matmul_flops("bfloat16") # measured FLOP/s of a square matmul on the current torch threads
    bf16_matmul_speedup()    # tiny measured ratio bf16/fp32; < 1 on CPUs that emulate bf16
    machine_key()            # identifies (CPU, threads, torch) for caching measurements
"""

from __future__ import annotations

import functools
import os
import platform
import time
from pathlib import Path

# x86: AMX tiles (Sapphire Rapids+) or AVX-512 BF16 dot products (Cooper Lake, Zen 4/5).
# aarch64 reports "bf16" (Graviton 3, Neoverse V1+) in its Features line.
BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "bf16", "sve")


@functools.cache
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The first processor's feature flags (x86 `flags`, ARM `Features`); empty where unreadable."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.cache
def cpu_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "CPU part"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU advertises native bf16 dot products (the precondition for trying bf16)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_FLAGS)


def matmul_flops(
    dtype: str = "float32",
    size: int = 2048,
    seconds: float = 1.0,
    min_reps: int = 3,
    route: str = "mm",
    clock: str = "wall",
) -> float:
    """Best measured FLOP/s of a `size`^2 @ `size`^2 matmul (2*size^3 FLOPs) on the current threads.

    route "mm": `torch.mm` (MKL sgemm for fp32, oneDNN for bf16); "onednn": oneDNN with the weight
    pre-packed (fastpath.PackedLinear's op), which on AMD CPUs beats MKL's fp32 path.
    Best-of rather than mean: on a shared machine other processes only ever slow a repetition
    down, so the fastest one is the closest to what the cores can do. clock "thread" times the
    calling thread's CPU time (it computes its share of the matmul), blind to time-slicing.
    """
    import torch

    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dt)
    b = torch.randn(size, size, generator=gen).to(dt)
    if route == "onednn":
        packed = torch.ops.mkldnn._reorder_linear_weight(b, size)

        def run():
            return torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [None], "")
    else:

        def run():
            return torch.mm(a, b)

    timer = time.thread_time if clock == "thread" else time.perf_counter
    run()  # warm-up: thread pool, scratch buffers
    best, reps, start = float("inf"), 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - start < seconds:
        t = timer()
        run()
        best = min(best, timer() - t)
        reps += 1
    return 2 * size**3 / best


@functools.cache
def bf16_matmul_speedup(size: int = 512, rounds: int = 5) -> float:
    """Measured bf16/fp32 FLOP/s ratio of a small matmul (~0.2 s): the run-time check behind the flags.

    The two dtypes alternate and each keeps its best round, so a burst of load from other
    processes cannot land on one side only (single back-to-back measurements on this project's
    loaded 2-core machine read anywhere from < 1.2x to 47x; typical: ~5x at 512^2).
    """
    best = {"bfloat16": 0.0, "float32": 0.0}
    for _ in range(rounds):
        for dtype in best:
            best[dtype] = max(best[dtype], matmul_flops(dtype, size, seconds=0.02))
    return best["bfloat16"] / best["float32"]


def bf16_worth_trying(min_speedup: float = 1.0) -> bool:
    """Native bf16 flags, and a measured matmul no slower than fp32 (emulated bf16 is several times
    slower). Whether bf16 *generation* is faster is then decided by tuning.py's measured sweep."""
    return native_bf16() and bf16_matmul_speedup() >= min_speedup


def machine_key() -> str:
    """(CPU model, relevant flags, torch threads, torch version): what measured choices depend on."""
    import torch

    flags = "+".join(f for f in FLAGS_OF_INTEREST if f in cpu_flags())
    return f"{cpu_name()}|{flags}|threads={torch.get_num_threads()}|torch={torch.__version__}"


# glibc malloc serves every allocation above its mmap threshold (128 KiB, adapting up to 32 MiB)
# with a fresh mmap and returns it to the kernel on free, so a tensor the size of SmolLM2's
# 49152 x 576 embedding gradient (113 MB, allocated and zero-filled once per training step) or its
# 500 x 49152 logits page-faults in every step. Raising the threshold above any tensor we allocate
# keeps freed memory in the process for reuse (the heap keeps its peak size; nothing is returned to
# the kernel until exit). Measured by benchmarks/allocator.py (demo SFT rows, packed bf16, 2 threads
# on a Xeon with AMX, 2 rounds A/B in child processes): minor page faults 0.33x, system time 0.74x,
# tokens/s 1.03x wall and 1.07x per CPU-second. Small but free; glibc still maps some 113 MB
# allocations afresh (zeroing one takes ~95 ms when it faults in, ~40 ms when reused). Read at
# process start only, so it is set in the environment of the processes we start (notebook kernels).
GLIBC_MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"


def set_child_process_env_defaults(environ: dict | None = None, num_threads: int = 2) -> None:
    """Environment defaults for the processes that train and generate (notebook kernels, benchmark
    children), each set only where the user has not set it: the OpenMP thread cap (generation-heavy
    code ran up to 40x slower on 2 cores without it) and glibc's allocator thresholds
    (GLIBC_MALLOC_TUNABLES; a user's own GLIBC_TUNABLES wins whole). `environ`: default os.environ."""
    environ = os.environ if environ is None else environ
    environ.setdefault("OMP_NUM_THREADS", str(num_threads))
    environ.setdefault("GLIBC_TUNABLES", GLIBC_MALLOC_TUNABLES)
