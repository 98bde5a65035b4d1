"""Arguments and set-up shared by the MPI commands."""

from __future__ import annotations


def add_topology_arg(parser) -> None:
    parser.add_argument("--topology", metavar="FILE", default=None,
                        help="topology TOML (default: the embedded two-region topology)")


def add_threads_arg(parser) -> None:
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="Numba threads per rank (default: cores of the node / ranks on it)")


def world():
    """Initialise MPI (the CLI owns it) and return COMM_WORLD.

    Stops with a :class:`~hpccloud.errors.ConfigError` when srun started the
    tasks without PMI (N separate 1-rank worlds), which would otherwise "work".
    """
    from mpi4py import MPI

    from hpccloud.errors import ConfigError
    from hpccloud.slurm import srun_without_pmi

    problem = srun_without_pmi(MPI.COMM_WORLD.Get_size())
    if problem:
        raise ConfigError(problem)
    from hpccloud.comm.shm import release_init_segments

    release_init_segments(MPI.COMM_WORLD)  # an aborted job leaves no /dev/shm segment
    return MPI.COMM_WORLD


def check_writable(path: str) -> None:
    """Fail early (before the work) when an output file could not be written."""
    from hpccloud.io.atomic import check_writable as check

    check(path)


def write_json_atomic(path: str, obj) -> None:
    """Write JSON to ``path`` atomically (temp file, fsync, rename)."""
    from hpccloud.io.atomic import write_json_atomic as write

    write(path, obj)
