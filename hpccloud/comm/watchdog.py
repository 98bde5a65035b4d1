"""Stall detection: a rank that makes no progress ends the job with one message.

``kill -9`` of a rank ends an MPICH job at once (the launcher sees the process
die), but a rank that *stops* (SIGSTOP, a hung file system, a swapping node)
leaves its peers waiting forever. Every step goes through the sleeping waits
of :mod:`hpccloud.comm.wait`; while a :class:`Watchdog` is installed they call
:meth:`Watchdog.check` every ~20 ms. When a wait has lasted longer than the
stall timeout, the rank sends a small *alive* message to every peer on a
private communicator; a rank that receives one answers once from its own
wait. After a grace period, the ranks that did not answer are the stalled
ones: the lowest rank that did answer prints one message naming each stalled
rank, its host and region, and aborts the job with :data:`STALL_EXIT_CODE`
(75, ``EX_TEMPFAIL``: a supervisor may retry). The other live ranks stay quiet
and wait for the abort.

The timeout adapts upwards: it is at least ``slow_factor`` times the slowest
step seen (see :meth:`Watchdog.progress`), so a long step is not a stall.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from hpccloud.comm.abort import abort_job

#: exit code of a job ended by stall detection (sysexits' EX_TEMPFAIL: try again)
STALL_EXIT_CODE = 75
#: default --stall-timeout (seconds); the effective timeout also grows with the slowest step
DEFAULT_STALL_TIMEOUT_S = 60.0
_TAG_ALIVE = 77
_CHECK_EVERY_S = 0.02


class Watchdog:
    """Detects a stalled peer from inside the sleeping waits (see the module docstring).

    Parameters
    ----------
    comm : the job's communicator (duplicated: alive messages never meet the job's own).
    stall_timeout_s : seconds a wait may last before the peers are asked.
    describe : ``describe(rank) -> "host h, region g"`` for the message.
    grace_s : how long live ranks have to answer (default ``min(5, timeout / 2)``).
    slow_factor : the timeout is at least this many times the slowest step seen.
    """

    def __init__(self, comm, stall_timeout_s: float, describe: Callable[[int], str],
                 grace_s: float | None = None, slow_factor: float = 10.0):
        self.comm = comm.Dup()
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.base_timeout_s = float(stall_timeout_s)
        self.timeout_s = self.base_timeout_s
        self.grace_s = float(grace_s) if grace_s is not None else min(5.0, self.base_timeout_s / 2)
        self.describe = describe
        self.slow_factor = slow_factor
        self.step = -1
        self._last_check = 0.0
        self._reset()

    def _reset(self) -> None:
        self.heard = np.zeros(self.size, dtype=bool)
        self.sent_at: float | None = None
        self._sends: list = []  # (request, buffer): a buffer lives until its send completes
        self._recv_buf = np.zeros(1, dtype=np.int64)

    # ------------------------------------------------------------------ called by the job
    def progress(self, step: int, step_s: float = 0.0) -> None:
        """A step completed everywhere (called after the step's collective): forget old queries."""
        self.step = step
        self.timeout_s = max(self.timeout_s, self.slow_factor * step_s)
        if self.sent_at is not None:  # a query that turned out to be a slow step: forget it
            self._drain()
            self.heard[:] = False
            self.sent_at = None

    # ------------------------------------------------------------------ called by the waits
    def check(self, waited_s: float) -> None:
        """Called from a sleeping wait that has lasted ``waited_s`` so far."""
        now = time.monotonic()
        if now - self._last_check < _CHECK_EVERY_S:
            return
        self._last_check = now
        self._drain()
        if self.sent_at is None and (waited_s > self.timeout_s or self.heard.any()):
            self._announce()
        if self.sent_at is not None and now - self.sent_at > self.grace_s:
            silent = [r for r in range(self.size) if r != self.rank and not self.heard[r]]
            if not silent:
                return  # everyone is alive and waiting: the next progress() resets the query
            alive = [self.rank] + [int(r) for r in np.flatnonzero(self.heard)]
            if self.rank == min(alive):
                abort_job(STALL_EXIT_CODE, self.message(silent, waited_s))
            elif now - self.sent_at > 3 * self.grace_s + 5:  # the reporter itself stopped
                abort_job(STALL_EXIT_CODE, self.message(silent + [min(alive)], waited_s))

    def message(self, silent: list[int], waited_s: float) -> str:
        who = "; ".join(f"rank {r} ({self.describe(r)})" for r in silent)
        return (f"hpccloud: error: stalled: {who} made no progress for {waited_s:.1f} s "
                f"(stall timeout {self.timeout_s:.1f} s; the other ranks wait after step "
                f"{self.step + 1}) and did not answer within {self.grace_s:.1f} s; ending the "
                f"job with exit code {STALL_EXIT_CODE}. Fix: check that node, or restart from "
                "the newest checkpoint (hpccloud supervise does it for you)")

    # ------------------------------------------------------------------ internals
    def _announce(self) -> None:
        from mpi4py import MPI

        self.sent_at = time.monotonic()
        buf = np.array([self.step], dtype=np.int64)
        self._sends = [(req, buf) for req, buf in self._sends if not req.Test()]
        self._sends += [(self.comm.Isend([buf, MPI.INT64_T], dest=r, tag=_TAG_ALIVE), buf)
                        for r in range(self.size) if r != self.rank]

    def _drain(self) -> None:
        from mpi4py import MPI

        status = MPI.Status()
        while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=_TAG_ALIVE, status=status):
            src = status.Get_source()
            self.comm.Recv([self._recv_buf, MPI.INT64_T], source=src, tag=_TAG_ALIVE)
            if self._recv_buf[0] >= self.step:  # not an answer to an earlier, settled query
                self.heard[src] = True

    def free(self) -> None:
        """Drain and free the private communicator (collective)."""
        from mpi4py import MPI

        MPI.Request.Waitall([req for req, _ in self._sends])
        self.comm.Barrier()
        self._drain()
        self.comm.Free()


_installed: Watchdog | None = None


def install(watchdog: Watchdog | None) -> Watchdog | None:
    """Make ``watchdog`` the one the sleeping waits consult; return the previous one."""
    global _installed
    old, _installed = _installed, watchdog
    return old


def installed() -> Watchdog | None:
    return _installed


__all__ = ["DEFAULT_STALL_TIMEOUT_S", "STALL_EXIT_CODE", "Watchdog", "install", "installed"]
