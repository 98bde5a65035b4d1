"""A rank that ends the job says why first: its last line reaches the launcher's stderr."""

import sys

from hpccloud.testing.mpi_pytest import run_mpi

ABORTING = """
import sys
from mpi4py import MPI
from hpccloud.comm.abort import abort_job
comm = MPI.COMM_WORLD
comm.Barrier()
if comm.Get_rank() == 1:
    sys.stderr.write("partial line without newline")  # flushed before the message
    abort_job(7, "hpccloud: error on rank 1: last words")
comm.Barrier()  # rank 0 waits here until the abort ends it
"""


def test_abort_job_message_reaches_the_launcher():
    for _ in range(3):  # the race it closes is timing-dependent: try it a few times
        res = run_mpi([sys.executable, "-c", ABORTING], 2, timeout_s=60)
        assert res.returncode == 7, res.stderr[-2000:]
        assert res.stderr.count("hpccloud: error on rank 1: last words") == 1, res.stderr[-2000:]
        assert "partial line without newline" in res.stderr
