"""Ending the whole job from one rank without losing its last words.

The launcher forwards each rank's stderr as it reads it; an ``MPI_Abort``
that overtakes the read loses what the rank wrote just before (MPICH's hydra
does so under load: a stall message that never reached the log). So the
message goes out in one write, and the abort waits :data:`ABORT_GRACE_S`
for the launcher to forward it. Only for the paths that end a job anyway.
"""

from __future__ import annotations

import os
import sys
import time
from typing import NoReturn

#: how long the launcher gets to forward the message before the abort ends the job
ABORT_GRACE_S = 1.0


_aborting = False


def abort_job(code: int, message: str | None = None, comm=None) -> NoReturn:
    """Write ``message`` (if any) to stderr, wait :data:`ABORT_GRACE_S`, abort ``comm``.

    ``comm`` defaults to ``MPI.COMM_WORLD``. Never returns: MPICH's
    ``MPI_Abort`` has been seen to come back (about a second later, with a
    peer stopped by SIGSTOP), and a caller's loop would then say it all again;
    the process then ends with ``os._exit(code)``. Said once per process.
    """
    global _aborting
    if not _aborting:
        _aborting = True
        sys.stdout.flush()
        sys.stderr.flush()
        if message is not None:
            os.write(2, (message.rstrip("\n") + "\n").encode())
        time.sleep(ABORT_GRACE_S)
    if comm is None:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    try:
        comm.Abort(code)
    finally:
        os._exit(code)


__all__ = ["ABORT_GRACE_S", "abort_job"]
