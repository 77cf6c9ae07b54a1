"""A small built-in data version, so a notebook opened with its defaults has something to read.

Used when a stage's input is empty and no upstream run has finished under results/ (see
runs.resolve_inputs): the same offline generators as 10_data_sft_mix, at a size that loads in a
second — reasoning-gym arithmetic with worked answers and HumanEval train-half problems (sft), or
reasoning-gym prompts, IFEval-style constraint prompts and HumanEval problems (rl).
"""

from __future__ import annotations

from pathlib import Path

from .mixing import write_mixed_version
from .versions import VersionInfo, version_info

BUILTIN_ROWS = 8  # per part: enough to show every table and plot, small enough to train in seconds


def builtin_version(schema: str, out_dir: Path, seed: int = 0) -> VersionInfo:
    """Write (once) and return the built-in `sft` or `rl` version at `out_dir`."""
    from . import sources as S
    from .sources import RL_SEED_OFFSET

    if (Path(out_dir) / "version.json").is_file():
        return version_info(out_dir)
    if schema == "sft":
        parts = {
            "math/chain_sum": S.reasoning_gym_sft("chain_sum", BUILTIN_ROWS, seed),
            "code/humaneval": S.humaneval_sft(BUILTIN_ROWS, split="train"),
        }
    elif schema == "rl":
        parts = {
            "math/chain_sum": S.reasoning_gym_rl("chain_sum", BUILTIN_ROWS, seed + RL_SEED_OFFSET),
            "complex_if/ifeval_constraints": S.ifeval_constraint_prompts(BUILTIN_ROWS, seed + RL_SEED_OFFSET),
            "code/humaneval": S.humaneval_rl(BUILTIN_ROWS, split="train", start=BUILTIN_ROWS),
        }
    else:
        raise ValueError(f"no built-in {schema!r} data (built-in: sft, rl)")
    return write_mixed_version(parts, schema, Path(out_dir), seed, name=f"builtin_{schema}")
