"""``hpccloud info``: MPI library and fabric, launcher check, ranks → regions, Numba threading.

Besides the ranks and regions it says which MPI library mpi4py loaded
(``MPI_Get_library_version``), what carries the messages (the MPICH device,
the transport libraries and Open MPI components the process loaded, and the
environment variables that pick a provider), and warns when the ``mpiexec`` on
``PATH`` belongs to another MPI than mpi4py's — the launcher then starts N
singletons or fails at start-up.
"""

from __future__ import annotations

import os
import shutil

from hpccloud.commands.common import add_threads_arg, add_topology_arg, world
from hpccloud.mpiinfo import (
    fabric_summary,
    launcher_mismatch,
    launcher_version_text,
    process_maps,
)


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="MPI library and fabric, ranks and regions, Numba threads per rank")
    add_topology_arg(p)
    add_threads_arg(p)
    p.set_defaults(run=run)


def run(args) -> int:
    import sys

    import numba
    from mpi4py import MPI

    from hpccloud.comm.topology import load_topology
    from hpccloud.threads import configure_threads

    comm = world()
    topo = load_topology(args.topology, comm)
    threads = configure_threads(comm, args.threads)
    numba.njit(lambda x: x + 1)(1)  # initialise the threading layer so it can be named
    layer: str
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not initialised"
    rows = comm.gather((comm.Get_rank(), topo.hosts[comm.Get_rank()], topo.region_of(comm.Get_rank()),
                        threads), root=0)
    library = MPI.Get_library_version().strip()
    fabric = comm.gather(fabric_summary(library, dict(os.environ), process_maps()), root=0)
    if comm.Get_rank() == 0:
        mpiexec = shutil.which("mpiexec")
        print(f"MPI library      : {library.splitlines()[0]}")
        print(f"MPI standard     : {'.'.join(map(str, MPI.Get_version()))}; mpi4py {__import__('mpi4py').__version__}")
        for text in sorted(set(fabric)):
            print(f"fabric           : {text}")
        print(f"mpiexec on PATH  : {mpiexec or 'none'}")
        print(f"Numba            : {numba.__version__}, threading layer {layer}")
        print(f"topology         : {topo.name} ({topo.source})")
        print(f"ranks            : {comm.Get_size()}")
        for rank, host, region, nthreads in rows:
            print(f"  rank {rank:>4}  host {host:<20} region {region:<12} threads {nthreads}")
        warning = launcher_mismatch(library, mpiexec, launcher_version_text(mpiexec) if mpiexec else "")
        if warning:
            print(warning, file=sys.stderr, flush=True)
    return 0
