"""``hpccloud bench TARGET``: benchmark suites (each target is a module in ``hpccloud.benchsuite``)."""

from __future__ import annotations

import importlib

# target -> module with add_arguments(parser) and run(args) -> int
BENCH_TARGETS = {
    "kernels": "hpccloud.benchsuite.kernels",
    "transport": "hpccloud.benchsuite.transport",
}


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmark suites: " + ", ".join(BENCH_TARGETS))
    targets = p.add_subparsers(dest="target", metavar="TARGET")
    targets.required = True
    for name, modname in BENCH_TARGETS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
            continue  # a target not merged into this checkout yet
        tp = targets.add_parser(name, help=(mod.__doc__ or name).strip().splitlines()[0])
        mod.add_arguments(tp)
        tp.set_defaults(run=mod.run)
