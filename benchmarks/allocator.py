"""glibc's default allocator vs the tuned thresholds the runner gives notebook kernels, on the demo's SFT step.

    PYTHONPATH=. OMP_NUM_THREADS=2 python benchmarks/allocator.py [--rounds 3] [--samples 24]
        [--config packed-bf16]

The tunables (nebula_utils.inference.cpu.GLIBC_MALLOC_TUNABLES) are read once, at process start,
so each side runs in its own child process: benchmarks/sft_throughput.py training `--config` on the
same `--samples` demo rows, once with GLIBC_TUNABLES unset (glibc's default: tensors above
128 KiB-32 MiB are mmapped and page-fault in on every allocation) and once with the tunables. The
sides alternate (A/B, B/A, ...) so a busy neighbour does not always hit the same one. Printed per
side: tokens/s (wall and per CPU-second, from the child's own measurement), MFU, the child's minor
page faults and system CPU seconds (os.wait4: the whole child, model load included); then the
per-round ratios tuned / default, median [min, max].
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run_side(tuned: bool, config: str, samples: int) -> dict:
    """One child run of sft_throughput.py; its measurement plus the child's page faults and system time."""
    from nebula_utils.inference.cpu import GLIBC_MALLOC_TUNABLES

    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tuned:
        env["GLIBC_TUNABLES"] = GLIBC_MALLOC_TUNABLES
    env["PYTHONPATH"] = str(REPO)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        cmd = [sys.executable, str(REPO / "benchmarks" / "sft_throughput.py"), "--configs", config]
        cmd += ["--rounds", "1", "--samples", str(samples), "--curve-steps", "0", "--json", str(out)]
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(child.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{child.stderr.read().decode()[-2000:]}")
        run = json.loads(out.read_text())["runs"][0]
    return run | {"minor_faults": usage.ru_minflt, "sys_s": usage.ru_stime, "tuned": tuned}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--config", default="packed-bf16")
    args = parser.parse_args()
    pairs = []
    for r in range(args.rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        sides = {t: run_side(t, args.config, args.samples) for t in order}
        for t in order:
            s = sides[t]
            print(
                f"round {r} {'tuned  ' if t else 'default'} {s['tokens_per_s']:6.1f} tok/s  "
                f"{s['tokens_per_cpu_s']:6.1f} tok/CPU-s  MFU {s['mfu']:.1%}  minor faults {s['minor_faults']:>9,}  "
                f"sys {s['sys_s']:5.1f} s",
                flush=True,
            )
        pairs.append(sides)
    print(f"\ntuned / default, per round, median [min, max], n = {args.rounds}:")
    for key, label in (
        ("tokens_per_s", "tokens/s (wall)"),
        ("tokens_per_cpu_s", "tokens/CPU-s"),
        ("minor_faults", "minor faults"),
        ("sys_s", "system time"),
    ):
        ratios = [p[True][key] / max(p[False][key], 1e-9) for p in pairs]
        print(f"  {label:16s} {statistics.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}]")


if __name__ == "__main__":
    main()
