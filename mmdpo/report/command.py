"""``mmdpo report RUN [RUN ...] [--out FILE]``: write the report page of one or several runs."""

from __future__ import annotations

import argparse
import sys

from mmdpo.report import REPORT_FILE, write_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``mmdpo report``."""
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="run folders (train.output_dir), or folders holding runs (a demo, a preset, an "
        "ablation): their runs are overlaid and compared",
    )
    parser.add_argument(
        "--out",
        help=f"the HTML file to write (default: {REPORT_FILE} inside the one folder given; "
        "required with several)",
    )
    parser.add_argument("--title", help="the page title (default: the runs' names)")
    parser.add_argument(
        "--names",
        help="comma-separated labels, one per run found, in the order found (default: the "
        "shortest path endings that tell the runs apart)",
    )


def run(args: argparse.Namespace) -> int:
    """``mmdpo report``: 0 and the page's path, or 2 with one clear line."""
    names = [name.strip() for name in args.names.split(",")] if args.names else None
    try:
        out = write_report(args.runs, args.out, title=args.title, names=names)
    except (FileNotFoundError, ValueError) as err:
        print(f"mmdpo report: error: {err}", file=sys.stderr)
        return 2
    print(f"report: {out}")
    return 0
