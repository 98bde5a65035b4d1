"""``hpccloud bench TARGET``: benchmark suites (``kernels``; more targets plug in).

Each target is a module in :data:`BENCH_TARGETS` providing
``add_arguments(parser)`` and ``run(args) -> int``. Target modules are imported
when the parser is built, so they must import Numba/MPI only inside ``run``.
"""

from __future__ import annotations

import importlib

# target name -> module with add_arguments(parser) and run(args) -> int
BENCH_TARGETS = {
    "kernels": "hpccloud.benchsuite.kernels",
    "transport": "hpccloud.benchsuite.transport",
}


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmark suites: " + ", ".join(BENCH_TARGETS),
                       description=__doc__.splitlines()[0])
    targets = p.add_subparsers(dest="bench_target", metavar="{" + ",".join(BENCH_TARGETS) + "}")
    targets.required = True
    for name, modname in BENCH_TARGETS.items():
        mod = importlib.import_module(modname)
        doc = (mod.__doc__ or name).strip().splitlines()[0]
        tp = targets.add_parser(name, help=doc, description=doc)
        mod.add_arguments(tp)
        tp.set_defaults(run=run, bench_module=modname)


def run(args) -> int:
    return int(importlib.import_module(args.bench_module).run(args) or 0)
