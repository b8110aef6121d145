"""``gmcore runs [FOLDER]`` (a table of every run below a folder) and ``gmcore report [FOLDER]
-o report.html`` (a self-contained HTML gallery of them): see :mod:`gmcore.runs` and
:mod:`gmcore.report`.

    gmcore runs runs --sort digits-FID
    gmcore runs runs --json > runs.json
    gmcore report runs -o report.html
"""
from __future__ import annotations

import argparse
import json

from .cli import CLIError, command
from .runs import COLUMNS

__all__ = []


def _runs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", nargs="?", default="runs", help="where to look for runs (default: runs)")
    p.add_argument("--sort", default="run", metavar="COLUMN",
                   help="order by this column: " + ", ".join(h for h, _ in COLUMNS) + " (default: run)")
    p.add_argument("--desc", action="store_true", help="largest first")
    p.add_argument("--json", action="store_true", help="print a JSON list (every field, metrics.json included)")


@command("runs", help="list every run below a folder: model, data, steps, figure, digits-FID, time, state",
         add_arguments=_runs_arguments)
def _runs(args: argparse.Namespace) -> int:
    from .runs import find_runs, format_table, sort_runs

    runs = sort_runs(find_runs(args.folder), args.sort, descending=args.desc)
    if args.json:
        print(json.dumps([r.to_dict() for r in runs], indent=1))
    elif not runs:
        print(f"no runs below {args.folder}")
    else:
        print(format_table(runs))
    return 0


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", nargs="?", default="runs", help="where to look for runs (default: runs)")
    p.add_argument("-o", "--out", default="report.html", help="the index page (default: report.html); "
                   "each run's page goes to <stem>_runs/ beside it")


@command("report", help="write a self-contained HTML gallery of every run below a folder",
         add_arguments=_report_arguments)
def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    try:
        res = write_report(args.folder, args.out)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from exc
    print(f"wrote {res['index']} ({res['runs']} runs; their pages in {res['index'].stem}_runs/)")
    return 0
