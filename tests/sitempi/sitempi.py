"""hpccloud on a site's own MPI: Debian's Open MPI and MPICH, mpi4py built from source.

What a centre does (``module load openmpi``; ``MPICC=mpicc pip install
--no-binary=mpi4py mpi4py``) done here with Debian's packages:

1. ``apt-get install`` the MPI's compiler wrapper and launcher when missing
   (``libopenmpi-dev openmpi-bin`` / ``libmpich-dev mpich``; the two coexist,
   each with suffixed wrappers ``mpicc.openmpi``, ``mpiexec.mpich``, ...);
2. a venv of its own (no ``--system-site-packages``) in which mpi4py is built
   from source with ``MPICC=mpicc.<flavour>`` — the *only* package that
   depends on the MPI. The venv reaches the test venv's other packages (numpy,
   Numba, h5py, pytest, ...) through a ``.pth`` file appended *after* its own
   site-packages, so its own mpi4py wins and nothing else is downloaded. The
   code under test comes from the checkout (``PYTHONPATH``), as in every MPI
   test of this suite;
3. the venv is cached under ``$HPCCLOUD_CACHE`` (default
   ``~/.cache/hpccloud``)``/sitempi/<flavour>-<key>``, the key hashing the
   MPI's version, the Python and the parent venv, so a re-run takes seconds.

Run by hand (as root)::

    python tests/sitempi/sitempi.py openmpi     # prints the venv and its MPI library
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Flavour:
    name: str
    packages: tuple[str, ...]
    mpicc: str
    mpiexec: str
    library_says: str  # a word MPI_Get_library_version() prints for this MPI


FLAVOURS = {
    "openmpi": Flavour("openmpi", ("libopenmpi-dev", "openmpi-bin"), "mpicc.openmpi",
                       "mpiexec.openmpi", "Open MPI"),
    "mpich": Flavour("mpich", ("libmpich-dev", "mpich"), "mpicc.mpich", "mpiexec.mpich", "MPICH"),
}

#: what a session measured, name -> seconds (printed by tests/sitempi/conftest.py)
TIMINGS: dict[str, float] = {}
#: flavour -> "N passed, ..." of the MPI subset (printed at the end of the run)
COUNTS: dict[str, str] = {}


def which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + SBIN_PATH)


def cannot_run_reason(flavour: Flavour) -> str | None:
    """Why this MPI cannot be used here, or None if it can (installed, or installable)."""
    if which(flavour.mpicc) and which(flavour.mpiexec):
        return None
    if os.geteuid() != 0:
        return f"{flavour.mpicc} is missing and installing {flavour.packages} needs root"
    if which("apt-get") is None:
        return f"{flavour.mpicc} is missing and apt-get is unavailable"
    return None


def install(flavour: Flavour, timeout_s: float = 600.0) -> str:
    """apt-get install the flavour's packages if its wrappers are missing; say what was done."""
    if which(flavour.mpicc) and which(flavour.mpiexec):
        return "already installed"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", PATH=SBIN_PATH)
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *flavour.packages]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
    did = "apt-get install"
    if res.returncode != 0:  # empty or stale package lists: update once, retry
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, env=env,
                       timeout=timeout_s)
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
        did = "apt-get update + install"
    if res.returncode != 0 or not which(flavour.mpicc):
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {res.returncode}):\n"
                           + "\n".join((res.stdout + res.stderr).splitlines()[-30:]))
    return did


def cache_root() -> Path:
    return Path(os.environ.get("HPCCLOUD_CACHE", Path.home() / ".cache" / "hpccloud")) / "sitempi"


def _mpi_version_text(flavour: Flavour) -> str:
    res = subprocess.run([which(flavour.mpicc) or flavour.mpicc, "--version"],
                         capture_output=True, text=True, timeout=60)
    show = subprocess.run([which(flavour.mpiexec) or flavour.mpiexec, "--version"],
                          capture_output=True, text=True, timeout=60)
    return res.stdout + show.stdout


def parent_site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def venv_dir(flavour: Flavour) -> Path:
    key = hashlib.sha256("\n".join([
        _mpi_version_text(flavour), sys.version, sys.executable, parent_site_packages(),
    ]).encode()).hexdigest()[:12]
    return cache_root() / f"{flavour.name}-{key}"


