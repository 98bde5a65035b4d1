"""Waits that sleep instead of spinning, after a short spin.

MPICH's blocking waits poll the network at full speed. When ranks share a
core (more ranks than cores, or ranks pinned together), a rank spinning in a
wait steals the core from the very rank it waits for until the scheduler
preempts it, milliseconds later. These waits poll with ``Test`` and sleep in
between, so a waiting rank leaves the core to the one still working. Polling
still drives MPI's progress, so messages keep moving.

Sleeping from the first poll is expensive when the wait is short, and one
poll per wake-up is expensive when it is long: MPICH needs several polls on
both sides to complete a set of eager messages, and every sleep lasts ~125 µs
here, not the 20 µs asked. Measured on 2 ranks, 9 sends and 9 receives of
2 KiB each (the default job's halo exchange), wait beyond the peer's arrival:
one poll per sleep ~1.1 ms; back-to-back polls (blocking ``Waitall``) ~0.05 ms.
So a wait polls back to back for up to :data:`SPIN_S` first, then sleeps, and
after every sleep polls back to back again for up to :data:`BURST_S`. Between
back-to-back polls it yields the core (``sched_yield``: a core-mate that is
ready to run gets the core; an idle core polls on). Waiting the same way
with bursts of 50 µs cost ~0.05 ms beyond the peer's arrival.
"""

from __future__ import annotations

import os
import time

#: poll interval; Linux timer slack makes the real sleep ~50-125 µs
POLL_S = 20e-6
#: how long a wait polls back to back (yielding the core) before it starts sleeping
SPIN_S = 200e-6
#: how long it polls back to back after every sleep
BURST_S = 50e-6
#: longest sleep of a wait that backs off (:func:`sleeping_bcast`'s wait for the root)
LONG_WAIT_SLEEP_S = 1e-3
#: a step's wait for its slowest rank sleeps up to this part of what it has waited so far
#: (up to :data:`LONG_WAIT_SLEEP_S`): it ends at most ~10 % of its wait late. Polling every
#: ~0.1 ms, each waiting rank of a shared core kept ~30 % of it: mandelbrot, 3 ranks on one
#: core, the rank with twice its core-mates' work got half the core after they were done
#: (100 ms of CPU in 240 ms of wall time; their wait ended at ~120 ms)
STEP_WAIT_BACKOFF = 0.1

_yield = getattr(os, "sched_yield", lambda: None)


def _poll(requests, seconds: float) -> bool:
    """Poll back to back (yielding the core in between) for up to ``seconds``; True: all done."""
    from mpi4py import MPI

    until = time.perf_counter() + seconds
    while True:
        if MPI.Request.Testall(requests):
            return True
        if time.perf_counter() >= until:
            return False
        _yield()


def sleeping_waitall(requests, poll_s: float = POLL_S, spin_s: float = SPIN_S,
                     burst_s: float = BURST_S, max_sleep_s: float | None = None,
                     backoff: float | None = None) -> None:
    """``MPI.Request.Waitall`` that polls for ``spin_s``, then sleeps ``poll_s`` between bursts
    of polls of ``burst_s``.

    With ``max_sleep_s``, every sleep that did not end the wait doubles the next
    one, up to ``max_sleep_s``: for waits that may be long (a plan on the root),
    where a burst of polls every ~0.1 ms still takes much of a shared core.
    With ``backoff``, each sleep is that part of the time waited so far (at least
    ``poll_s``, at most ``max_sleep_s`` or :data:`LONG_WAIT_SLEEP_S`): a wait ends
    at most that part of itself late (:data:`STEP_WAIT_BACKOFF`).

    While a :class:`~hpccloud.comm.watchdog.Watchdog` is installed, a wait
    that lasts too long asks the peers whether they are alive (stall detection).
    """
    from hpccloud.comm import watchdog

    if not requests or _poll(requests, spin_s):
        return
    wd = watchdog.installed()
    t0 = time.monotonic()
    if backoff is not None and max_sleep_s is None:
        max_sleep_s = LONG_WAIT_SLEEP_S
    sleep_s, most_s = poll_s, poll_s if max_sleep_s is None else max(poll_s, max_sleep_s)
    while True:
        time.sleep(sleep_s)
        if _poll(requests, burst_s):
            return
        waited = time.monotonic() - t0
        if backoff is None:
            sleep_s = min(2.0 * sleep_s, most_s)
        else:
            sleep_s = min(max(poll_s, backoff * (waited + spin_s)), most_s)
        if wd is not None:
            wd.check(waited)


def sleeping_barrier(comm, poll_s: float = POLL_S) -> None:
    """A barrier that sleeps instead of spinning, so waiting ranks leave the cores free."""
    sleeping_waitall([comm.Ibarrier()], poll_s)


def sleeping_allgather(comm, values, poll_s: float = POLL_S, backoff: float | None = None):
    """Allgather of a few float64 per rank that sleeps while it waits; returns ``(P, len(values))``
    (``backoff``: see :func:`sleeping_waitall`)."""
    import numpy as np

    send = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    recv = np.empty((comm.Get_size(), send.size), dtype=np.float64)
    sleeping_waitall([comm.Iallgather(send, recv)], poll_s, backoff=backoff)
    return recv


def sleeping_allreduce(comm, values, op=None, poll_s: float = POLL_S):
    """Allreduce (default: sum) of a float64 array that sleeps while it waits; returns the result."""
    import numpy as np
    from mpi4py import MPI

    send = np.ascontiguousarray(values, dtype=np.float64)
    recv = np.empty_like(send)
    sleeping_waitall([comm.Iallreduce(send, recv, op=MPI.SUM if op is None else op)], poll_s)
    return recv


def sleeping_bcast(comm, obj, root: int = 0):
    """``comm.bcast(obj, root)`` whose waits sleep: the pickled length, then the bytes.

    The ranks waiting for ``root`` (e.g. while rank 0 plans a rebalance) leave
    shared cores to it, and the stall watchdog sees the wait. ``root`` gets
    ``obj`` itself back, the others an unpickled copy (as ``comm.bcast``).
    The wait for the length backs off to sleeps of :data:`LONG_WAIT_SLEEP_S`:
    with two ranks waiting on rank 0's core in fixed 20 µs sleeps, a stencil
    plan took ~2× as long (6 plans of the 1+3 layout: 0.15 s against 0.07 s).
    """
    import pickle

    import numpy as np

    is_root = comm.Get_rank() == root
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL) if is_root else b""
    n = np.array([len(data)], np.int64)
    sleeping_waitall([comm.Ibcast(n, root=root)], max_sleep_s=LONG_WAIT_SLEEP_S)
    buf = np.frombuffer(bytearray(data), np.uint8) if is_root else np.empty(int(n[0]), np.uint8)
    if buf.size:
        sleeping_waitall([comm.Ibcast(buf, root=root)])
    return obj if is_root else pickle.loads(buf.tobytes())
