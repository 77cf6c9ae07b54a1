"""Training throughput accounting: tokens/s, padding and model FLOP utilisation (MFU).

    MFU = achieved model FLOP/s / the peak FLOP/s of the precision the matmuls run in
    achieved model FLOP/s = flops_per_token * tokens/s,  flops_per_token = 6 * N

N counts every parameter once (tied embeddings once): 2N per token forward and 4N backward (input
and weight gradients), the usual dense-transformer approximation (Kaplan et al. 2020). It leaves
out the attention scores (4 * layers * hidden * context per token forward; for SmolLM2-135M at
512 tokens that is +16% over 6N) and the optimizer, so MFU slightly understates the work done.
With LoRA the frozen weights get no weight gradient, so a token costs ~4N.

The peak is measured, not taken from a data sheet: the best FLOP/s of an n x n matmul (n = 2048,
2 * n^3 FLOP each) in fp32 or bf16 on the threads training uses, over a few 0.25 s windows after
a warm-up. It is measured once per machine (CPU model, thread count, torch version, dtype) and
cached in $NEBULA_CACHE/peak_flops.json (default ~/.cache/nebula/peak_flops.json); delete the
file to measure again. On a shared machine a busy neighbour lowers the measured peak; the best
window of several is kept because it is the closest to what the cores can do, and the cache keeps
the best measurement it has seen (`remember_peak`: benchmarks/sft_throughput.py records its own).
Measured on the 2-core dev machine: bf16 658 GFLOP/s cached under load vs 811 on a quiet machine,
so MFU figures logged against the first value read 23% high until a better peak is recorded.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

# bf16 autocast is used by `bf16: auto` only when a bf16 matmul measures at least this much
# faster than fp32: the matmuls are ~75% of a training step's time here, the rest (norms,
# softmax, optimizer, the LM head's fp32 backward in TRL's fused kernel) does not speed up, so a
# smaller matmul gain would not pay for the casts. Measured here: 2.7-3.7x (avx512_bf16, 2 threads).
BF16_MIN_MATMUL_SPEEDUP = 1.5
PEAK_N = 2048


def cache_root() -> Path:
    return Path(os.environ.get("NEBULA_CACHE") or Path.home() / ".cache" / "nebula")


def native_cpu_bf16() -> list[str]:
    """The bf16 instruction sets this CPU reports ([] = bf16 would be emulated, slower than fp32)."""
    from ..inference.cpu import BF16_FLAGS, cpu_flags

    return [f for f in BF16_FLAGS if f in cpu_flags()]


def measure_matmul_peak(
    dtype: str,
    n: int = PEAK_N,
    threads: int | None = None,
    device: str = "cpu",
    windows: int = 6,
    window_s: float = 0.25,
) -> float:
    """Best FLOP/s of an n x n matmul in `dtype` ("float32" | "bfloat16") over `windows` timed windows
    (`threads` sets torch's CPU thread count for the measurement and restores it).

    On CPU the time is the main thread's CPU time (nebula_utils.inference.cpu.matmul_flops,
    clock="thread"), not the wall clock: the FLOP/s the cores deliver while they run this process,
    so a busy neighbour does not lower the peak (measured on the 2-core dev machine at load
    average 10: fp32 17-24 GFLOP/s by wall clock, 144-154 by CPU time; bf16 68-73 vs 531-574). On
    an idle machine both agree."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        if not device.startswith("cuda"):
            from ..inference.cpu import matmul_flops

            # the main thread's CPU time: what the cores deliver while they run this matmul
            return matmul_flops(dtype, n, seconds=windows * window_s, clock="thread")
        a = torch.randn(n, n, device=device).to(getattr(torch, dtype))
        b = torch.randn(n, n, device=device).to(getattr(torch, dtype))
        a @ b  # warm-up: cuBLAS picks and caches its kernel on the first call
        torch.cuda.synchronize()
        best = 0.0
        for _ in range(windows):
            start, calls = time.perf_counter(), 0
            while time.perf_counter() - start < window_s or calls == 0:
                a @ b
                calls += 1
            torch.cuda.synchronize()
            best = max(best, 2 * n**3 * calls / (time.perf_counter() - start))
        return best
    finally:
        torch.set_num_threads(before)