def venv_python(vdir: Path) -> Path:
    return vdir / "bin" / "python"


def build_venv(flavour: Flavour, timeout_s: float = 2400.0) -> tuple[Path, str]:
    """The cached venv with mpi4py built against ``flavour``; (venv, what was done)."""
    vdir = venv_dir(flavour)
    done = vdir / ".complete"
    if done.exists():
        return vdir, "cached"
    shutil.rmtree(vdir, ignore_errors=True)  # a half-built one from a killed run
    vdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = vdir.with_name(vdir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, timeout=timeout_s,
                   capture_output=True)
    py = venv_python(tmp)
    own = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    # the test venv's packages, after the venv's own site-packages (so its mpi4py wins)
    Path(own, "zz_hpccloud_parent.pth").write_text(parent_site_packages() + "\n")
    env = dict(os.environ, MPICC=which(flavour.mpicc) or flavour.mpicc, PIP_NO_INPUT="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    # The sdist is fetched by the test venv's pip (which finds it at once); the new venv's
    # own pip looking mpi4py up in the indexes sat for 15 min here without compiling.
    # Then Cython, and mpi4py from that file without build isolation (an isolated build
    # fetches its build requirements again for every build).
    sdist_dir = cache_root() / "sdist"
    res = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                          "--no-binary=mpi4py", "--no-build-isolation", "-d", str(sdist_dir),
                          "mpi4py>=4"], capture_output=True, text=True, env=env, timeout=timeout_s)
    sdists = sorted(sdist_dir.glob("mpi4py-*.tar.gz"))
    if res.returncode == 0 and sdists:
        res = subprocess.run([str(py), "-m", "pip", "install", "-q", "cython>=3.0.1"],
                             capture_output=True, text=True, env=env, timeout=timeout_s)
    if res.returncode == 0 and sdists:
        # -O0: these venvs test hpccloud's correctness on the MPI, not mpi4py's speed, and
        # gcc -O2 on mpi4py's 10 MB of generated C took > 15 min on a busy 2-core machine.
        # run_group: a timeout kills the whole group (pip, gcc, cc1), not only pip.
        from hpccloud.testing.mpi_pytest import run_group

        env["CFLAGS"] = os.environ.get("HPCCLOUD_SITEMPI_CFLAGS", "-O0")
        res = run_group([str(py), "-m", "pip", "install", "-q", "--no-index",
                         "--no-cache-dir", "--no-build-isolation", "--ignore-installed",
                         "--no-deps", str(sdists[-1])], timeout_s, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"building mpi4py against {flavour.mpicc} failed (exit "
                           f"{res.returncode}):\n" + "\n".join((res.stdout + res.stderr)
                                                               .splitlines()[-40:]))
    # mpi4py must not be the test venv's (the wheel built for the mpich wheel)
    where = subprocess.run([str(py), "-c", "import mpi4py; print(mpi4py.__file__)"],
                           capture_output=True, text=True, timeout=60, env=env)
    if not where.stdout.strip().startswith(own):
        raise RuntimeError(f"the venv imports mpi4py from {where.stdout.strip()!r}, not its own "
                           f"{own}: {where.stderr}")
    os.replace(tmp, vdir)
    # the venv's scripts name their folder; the rename leaves them pointing at tmp, and
    # only `python` is used, so that is harmless (bin/python is a symlink)
    done.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")
    return vdir, "built"


def library_version(vdir: Path) -> str:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    res = subprocess.run([str(venv_python(vdir)), "-c",
                          "from mpi4py import MPI; print(MPI.Get_library_version())"],
                         capture_output=True, text=True, timeout=120, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"mpi4py in {vdir} does not load: {res.stderr[-2000:]}")
    return res.stdout.strip()


if __name__ == "__main__":
    fl = FLAVOURS[sys.argv[1] if len(sys.argv) > 1 else "openmpi"]
    print(install(fl))
    t0 = time.perf_counter()
    v, how = build_venv(fl)
    print(f"{v} ({how}, {time.perf_counter() - t0:.1f} s)")
    print(library_version(v).splitlines()[0])
