"""``hpccloud report REPORT.json``: render a run report's plots again, and its summary."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="render the plots and summary of a `run --json` report")
    p.add_argument("report", metavar="REPORT.json")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for the PNGs (default: beside the report)")
    p.set_defaults(run=run)


def run(args) -> int:
    import os

    from hpccloud.commands.run import print_summary
    from hpccloud.errors import ConfigError
    from hpccloud.report import write_plots

    try:
        with open(args.report) as fh:
            rep = json.load(fh)
    except OSError as exc:
        raise ConfigError(f"{args.report}: cannot read ({exc.strerror}). Fix: check the path") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{args.report}: not JSON ({exc}). Fix: pass the file written by "
                          "`hpccloud run --json`") from None
    if not isinstance(rep, dict) or rep.get("kind") != "hpccloud-run":
        raise ConfigError(f"{args.report}: not a run report (kind {rep.get('kind') if isinstance(rep, dict) else None!r}). "
                          "Fix: pass the file written by `hpccloud run --json`")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.report)), "plots")
    print_summary(rep)
    for path in write_plots(rep, out):
        print(f"wrote {path}")
    return 0
