"""SFT training throughput and MFU on a GPU, with and without the efficiency options, side by side.

    PYTHONPATH=. python benchmarks/gpu_throughput.py [--sizes 0.5b,1.7b] [--variants all]
        [--batch 8] [--seq 2048] [--steps 10] [--warmup 3] [--rounds 2] [--json out.json]

Models: random-initialised Qwen3 of the published 0.6B ("0.5b" class) and 1.7B shapes (configs
from nebula_utils.launch.planner.KNOWN_CONFIGS: nothing is downloaded), trained with AdamW on
random token sequences whose lengths are drawn uniformly from [seq/16, seq] (seeded, the same
sequences for every variant), with the plain transformers forward/backward (no TRL), so the
numbers are the model's and the options', not a trainer's.

Variants (VARIANTS below; one fresh subprocess each, so Liger's global patches and the CUDA
allocator of one variant never touch another; rounds rotate the order):
  fp32            fp32 weights and matmuls, SDPA attention, batches padded to their longest row (baseline)
  bf16            + bf16 autocast (fp32 master weights: mixed precision)
  bf16-ckpt       + activation checkpointing (less memory, one more forward)
  bf16-packed     + packing: sequences concatenated into full rows of `seq` tokens (no padding;
                  documents attend across their boundary, as plain packing does)
  bf16-padfree    + padding-free: every sequence of a batch in one row with position_ids restarting
                  per sequence; FlashAttention-2 keeps them isolated (needs flash_attn; else skipped)
  bf16-liger      + Liger kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy; needs liger_kernel)
  bf16-fa2        FlashAttention-2 instead of SDPA on padded batches (needs flash_attn)

Reported per size and variant: real (non-padding) tokens/s over the timed steps (after `--warmup`
steps), its ratio to the fp32 baseline of the same round, peak memory, and MFU =
flops_per_token * tokens/s / peak FLOP/s (nebula_utils.train.throughput: flops_per_token = 6N; the
peak is the measured bf16 matmul peak of this GPU, peak_flops(device="cuda"), so every variant is
on one scale; against the fp32 peak the fp32 row would look better). Median [min, max] over rounds.

Needs a CUDA GPU: without one it exits 2 saying so. `--device cpu --sizes tiny` runs the same code on
the 2-layer test shape, only to check the script (tests/launch/test_gpu_benchmark.py); its
numbers mean nothing. No GPU was available when this was written: no figure here is measured yet.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = {"tiny": "tiny-random", "0.5b": "Qwen/Qwen3-0.6B", "1.7b": "Qwen/Qwen3-1.7B"}
VARIANTS = {
    # name: options (bf16 autocast, activation checkpointing, layout, attention, liger)
    "fp32": dict(bf16=False, ckpt=False, layout="padded", attn="sdpa", liger=False),
    "bf16": dict(bf16=True, ckpt=False, layout="padded", attn="sdpa", liger=False),
    "bf16-ckpt": dict(bf16=True, ckpt=True, layout="padded", attn="sdpa", liger=False),
    "bf16-packed": dict(bf16=True, ckpt=False, layout="packed", attn="sdpa", liger=False),
    "bf16-padfree": dict(bf16=True, ckpt=False, layout="padfree", attn="flash_attention_2", liger=False),
    "bf16-liger": dict(bf16=True, ckpt=False, layout="padded", attn="sdpa", liger=True),
    "bf16-fa2": dict(bf16=True, ckpt=False, layout="padded", attn="flash_attention_2", liger=False),
}
BASELINE = "fp32"


def available(options: dict) -> str:
    """'' if the variant can run here, else why not."""
    if options["attn"] == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        return "flash_attn not installed (pip install -e '.[flash]')"
    if options["liger"] and importlib.util.find_spec("liger_kernel") is None:
        return "liger_kernel not installed (the gpu extra has it)"
    return ""


def sequence_lengths(n: int, seq: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(max(2, seq // 16), seq) for _ in range(n)]


def make_batches(lengths: list[int], batch: int, seq: int, layout: str, vocab: int, seed: int = 0) -> list[dict]:
    """Token batches of one layout from the same sequences (same tokens in every layout).

    padded: `batch` sequences per step, right-padded to the longest (attention_mask marks padding);
    packed: the sequences concatenated and cut into rows of `seq` tokens, `batch` rows per step;
    padfree: `batch` sequences per step in one row, position_ids restarting at 0 per sequence."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(0, vocab, (n,), generator=gen) for n in lengths]
    out: list[dict] = []
    if layout == "padded":
        for i in range(0, len(seqs) - batch + 1, batch):
            group = seqs[i : i + batch]
            width = max(len(s) for s in group)
            ids = torch.zeros(batch, width, dtype=torch.long)
            mask = torch.zeros(batch, width, dtype=torch.long)
            for row, s in enumerate(group):
                ids[row, : len(s)], mask[row, : len(s)] = s, 1
            labels = ids.masked_fill(mask == 0, -100)
            out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    elif layout == "packed":
        flat = torch.cat(seqs)
        rows = flat[: len(flat) // seq * seq].view(-1, seq)
        for i in range(0, len(rows) - batch + 1, batch):
            ids = rows[i : i + batch]
            out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    elif layout == "padfree":
        for i in range(0, len(seqs) - batch + 1, batch):
            group = seqs[i : i + batch]
            ids = torch.cat(group)[None]
            pos = torch.cat([torch.arange(len(s)) for s in group])[None]
            labels = ids.clone()
            labels[pos == 0] = -100  # a sequence's first token is not predicted from the previous sequence
            out.append({"input_ids": ids, "position_ids": pos, "labels": labels})
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return out


def build_model(size: str, options: dict, device: str):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from nebula_utils.launch.planner import KNOWN_CONFIGS

    if options["liger"]:
        from liger_kernel.transformers import apply_liger_kernel_to_qwen3

        apply_liger_kernel_to_qwen3()  # patches the Qwen3 classes before the model is built
    spec = dict(KNOWN_CONFIGS[SIZES[size]])
    config = AutoConfig.for_model(spec.pop("model_type"), **{k: v for k, v in spec.items() if k != "architectures"})
    config._attn_implementation = options["attn"]
    config.use_cache = False
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).to(device)
    if options["ckpt"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


def run_variant(size: str, name: str, args: argparse.Namespace) -> dict:
    """Train `args.steps` steps of one variant in this process; its measurements."""
    import torch

    from nebula_utils.train.throughput import TokenCounter, flops_per_token, peak_flops

    options, device = VARIANTS[name], args.device
    model = build_model(size, options, device)
    lengths = sequence_lengths(args.batch * (args.steps + args.warmup) * 2, args.seq)
    batches = make_batches(lengths, args.batch, args.seq, options["layout"], model.config.vocab_size)
    batches = (batches * ((args.steps + args.warmup) // max(1, len(batches)) + 1))[: args.steps + args.warmup]
    optim = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.startswith("cuda"))
    counter = TokenCounter().attach(model)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    losses, started, tokens0 = [], 0.0, 0
    for i, batch in enumerate(batches):
        if i == args.warmup:
            if cuda:
                torch.cuda.synchronize()
            started, tokens0 = time.perf_counter(), counter.tokens
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=options["bf16"]):
            loss = model(**batch).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        losses.append(float(loss))
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens = counter.tokens - tokens0
    rate = tokens / seconds
    fpt = flops_per_token(model)
    peak = peak_flops("bfloat16", device=device)["flops_per_s"] if cuda else float("nan")
    return {
        "size": size,
        "variant": name,
        "params": fpt / 6,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": rate,
        "mfu": fpt * rate / peak,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 1024**3 if cuda else None,
        "padding_fraction": counter.padding_fraction,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "gpu": torch.cuda.get_device_name() if cuda else "cpu",
    }


def one(size: str, name: str, args: argparse.Namespace) -> dict:
    """One variant in a fresh subprocess (Liger patches classes globally; memory starts clean)."""
    cmd = [sys.executable, __file__, "--_one", f"{size}:{name}", "--device", args.device]
    cmd += [
        "--batch",
        str(args.batch),
        "--seq",
        str(args.seq),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        return {"size": size, "variant": name, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(rows: list[dict], sizes: list[str], variants: list[str]) -> str:
    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.3g} [{min(values):.3g}, {max(values):.3g}]" if values else "-"

    lines = [f"{'size':<6}{'variant':<14}{'tokens/s':>28}{'x fp32':>24}{'MFU':>24}{'peak GiB':>10}"]
    for size in sizes:
        base = {
            r["round"]: r["tokens_per_s"]
            for r in rows
            if r["size"] == size and r["variant"] == BASELINE and "error" not in r
        }
        for name in variants:
            got = [r for r in rows if r["size"] == size and r["variant"] == name]
            ok = [r for r in got if "error" not in r and "skipped" not in r]
            if not ok:
                why = next((r.get("skipped") or r.get("error") for r in got), "not run")
                lines.append(f"{size:<6}{name:<14}  {why}")
                continue
            ratio = [r["tokens_per_s"] / base[r["round"]] for r in ok if r["round"] in base]
            mem = max((r["peak_mem_gib"] or 0) for r in ok)
            lines.append(
                f"{size:<6}{name:<14}{med([r['tokens_per_s'] for r in ok]):>28}{med(ratio):>24}"
                f"{med([r['mfu'] for r in ok]):>24}{mem:>10.1f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.5b,1.7b", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--variants", default="all", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--batch", type=int, default=8, help="sequences (padded/padfree) or rows (packed) per step")
    parser.add_argument("--seq", type=int, default=2048, help="max sequence length; packed row length")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (kernel selection, allocator)")
    parser.add_argument("--rounds", type=int, default=2, help="repeats, variant order rotated each round")
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu only to check the script")
    parser.add_argument("--json", default="", help="also write every measurement here")
    parser.add_argument("--_one", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"gpu_throughput.py: needs a CUDA GPU, and torch {torch.__version__} sees none "
            "(torch.cuda.is_available() is False); install the GPU environment (environment.yml) on a GPU machine",
            file=sys.stderr,
        )
        return 2
    if args._one:
        size, name = args._one.split(":")
        print(json.dumps(run_variant(size, name, args)))
        return 0
    sizes = args.sizes.split(",")
    variants = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    bad = [s for s in sizes if s not in SIZES] + [v for v in variants if v not in VARIANTS]
    if bad:
        parser.error(f"unknown size or variant {bad[0]!r}")
    if BASELINE not in variants:
        variants.insert(0, BASELINE)
    rows = []
    for rnd in range(args.rounds):
        order = variants[rnd % len(variants) :] + variants[: rnd % len(variants)]
        for size in sizes:
            for name in order:
                why = available(VARIANTS[name])
                row = {"size": size, "variant": name, "skipped": why} if why else one(size, name, args)
                rows.append(row | {"round": rnd})
                print(json.dumps(rows[-1]), flush=True)
    print()
    print(summarise(rows, sizes, variants))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
