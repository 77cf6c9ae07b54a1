"""`nebula` console command: run pipelines, list stages and their parameters, render reports."""

from __future__ import annotations

import argparse
import sys
import textwrap


def _stages(args) -> int:
    from .stages import stage_names, summary

    for stage in stage_names():
        print(f"{stage:<22} {summary(stage)}")
    return 0


def _params(args) -> int:
    """Each field's type, YAML default and help: what a researcher opens before editing a YAML."""
    from .config import ConfigError
    from .stages import describe

    try:
        rows = describe(args.stage)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.stage}: defaults from params/base.yaml -> params/stages/{args.stage}.yaml\n")
    for row in rows:
        print(f"{row['name']}: {row['type']} = {row['default']!r}")
        print(textwrap.indent(textwrap.fill(row["help"] or "(undocumented)", 96), "    "))
    return 0


def _render(args) -> int:
    from pathlib import Path

    from .report.html import render_html

    print(render_html(args.notebook, args.out or Path(args.notebook).with_suffix(".html")))
    return 0


def _quarantine(args) -> int:
    from .evaluate.suites import write_quarantine
    from .paths import QUARANTINE_REGISTRY, SUITES_DIR

    print(write_quarantine(SUITES_DIR, QUARANTINE_REGISTRY))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nebula", description="NebulaExp Workbench pipeline runner")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute a pipeline's (or an ablation grid's) notebooks with papermill")
    run.add_argument("pipeline", help="params/pipelines/<name>.yaml or params/ablations/<name>.yaml")
    run.add_argument("--force", action="store_true", help="rerun steps even if complete results exist")
    run.add_argument("--from", dest="start", metavar="STEP", help="start at this step")
    run.add_argument("--only", metavar="STEP", help="run only this step (its inputs must exist)")
    run.add_argument("--results", metavar="DIR", help="results root (default: results/)")
    run.add_argument("--plan", action="store_true", help="validate every step, print run ids and status; run nothing")
    run.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="run up to N steps whose inputs are done at once (default 1: the file's order)",
    )
    sub.add_parser("stages", help="list the stages (one notebook each) in pipeline order")
    params = sub.add_parser("params", help="print a stage's parameters: type, default and help")
    params.add_argument("stage", help="a stage name, e.g. 20_sft")
    render = sub.add_parser("render", help="render an executed notebook to standalone HTML, code hidden")
    render.add_argument("notebook", help="an executed notebook, e.g. results/<pipeline>/<run id>/notebook.ipynb")
    render.add_argument("--out", metavar="FILE", help="default: the notebook path with .html")
    sub.add_parser("quarantine", help="regenerate params/quarantine.yaml from params/suites/*.yaml")
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
    return {"stages": _stages, "params": _params, "render": _render, "quarantine": _quarantine}[args.command](args)


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
