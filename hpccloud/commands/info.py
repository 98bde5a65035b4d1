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
import re
import shutil
import subprocess

from hpccloud.commands.common import add_threads_arg, add_topology_arg, world

#: environment variables that choose a fabric or provider, by MPI
FABRIC_ENV = ("FI_PROVIDER", "MPIR_CVAR_CH4_NETMOD", "MPIR_CVAR_OFI_USE_PROVIDER", "UCX_TLS",
              "UCX_NET_DEVICES", "OMPI_MCA_pml", "OMPI_MCA_btl", "OMPI_MCA_mtl", "PSM2_DEVICES")
#: shared objects whose presence in the process names the transport in use
FABRIC_LIBS = {"libfabric": "libfabric (OFI)", "libucp": "UCX", "libpsm2": "PSM2",
               "libibverbs": "verbs", "libcxi": "Slingshot CXI", "libmlx5": "mlx5"}


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="MPI library and fabric, ranks and regions, Numba threads per rank")
    add_topology_arg(p)
    add_threads_arg(p)
    p.set_defaults(run=run)


def mpi_kind(text: str) -> str:
    """``"openmpi"``, ``"mpich"`` or ``"unknown"`` from a library or launcher version text.

    >>> mpi_kind("Open MPI v4.1.4, package: Debian OpenMPI"), mpi_kind("HYDRA build details:")
    ('openmpi', 'mpich')
    """
    if "Open MPI" in text or "OpenRTE" in text or "open-mpi.org" in text:
        return "openmpi"
    if "MPICH" in text or "HYDRA" in text or "Hydra" in text:
        return "mpich"
    return "unknown"


def first_version(text: str) -> str | None:
    """The first ``x.y.z`` (or ``x.y``) in ``text``.

    >>> first_version("mpiexec (OpenRTE) 4.1.4"), first_version("MPICH Version:      4.2.1")
    ('4.1.4', '4.2.1')
    """
    m = re.search(r"(?<![\d.])(\d+\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m else None


def launcher_version_text(mpiexec: str) -> str:
    try:
        res = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return res.stdout + res.stderr


def launcher_mismatch(library: str, mpiexec: str | None, launcher_text: str) -> str | None:
    """A warning when ``mpiexec`` is not the launcher of ``library``'s MPI, else None.

    >>> launcher_mismatch("Open MPI v4.1.4", "/usr/bin/mpiexec", "HYDRA build details: Version: 4.0.2")[:8]
    'WARNING:'
    >>> launcher_mismatch("MPICH Version: 4.2.1", "/v/bin/mpiexec", "HYDRA Version: 4.2.1") is None
    True
    """
    if mpiexec is None:
        return None
    lib_kind, exe_kind = mpi_kind(library), mpi_kind(launcher_text)
    lib_ver = first_version(re.sub(r"^.*?(Version:|v)(?=\s*\d)", "", library, count=1, flags=re.S))
    exe_ver = first_version(launcher_text.split("Version:", 1)[-1])
    if lib_kind == "unknown" or exe_kind == "unknown":
        return None
    if lib_kind != exe_kind or (lib_ver and exe_ver and lib_ver != exe_ver):
        return (f"WARNING: the mpiexec on PATH ({mpiexec}: {exe_kind} {exe_ver}) does not match "
                f"mpi4py's MPI ({lib_kind} {lib_ver}); jobs it starts may run as N separate "
                "1-rank worlds or fail at start-up. Fix: put the matching mpiexec first on PATH "
                "(the venv's bin/ for the mpich wheel; `module load` the MPI mpi4py was built with)")
    return None


def fabric_summary(library: str, environ: dict[str, str], maps: str) -> str:
    """What carries the messages: device, loaded transport libraries/components, provider env.

    >>> fabric_summary("MPICH Device: ch4:ofi", {"FI_PROVIDER": "tcp"}, "/x/libfabric.so.1\\n")
    'device ch4:ofi; loaded libfabric (OFI); FI_PROVIDER=tcp'
    """
    parts = []
    m = re.search(r"MPICH Device:\s*(\S+)", library) or re.search(r"--with-device=(\S+)", library)
    if m:
        parts.append(f"device {m.group(1)}")
    libs = [label for name, label in FABRIC_LIBS.items() if re.search(rf"/{name}[.-]", maps)]
    comps = sorted(set(re.findall(r"mca_(?:pml|btl|mtl)_\w+", maps)))
    if libs:
        parts.append("loaded " + ", ".join(libs))
    if comps:
        parts.append("Open MPI components " + ", ".join(c[4:] for c in comps))
    env = [f"{k}={environ[k]}" for k in FABRIC_ENV if environ.get(k)]
    parts.extend(env)
    if not libs and not comps and not env and not m:
        parts.append("shared memory / the library's default (nothing else loaded or chosen)")
    return "; ".join(parts)


def _maps() -> str:
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def run(args) -> int:
    import sys

    import numba
    from mpi4py import MPI

    from hpccloud.threads import configure_threads
    from hpccloud.topology import load_topology

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
    library = MPI.Get_library_version().strip()
    fabric = comm.gather(fabric_summary(library, dict(os.environ), _maps()), root=0)
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
