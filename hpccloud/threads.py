"""How many Numba threads each rank uses.

Ranks × threads above the cores of a node busy-spin and lose 40–50 % here, so
by default each rank gets ``cores_of_node // ranks_on_node`` threads (at least
one). ``HPCCLOUD_THREADS`` or ``--threads`` override it.
"""

from __future__ import annotations

import os
from typing import Any, cast

from hpccloud.errors import InvalidArgument


def cores_available() -> int:
    """Cores this process may run on (its CPU affinity), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(ranks_on_node: int, cores: int) -> int:
    """Threads per rank so that ranks × threads does not exceed the cores.

    >>> default_threads(4, 2), default_threads(1, 2), default_threads(2, 8)
    (1, 2, 4)
    """
    return max(1, cores // max(1, ranks_on_node))


def ranks_on_this_node(comm) -> int:
    """How many ranks of ``comm`` share this node (a shared-memory split)."""
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return local.Get_size()
    finally:
        local.Free()


def configure_threads(comm=None, requested: int | None = None) -> int:
    """Set Numba's thread count for this rank and return it."""
    import numba

    if requested is None and os.environ.get("HPCCLOUD_THREADS"):
        try:
            requested = int(os.environ["HPCCLOUD_THREADS"])
        except ValueError:
            raise InvalidArgument(
                f"HPCCLOUD_THREADS={os.environ['HPCCLOUD_THREADS']!r} is not an integer. "
                "Fix: set it to a whole number of threads per rank, e.g. 1") from None
    if requested is None:
        local = ranks_on_this_node(comm) if comm is not None else 1
        requested = default_threads(local, cores_available())
    if requested < 1:
        raise InvalidArgument(f"threads per rank must be >= 1, got {requested}. Fix: use 1 or more")
    # numba.core.config sets NUMBA_NUM_THREADS through globals(): invisible to a type checker
    threads = min(requested, cast(Any, numba.config).NUMBA_NUM_THREADS)
    numba.set_num_threads(threads)
    return threads
