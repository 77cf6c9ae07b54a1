"""`nebula` console command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nebula", description="NebulaExp Workbench pipeline runner")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute a pipeline's (or an ablation grid's) notebooks with papermill")
    run.add_argument("pipeline", help="params/pipelines/<name>.yaml or params/ablations/<name>.yaml")
    run.add_argument("--force", action="store_true", help="rerun steps even if complete results exist")
    run.add_argument("--from", dest="start", metavar="STEP", help="start at this step")
    run.add_argument("--only", metavar="STEP", help="run only this step (its inputs must exist)")
    run.add_argument("--results", metavar="DIR", help="results root (default: results/)")
    run.add_argument("--plan", action="store_true", help="print steps, run ids and status; run nothing")
    render = sub.add_parser("render", help="render an executed notebook to standalone HTML, code hidden")
    render.add_argument("notebook", help="an executed notebook, e.g. results/<pipeline>/<run id>/notebook.ipynb")
    render.add_argument("--out", metavar="FILE", help="default: the notebook path with .html")
    _add_plan_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "plan":
        from .config import ConfigError
        from .launch.planner import main_plan

        try:
            return main_plan(args)
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return 2
    if args.command == "run":
        from .runner import main_run

        return main_run(args)
    if args.command == "render":
        from pathlib import Path

        from .report.compare import render_html

        print(render_html(args.notebook, args.out or Path(args.notebook).with_suffix(".html")))
        return 0
    return 2


def _add_plan_parser(sub) -> None:
    plan = sub.add_parser(
        "plan",
        help="validate a pipeline and estimate memory per GPU, tokens and GPU-hours per step (no weights loaded)",
        description="Defaults describe one node of 8 H100 80GB GPUs with DeepSpeed ZeRO-3 / FSDP FULL_SHARD. "
        "Formulas: nebula_utils/launch/planner.py.",
    )
    plan.add_argument("pipeline", help="params/pipelines/<name>.yaml")
    plan.add_argument("--gpus", type=int, default=8, help="GPUs per node (default 8)")
    plan.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    plan.add_argument(
        "--zero",
        type=int,
        default=3,
        help="ZeRO stage 0-3 (FSDP FULL_SHARD = 3, SHARD_GRAD_OP = 2, DDP = 0; default 3)",
    )
    plan.add_argument("--gpu-mem", type=float, default=80.0, help="GiB per GPU (default 80: H100/A100 80GB)")
    plan.add_argument("--mfu", type=float, default=0.4, help="training model FLOPs utilisation (default 0.4)")
    plan.add_argument(
        "--gen-mfu", type=float, default=0.1, help="generation FLOPs utilisation (memory-bound decode; default 0.1)"
    )
    plan.add_argument(
        "--gpu-peak-tflops", type=float, default=989.0, help="dense BF16 peak per GPU (default 989: H100 SXM)"
    )
    plan.add_argument("--tp", type=int, default=1, help="tensor-parallel size of generation engines (default 1)")
    plan.add_argument("--precision", default="mixed", help="mixed (bf16 + fp32 master, default) | bf16 | fp32")
    plan.add_argument("--attention", default="flash", help="flash (SDPA/FlashAttention, default) | eager")
    plan.add_argument(
        "--prompt-tokens", type=int, default=512, help="assumed prompt length of generation stages (default 512)"
    )
    plan.add_argument("--results", metavar="DIR", help="results root, where finished upstream outputs are read")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.add_argument("--check", action="store_true", help="exit 1 when a step does not fit in GPU memory")


if __name__ == "__main__":
    sys.exit(main())
