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
    args = parser.parse_args(argv)
    if args.command == "run":
        from .runner import main_run

        return main_run(args)
    if args.command == "render":
        from pathlib import Path

        from .report.html import render_html

        print(render_html(args.notebook, args.out or Path(args.notebook).with_suffix(".html")))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
