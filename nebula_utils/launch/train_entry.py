"""`python -m nebula_utils.launch.train_entry <stage> <run dir>`: one process of a training job.

Started by `accelerate launch` (nebula_utils.launch.job, tools/slurm_launch.sh) in every process of
the job. It rebuilds the stage config from the resolved <run dir>/config.yaml the notebook wrote
(so the job trains exactly what the notebook shows, under the same run id), seeds and threads as
start_run does, and calls the stage's train function. The main process writes into the run
folder (model/, train_log.json, launch_metrics.json); the others write their copies into
<run dir>/.ranks/<rank>/ (removed at the end), so no two processes write the same file.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nebula_utils.launch.train_entry", description=__doc__)
    parser.add_argument("stage", help="e.g. 31_dpo")
    parser.add_argument("run_dir", help="the run folder holding the resolved config.yaml")
    args = parser.parse_args(argv)

    from accelerate import PartialState

    from ..config import build_config, load_yaml
    from ..inference.models import pick_device
    from ..io import atomic_write_json
    from ..runs import set_seed_everywhere, set_threads
    from ..stages import stage_config_class
    from .job import LAUNCH_METRICS, train_function

    run_dir = Path(args.run_dir)
    config_file = run_dir / "config.yaml"
    cfg = build_config(stage_config_class(args.stage), args.stage, load_yaml(config_file), str(config_file))
    fn = train_function(args.stage)
    # Before any model loads: sets this process's CUDA device (cuda:<local rank>) and the process
    # group (on CPU, under torchrun: gloo; without cpu=True accelerate ignores the CPU ranks).
    state = PartialState(cpu=pick_device(cfg.device) == "cpu")
    set_threads(cfg.num_threads)
    set_seed_everywhere(cfg.seed)
    out = run_dir if state.is_main_process else run_dir / ".ranks" / str(state.process_index)
    out.mkdir(parents=True, exist_ok=True)
    print(f"[train_entry] {args.stage} rank {state.process_index}/{state.num_processes} on {state.device} -> {out}")
    metrics = fn(cfg, out)
    state.wait_for_everyone()
    if state.is_main_process:
        atomic_write_json(run_dir / LAUNCH_METRICS, metrics)
        shutil.rmtree(run_dir / ".ranks", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
