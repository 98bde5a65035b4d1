"""Stop MPICH's start-up shared-memory segment outliving an aborted job.

Why segments are left: MPICH (ch4, posix shm; checked on the ``mpich`` 5.0.2
wheel) creates one named segment per node at ``MPI_Init``
(``/dev/shm/mpich_shm_<hex>_<n>``), every local rank maps it, and the name is
unlinked only in ``MPI_Finalize``. A job that ends by ``MPI_Abort``, a signal
or ``kill -9`` never finalizes, so the name stays and the 1-4 MB stay
allocated in ``/dev/shm`` (RAM) until someone deletes it. (MPICH already
unlinks its other segments as soon as every local rank has attached them.)

The fix: once every rank of a node has mapped the segment, the name is no
longer needed (a mapped segment lives until its last mapping goes), so the
node's first rank unlinks it. Only names that *every* rank of this job on the
node maps are unlinked: those are provably this job's and in use only by it.
MPICH's own unlink at finalize then finds the name gone; it ignores that (a
clean exit, code 0, checked by ``tests/comm/test_shm_mpi.py``). Not done for
jobs that may later connect new processes (``MPI_Comm_spawn``: hpccloud never
does). ``HPCCLOUD_KEEP_MPICH_SHM=1`` turns it off.
"""

from __future__ import annotations

import contextlib
import os

SHM_PREFIX = "/dev/shm/mpich_shm_"
KEEP_ENV = "HPCCLOUD_KEEP_MPICH_SHM"


def mapped_segments(maps_path: str = "/proc/self/maps") -> set[str]:
    """Paths of MPICH shm segments this process maps (empty where /proc is absent)."""
    try:
        with open(maps_path) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return set()
    out = set()
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith(SHM_PREFIX) and not parts[5].endswith("(deleted)"):
            out.add(parts[5])
    return out


def release_init_segments(comm) -> list[str]:
    """Collective on ``comm``: unlink the MPICH segments every local rank maps.

    Returns the paths unlinked on this rank (only a node's first rank unlinks).
    """
    from mpi4py import MPI

    if os.environ.get(KEEP_ENV, "") not in ("", "0") or "MPICH" not in MPI.Get_library_version():
        return []
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        seen = node.allgather(sorted(mapped_segments()))
        common = set(seen[0]).intersection(*seen[1:]) if seen else set()
        removed = []
        if node.Get_rank() == 0:
            for path in sorted(common):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    removed.append(path)
        node.Barrier()
        return removed
    finally:
        node.Free()


__all__ = ["KEEP_ENV", "mapped_segments", "release_init_segments"]
