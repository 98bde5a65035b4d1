"""``hpccloud info``: MPI library, ranks → regions, Numba threading."""

from __future__ import annotations

from hpccloud.commands.common import add_threads_arg, add_topology_arg, world


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="MPI library, ranks and regions, Numba threads per rank")
    add_topology_arg(p)
    add_threads_arg(p)
    p.set_defaults(run=run)


def run(args) -> int:
    import numba
    from mpi4py import MPI

    from hpccloud.comm.topology import load_topology
    from hpccloud.threads import configure_threads

    comm = world()
    topo = load_topology(args.topology, comm)
    threads = configure_threads(comm, args.threads)
    numba.njit(lambda x: x + 1)(1)  # initialise the threading layer so it can be named
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not initialised"
    rows = comm.gather((comm.Get_rank(), topo.hosts[comm.Get_rank()], topo.region_of(comm.Get_rank()),
                        threads), root=0)
    if comm.Get_rank() == 0:
        lib = MPI.Get_library_version().strip().splitlines()[0]
        print(f"MPI library      : {lib}")
        print(f"MPI standard     : {'.'.join(map(str, MPI.Get_version()))}; mpi4py {__import__('mpi4py').__version__}")
        print(f"Numba            : {numba.__version__}, threading layer {layer}")
        print(f"topology         : {topo.name} ({topo.source})")
        print(f"ranks            : {comm.Get_size()}")
        for rank, host, region, nthreads in rows:
            print(f"  rank {rank:>4}  host {host:<20} region {region:<12} threads {nthreads}")
    return 0
