"""benchmarks/gpu_throughput.py on a machine without a GPU: it imports, `--help` works, a run on
CUDA fails with a clear message, its batch layouts hold the same real tokens, and one variant's
training loop runs on the 2-layer test shape on CPU (the same code a GPU run executes)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from argparse import Namespace

import pytest
import torch

from nebula_utils.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def test_help_lists_sizes_and_variants():
    done = run("--help")
    assert done.returncode == 0, done.stderr
    for word in ("--sizes", "--variants", "--seq", "--json", "MFU"):
        assert word in done.stdout, word


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_without_cuda_it_says_so_and_exits_2():
    done = run("--sizes", "0.5b")
    assert done.returncode == 2
    assert "needs a CUDA GPU" in done.stderr and "torch.cuda.is_available() is False" in done.stderr


def test_layouts_hold_the_same_real_tokens(bench):
    lengths = bench.sequence_lengths(16, 64)
    total = sum(lengths)
    padded = bench.make_batches(lengths, 4, 64, "padded", 100)
    padfree = bench.make_batches(lengths, 4, 64, "padfree", 100)
    packed = bench.make_batches(lengths, 2, 64, "packed", 100)
    assert sum(int(b["attention_mask"].sum()) for b in padded) == total
    assert sum(b["input_ids"].numel() for b in padfree) == total
    assert total - 2 * 64 < sum(b["input_ids"].numel() for b in packed) <= total  # full rows only
    first = padfree[0]
    starts = (first["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert len(starts) == 4 and all(first["labels"][0, s] == -100 for s in starts)  # no loss across a boundary
    assert (padded[0]["labels"][padded[0]["attention_mask"] == 0] == -100).all()


@pytest.mark.parametrize("variant", ["fp32", "bf16-packed"])
def test_one_variant_trains_on_the_tiny_shape_on_cpu(bench, variant):
    args = Namespace(device="cpu", batch=2, seq=64, steps=2, warmup=1)
    row = bench.run_variant("tiny", variant, args)
    assert row["tokens"] > 0 and row["tokens_per_s"] > 0
    assert row["params"] == 3_219_840  # the tiny-random shape, counted by throughput.flops_per_token / 6
    assert (row["padding_fraction"] == 0.0) == (variant == "bf16-packed")  # padded batches carry padding
    assert 9 < row["loss_first"] < 12  # ~ln(49152) = 10.8 for a random model


def test_flash_and_liger_variants_say_why_they_are_skipped(bench):
    for name, options in bench.VARIANTS.items():
        why = bench.available(options)
        if options["attn"] == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            assert "flash_attn not installed" in why, name
        elif options["liger"] and importlib.util.find_spec("liger_kernel") is None:
            assert "liger_kernel not installed" in why, name
        else:
            assert why == "", name
