"""``hpccloud report REPORT.json``: render a run report's plots again, and its summary."""

from __future__ import annotations

#: what a report whose layout is not a run report's raises while it is rendered (a key
#: missing, a value of another type or shape): turned into one message naming the key
_LAYOUT_ERRORS = (KeyError, IndexError, TypeError, AttributeError, ValueError, ArithmeticError)


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="render the plots and summary of a `run --json` report")
    p.add_argument("report", metavar="REPORT.json")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for the PNGs (default: beside the report)")
    p.set_defaults(run=run)


def run(args) -> int:
    """Render everything first (the summary into a buffer, the plots into a temp folder
    beside ``--out``); only a report that renders whole is printed and its plots moved in."""
    import io
    import os
    import shutil
    import tempfile

    from hpccloud.errors import ConfigError
    from hpccloud.preflight import probe_folder
    from hpccloud.report import load_report, print_summary, write_plots

    rep = load_report(args.report)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.report)), "plots")
    probe_folder("--out", out)
    summary = io.StringIO()
    tmp = tempfile.mkdtemp(prefix=".plots.", suffix=".tmp", dir=out)  # debris-shaped
    try:
        try:
            print_summary(rep, out=summary)
            drawn = write_plots(rep, tmp)
        except _LAYOUT_ERRORS as exc:
            what = f"key {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
            raise ConfigError(f"{args.report}: not laid out as a run report of this hpccloud "
                              f"({what}). Fix: pass the JSON written by `hpccloud run --json`"
                              ) from None
        print(summary.getvalue(), end="")
        for path in drawn:
            final = os.path.join(out, os.path.basename(path))
            os.replace(path, final)
            print(f"wrote {final}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0
