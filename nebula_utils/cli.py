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
    sub.add_parser("stages", help="list the stages (one notebook each) in pipeline order")
    params = sub.add_parser("params", help="print a stage's parameters: type, default and help")
    params.add_argument("stage", help="a stage name, e.g. 20_sft")
    render = sub.add_parser("render", help="render an executed notebook to standalone HTML, code hidden")
    render.add_argument("notebook", help="an executed notebook, e.g. results/<pipeline>/<run id>/notebook.ipynb")
    render.add_argument("--out", metavar="FILE", help="default: the notebook path with .html")
    sub.add_parser("quarantine", help="regenerate params/quarantine.yaml from params/suites/*.yaml")
    args = parser.parse_args(argv)
    if args.command == "run":
        from .runner import main_run

        return main_run(args)
    return {"stages": _stages, "params": _params, "render": _render, "quarantine": _quarantine}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
