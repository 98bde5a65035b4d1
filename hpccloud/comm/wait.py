"""Waits that sleep instead of spinning.

MPICH's blocking waits poll the network at full speed. When ranks share a
core (more ranks than cores, or ranks pinned together), a rank spinning in a
wait steals the core from the very rank it waits for until the scheduler
preempts it, milliseconds later. These waits poll with ``Test`` and sleep in
between, so a waiting rank leaves the core to the one still working. Polling
still drives MPI's progress, so messages keep moving.
"""

from __future__ import annotations

import time

#: poll interval; Linux timer slack makes the real sleep ~50-100 µs
POLL_S = 20e-6


def sleeping_waitall(requests, poll_s: float = POLL_S) -> None:
    """``MPI.Request.Waitall`` that sleeps between polls.

    While a :class:`~hpccloud.comm.watchdog.Watchdog` is installed, a wait
    that lasts too long asks the peers whether they are alive (stall detection).
    """
    from mpi4py import MPI

    from hpccloud.comm import watchdog

    if not requests or MPI.Request.Testall(requests):
        return
    wd = watchdog.installed()
    t0 = time.monotonic()
    while not MPI.Request.Testall(requests):
        time.sleep(poll_s)
        if wd is not None:
            wd.check(time.monotonic() - t0)


def sleeping_barrier(comm, poll_s: float = POLL_S) -> None:
    """A barrier that sleeps instead of spinning, so waiting ranks leave the cores free."""
    sleeping_waitall([comm.Ibarrier()], poll_s)


def sleeping_allgather(comm, values, poll_s: float = POLL_S):
    """Allgather of a few float64 per rank that sleeps while it waits; returns ``(P, len(values))``."""
    import numpy as np

    send = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    recv = np.empty((comm.Get_size(), send.size), dtype=np.float64)
    sleeping_waitall([comm.Iallgather(send, recv)], poll_s)
    return recv
