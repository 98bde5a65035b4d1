"""Child job for the watchdog test: steps through sleeping allgathers; one rank stops itself.

    mpiexec -n 3 python tests/resilience/stall_child.py STOP_RANK STOP_STEP TIMEOUT_S
"""

import sys
import time

from mpi4py import MPI

from hpccloud.comm import watchdog
from hpccloud.comm.topology import load_topology
from hpccloud.comm.wait import sleeping_allgather


def main() -> None:
    stop_rank, stop_step, timeout_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    comm = MPI.COMM_WORLD
    topo = load_topology(None, comm)
    wd = watchdog.Watchdog(comm, timeout_s, lambda r: f"host {topo.hosts[r]}, region {topo.region_of(r)}",
                           grace_s=1.0)
    watchdog.install(wd)
    for step in range(40):
        if comm.Get_rank() == stop_rank and step == stop_step:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(0.05 * (1 + comm.Get_rank()))  # uneven "work": waits really wait
        rows = sleeping_allgather(comm, [step])
        assert rows[:, 0].tolist() == [step] * comm.Get_size()
        wd.progress(step, 0.05)
    watchdog.install(None)
    wd.free()
    if comm.Get_rank() == 0:
        print("completed", flush=True)


if __name__ == "__main__":
    main()
