"""Which MPI this process runs on: library kind and version, fabric, launcher check.

Pure helpers (no MPI import) for ``hpccloud info`` and the MPI test harness.
"""

from __future__ import annotations

import re
import subprocess

#: environment variables that choose a fabric or provider, by MPI
FABRIC_ENV = ("FI_PROVIDER", "MPIR_CVAR_CH4_NETMOD", "MPIR_CVAR_OFI_USE_PROVIDER", "UCX_TLS",
              "UCX_NET_DEVICES", "OMPI_MCA_pml", "OMPI_MCA_btl", "OMPI_MCA_mtl", "PSM2_DEVICES")
#: shared objects whose presence in the process names the transport in use
FABRIC_LIBS = {"libfabric": "libfabric (OFI)", "libucp": "UCX", "libpsm2": "PSM2",
               "libibverbs": "verbs", "libcxi": "Slingshot CXI", "libmlx5": "mlx5"}


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


def process_maps() -> str:
    """This process's memory map (which shared objects are loaded), or "" off Linux."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""