def _machine_key(dtype: str, threads: int, n: int, device: str) -> str:
    import torch

    from ..inference.cpu import cpu_name

    if device.startswith("cuda"):
        return f"cuda|{torch.cuda.get_device_name(device)}|torch {torch.__version__}|{dtype}|n={n}"
    return f"cpu|{cpu_name()}|{threads} threads|torch {torch.__version__}|{dtype}|n={n}"


def _peak_cache(dtype: str, threads: int | None, n: int | None, device: str) -> tuple[Path, str, dict, int, int]:
    """(cache file, this machine's key, the cached table, threads, n) for a matmul peak."""
    import torch

    threads = threads or torch.get_num_threads()
    n = n or (8192 if device.startswith("cuda") else PEAK_N)
    path = cache_root() / "peak_flops.json"
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    return path, _machine_key(dtype, threads, n, device), table, threads, n


def peak_flops(
    dtype: str, threads: int | None = None, n: int | None = None, device: str = "cpu", refresh: bool = False
) -> dict[str, Any]:
    """The cached (else measured now) matmul peak of `dtype` on this CPU with `threads` threads (or
    on a CUDA device, n = 8192): {flops_per_s, dtype, threads, n, key, measured_at, cache, cached}."""
    path, key, table, threads, n = _peak_cache(dtype, threads, n, device)
    if key in table and not refresh:
        return table[key] | {"cache": str(path), "cached": True}
    measured = measure_matmul_peak(dtype, n, threads, device)
    return remember_peak(dtype, measured, threads, n, device) | {"cached": False}


