"""An aborted hpccloud job leaves no MPICH segment in /dev/shm; a clean one still exits 0."""

import os
import sys

import pytest

from hpccloud.testing.mpi_pytest import run_mpi

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")

ABORTING = """
import sys
import time
from hpccloud.commands.common import world
from hpccloud.comm.shm import mapped_segments
comm = world()
comm.Barrier()
print("mapped", sorted(mapped_segments()), flush=True)
comm.Barrier()  # every rank has printed ...
if sys.argv[1] == "abort" and comm.Get_rank() == 1:
    time.sleep(1.0)  # ... and Hydra has forwarded it before the abort kills the proxies
    comm.Abort(3)
comm.Barrier()
"""


def _ours(segments_before):
    return sorted(set(os.listdir("/dev/shm")) - segments_before)


@pytest.mark.parametrize("how,code", [("abort", 3), ("clean", 0)])
def test_no_segment_left(tmp_path, how, code):
    script = tmp_path / "job.py"
    script.write_text(ABORTING)
    before = set(os.listdir("/dev/shm"))
    res = run_mpi([sys.executable, str(script), how], 3, 90, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert res.returncode == code, res.stderr
    # the job's own segments: mapped during the run, gone now (other jobs' may come and go)
    assert "mapped []" in res.stdout  # unlinked once all local ranks had attached
    leaked = [s for s in _ours(before) if s.startswith("mpich_shm_")]
    # other jobs on the machine may have started meanwhile: only a segment nobody maps is a leak
    assert not [s for s in leaked if not _in_use(s)], leaked


def _in_use(name: str) -> bool:
    path = f"/dev/shm/{name}"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/maps") as fh:
                if path in fh.read():
                    return True
        except OSError:
            continue
    return False
