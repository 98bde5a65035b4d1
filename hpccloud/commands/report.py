"""``hpccloud report REPORT.json``: render a run report's plots again, and its summary."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="render the plots and summary of a `run --json` report")
    p.add_argument("report", metavar="REPORT.json")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for the PNGs (default: beside the report)")
    p.set_defaults(run=run)


def run(args) -> int:
    import os

    from hpccloud.report import load_report, print_summary, write_plots

    rep = load_report(args.report)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.report)), "plots")
    print_summary(rep)
    for path in write_plots(rep, out):
        print(f"wrote {path}")
    return 0
