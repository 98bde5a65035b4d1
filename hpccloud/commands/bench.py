"""``hpccloud bench TARGET``: benchmark suites (``kernels``; more targets plug in).

Each target is a module in :data:`BENCH_TARGETS` providing
``add_arguments(parser)`` and ``run(args) -> int``. Target modules are imported
when the parser is built, so they must import Numba/MPI only inside ``run``.

Provenance: a target writes its results (``--json OUT``, rank 0); this command
then rewrites OUT atomically as ``{"kind": "hpccloud-bench-<target>",
"provenance": ..., "results": <what the target wrote>}`` (see
:mod:`hpccloud.benchsuite.provenance`: machine, versions and commit, Slurm and
thread settings, load average before and after), and prints a warning when the
load says the machine was busy. A target that already wrote such a document
(it has ``"provenance"``) is left alone.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

# target name -> module with add_arguments(parser) and run(args) -> int
BENCH_TARGETS = {
    "kernels": "hpccloud.benchsuite.kernels",
    "transport": "hpccloud.benchsuite.transport",
}


#: target -> optional modules it cannot run without (checked before it starts)
BENCH_NEEDS = {"transport": ("cryptography",)}


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


def _world_rank_size() -> tuple[int, int]:
    """(rank, size) of MPI_COMM_WORLD if the target initialised MPI, else (0, 1)."""
    mod = sys.modules.get("mpi4py.MPI")
    if mod is None or not mod.Is_initialized() or mod.Is_finalized():
        return 0, 1
    return mod.COMM_WORLD.Get_rank(), mod.COMM_WORLD.Get_size()


def _threads() -> int | None:
    mod = sys.modules.get("numba")
    try:
        return int(mod.get_num_threads()) if mod is not None else None
    except Exception:  # noqa: BLE001 - the threading layer may not be up; then unknown
        return None


def with_provenance(path: str, kind: str, before) -> str | None:
    """Rewrite the results at ``path`` as a provenance document; return the busy warning."""
    from hpccloud.benchsuite import provenance
    from hpccloud.commands.common import write_json_atomic

    with open(path, encoding="utf-8") as fh:
        results = json.load(fh)
    if isinstance(results, dict) and "provenance" in results:
        return results["provenance"].get("busy_warning")
    _, size = _world_rank_size()
    doc = provenance.attach(kind, results, before, threads=_threads(), ranks=size)
    write_json_atomic(path, doc)
    return doc["provenance"]["busy_warning"]


def run(args) -> int:
    from hpccloud.benchsuite import provenance
    from hpccloud.extras import require

    for module in BENCH_NEEDS.get(args.bench_target, ()):
        require(module, f"`hpccloud bench {args.bench_target}`")
    before = provenance.Before.now()
    rc = int(importlib.import_module(args.bench_module).run(args) or 0)
    rank, _ = _world_rank_size()
    out = getattr(args, "json", None)
    if rc == 0 and out and rank == 0 and os.path.exists(out):
        warning = with_provenance(out, f"hpccloud-bench-{args.bench_target}", before)
        if warning:
            print(warning, file=sys.stderr, flush=True)
    return rc
