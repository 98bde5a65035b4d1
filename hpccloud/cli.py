"""The ``hpccloud`` console script: ``probe``, ``run``, ``plan``, ``simulate``, ``bench``, ``info``,
``report``, ``checkpoint``, ``supervise``.

Each command lives in ``hpccloud/commands/<name>.py`` with ``add_parser(sub)``
and ``run(args) -> int``; modules import MPI and Numba only inside ``run`` so
``hpccloud simulate --help`` starts fast and needs no MPI.

The CLI owns MPI's lifecycle and turns errors into exit codes: an
:class:`~hpccloud.errors.HpccloudError` raised on every rank (collectively) is
printed once, by rank 0; one raised on a single rank is printed by that rank and
aborts the job so no peer hangs; any other exception prints its traceback and
aborts (as ``python -m mpi4py`` does).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from hpccloud.errors import HpccloudError

# name -> module; order is the order of `hpccloud --help`
COMMANDS = {
    "run": "hpccloud.commands.run",
    "probe": "hpccloud.commands.probe",
    "report": "hpccloud.commands.report",
    "info": "hpccloud.commands.info",
    "plan": "hpccloud.commands.plan",
    "simulate": "hpccloud.commands.simulate",
    "bench": "hpccloud.commands.bench",
    "checkpoint": "hpccloud.commands.checkpoint",
    "supervise": "hpccloud.commands.supervise",
}


def launcher_rank() -> int:
    """This process's rank as told by the launcher, without initialising MPI."""
    for var in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse that prints usage errors from one rank only (exit code 2 on all)."""

    def error(self, message):  # noqa: D102
        if launcher_rank() == 0:
            self.print_usage(sys.stderr)
            sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from hpccloud import __version__

    parser = _Parser(prog="hpccloud", description="Sharded numeric work across regional clusters: "
                     "measured links, Numba kernels, a residency-aware load balancer.")
    parser.add_argument("--version", action="version", version=f"hpccloud {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for modname in COMMANDS.values():
        importlib.import_module(modname).add_parser(sub)
    return parser


def _mpi_world():
    """MPI.COMM_WORLD if MPI was initialised by the command, else None."""
    mod = sys.modules.get("mpi4py.MPI")
    if mod is None or not mod.Is_initialized() or mod.Is_finalized():
        return None
    return mod.COMM_WORLD


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        # progress lines reach a batch log (a file) as they happen, not at the end
        sys.stdout.reconfigure(line_buffering=True)
    try:
        try:
            return int(args.run(args) or 0)
        except ModuleNotFoundError as exc:
            from hpccloud.extras import from_import_error

            missing = from_import_error(exc, f"`hpccloud {args.command}`")
            if missing is None:
                raise
            raise missing from None
    except HpccloudError as exc:
        world = _mpi_world()
        rank = world.Get_rank() if world is not None else 0
        size = world.Get_size() if world is not None else 1
        if world is None and getattr(exc, "collective", False):
            # before MPI started, every process of the launch fails alike: one message
            rank = launcher_rank()
        if getattr(exc, "collective", False) or size == 1:
            if rank == 0:
                sys.stderr.write(f"hpccloud: error: {exc}\n")
            return exc.exit_code
        from hpccloud.comm.abort import abort_job

        abort_job(exc.exit_code, f"hpccloud: error on rank {rank}: {exc}", world)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception:
        traceback.print_exc()
        sys.stderr.flush()
        world = _mpi_world()
        if world is not None and world.Get_size() > 1:
            from hpccloud.comm.abort import abort_job

            abort_job(1, None, world)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