def remember_peak(
    dtype: str, flops_per_s: float, threads: int | None = None, n: int | None = None, device: str = "cpu"
) -> dict[str, Any]:
    """Store a measured matmul peak in the cache unless it holds a higher one (a peak is a maximum:
    a lower reading only means something else had the cores); returns the entry kept."""
    path, key, table, threads, n = _peak_cache(dtype, threads, n, device)
    if key not in table or table[key]["flops_per_s"] < flops_per_s:
        table[key] = {
            "flops_per_s": flops_per_s,
            "dtype": dtype,
            "threads": threads,
            "n": n,
            "key": key,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
        os.replace(tmp, path)
    return table[key] | {"cache": str(path)}


def resolve_bf16(setting: bool | str, device: str = "cpu", threads: int | None = None) -> tuple[bool, str]:
    """Whether to train with bf16 autocast, and why. `setting`: "auto" | True | False.

    auto on CUDA: the GPU's bf16 support. auto on CPU: the CPU must report a native bf16
    instruction set (amx_bf16 / avx512_bf16; without one torch emulates bf16, slower than fp32) and
    the measured bf16 matmul peak must be >= BF16_MIN_MATMUL_SPEEDUP x the fp32 one. True forces
    bf16 (it runs anywhere, emulated where not native); False forces fp32.
    """
    if setting is False or setting == "false":
        return False, "bf16: false"
    if device.startswith("cuda"):
        import torch

        ok = torch.cuda.is_bf16_supported()
        if setting is True or setting == "true":
            return True, "bf16: true"
        return ok, f"auto: CUDA bf16 {'supported' if ok else 'unsupported'}"
    if setting is True or setting == "true":
        return True, "bf16: true (forced)"
    native = native_cpu_bf16()
    if not native:
        return False, "auto: the CPU reports no amx_bf16/avx512_bf16 (bf16 would be emulated): fp32"
    bf16 = peak_flops("bfloat16", threads)["flops_per_s"]
    fp32 = peak_flops("float32", threads)["flops_per_s"]
    ratio = bf16 / fp32
    use = ratio >= BF16_MIN_MATMUL_SPEEDUP
    verdict = "bf16" if use else "fp32"
    return use, (
        f"auto: {'/'.join(native)}; bf16 matmul {bf16 / 1e9:.0f} vs fp32 {fp32 / 1e9:.0f} GFLOP/s "
        f"({ratio:.1f}x, threshold {BF16_MIN_MATMUL_SPEEDUP}x): {verdict}"
    )


def count_params(model: Any) -> int:
    """Parameters counted once each (tied input/output embeddings once)."""
    seen: dict[int, int] = {}
    for p in model.parameters():
        seen.setdefault(id(p), p.numel())
    return sum(seen.values())


def flops_per_token(model: Any, lora: bool = False) -> float:
    """6N for full training (2N forward + 4N backward); 4N with LoRA (no frozen-weight gradients)."""
    return (4 if lora else 6) * count_params(model)


class TokenCounter:
    """Counts what each training forward sees, from the model's own inputs (a forward pre-hook,
    so it works with any collator and dataloader worker count): `tokens` = real tokens (attention
    mask, or every position in a padding-free batch), `target_tokens` = positions whose next-token
    label carries loss, `slots` = positions computed, padding included."""

    def __init__(self) -> None:
        self.tokens = self.target_tokens = self.slots = self.batches = 0
        self._handle = None

    def attach(self, model: Any) -> TokenCounter:
        self._handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        if not module.training:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return
        mask, labels = kwargs.get("attention_mask"), kwargs.get("labels")
        self.slots += ids.numel()
        self.tokens += int(mask.sum()) if mask is not None else ids.numel()
        if labels is not None:
            self.target_tokens += int((labels[..., 1:] != -100).sum())
        self.batches += 1

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.tokens / self.slots if self.slots else 0.0


def make_throughput_callback(counter: TokenCounter, flops_per_token: float, peak: float):
    """A transformers TrainerCallback that adds tokens_per_s, target_tokens_per_s and mfu (over
    the window since the previous log, wall clock, data loading and optimizer included) to every
    logged step, and keeps the totals of the whole run in `.summary()`."""
    import torch
    from transformers import TrainerCallback

    class ThroughputCallback(TrainerCallback):
        def __init__(self) -> None:
            self.start = self.end = self.cpu_start = self.cpu_end = self.last_time = 0.0
            self.threads = 1
            self.start_tokens = self.start_targets = self.last_tokens = self.last_targets = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = self.last_time = time.perf_counter()
            self.cpu_start, self.threads = time.process_time(), torch.get_num_threads()
            self.start_tokens = self.last_tokens = counter.tokens
            self.start_targets = self.last_targets = counter.target_tokens

        def on_train_end(self, args, state, control, **kwargs):
            self.end, self.cpu_end = time.perf_counter(), time.process_time()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is None or "loss" not in logs:
                return
            now = time.perf_counter()
            dt = max(now - self.last_time, 1e-9)
            rates = {
                "tokens_per_s": (counter.tokens - self.last_tokens) / dt,
                "target_tokens_per_s": (counter.target_tokens - self.last_targets) / dt,
            }
            rates["mfu"] = rates["tokens_per_s"] * flops_per_token / peak
            self.last_time, self.last_tokens, self.last_targets = now, counter.tokens, counter.target_tokens
            logs.update(rates)  # later callbacks (the printer) see them
            if state.log_history and state.log_history[-1].get("step") == state.global_step:
                state.log_history[-1].update(rates)  # Trainer.log stored a copy before the callbacks ran

        def summary(self) -> dict[str, float]:
            """Totals from the first step to the last. `mfu` is by wall clock (what a user waits for);
            `mfu_cpu_time` divides by the CPU time the process got (/ threads), like the peak, and
            `cpu_share` = that CPU time / (wall * threads): below 1 when neighbours took the cores."""
            seconds = max((self.end or time.perf_counter()) - self.start, 1e-9)
            cpu = max(((self.cpu_end or time.process_time()) - self.cpu_start) / self.threads, 1e-9)
            tokens = counter.tokens - self.start_tokens
            targets = counter.target_tokens - self.start_targets
            return {
                "seconds": seconds,
                "tokens": tokens,
                "target_tokens": targets,
                "tokens_per_s": tokens / seconds,
                "target_tokens_per_s": targets / seconds,
                "mfu": tokens * flops_per_token / seconds / peak,
                "mfu_cpu_time": tokens * flops_per_token / cpu / peak,
                "cpu_share": cpu / seconds,
            }

    return ThroughputCallback()
