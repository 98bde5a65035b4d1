"""Provenance for benchmark results: where, with what, and how busy the machine was.

Every benchmark JSON document is ``{"kind", "provenance", "results"}``: the
results as the benchmark made them, plus :func:`collect` — machine (CPU model,
logical CPUs, the CPUs this process may use, memory), software (hpccloud
version and git commit, Python, numpy, Numba, mpi4py and the MPI library),
the job's Slurm and thread settings, start/end times and the load average
before and after. A benchmark on a busy machine measures the other jobs:
:func:`busy_warning` says so (printed, and kept in the document).

Use it around the timed part::

    from hpccloud.benchsuite import provenance
    before = provenance.Before.now()
    rows = run_the_benchmark()
    doc = provenance.attach("hpccloud-bench-kernels", rows, before, threads=4)
    if doc["provenance"]["busy_warning"]:
        print(doc["provenance"]["busy_warning"], file=sys.stderr)

:func:`spread` turns timing samples into min / quartiles / median / max.
Pure (no MPI import): the MPI library is named only when the caller's MPI is
already initialised.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import statistics
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

#: the document layout; bump when keys change meaning
FORMAT = "hpccloud-bench/1"
#: a machine counts as busy when its 1-minute load before the run exceeds this
#: fraction of the CPUs the benchmark may use (other work competes for them)
BUSY_BEFORE_FRACTION = 0.5
#: ... or when the load after exceeds the benchmark's own threads by this fraction
BUSY_AFTER_FRACTION = 0.5
SLURM_KEYS = ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_NTASKS", "SLURM_CPUS_PER_TASK",
              "SLURM_CPUS_ON_NODE", "SLURMD_NODENAME", "SLURM_CPU_BIND")
THREAD_KEYS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "HPCCLOUD_THREADS",
               "NUMBA_THREADING_LAYER")


def _utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


@dataclass(frozen=True)
class Before:
    """What is measured just before the timed part: time and load."""

    started_utc: str
    load_average: list[float] | None

    @classmethod
    def now(cls) -> Before:
        return cls(_utc_now(), load_average())


def spread(samples: list[float]) -> dict[str, float]:
    """min, q1, median, q3, max and the IQR of ``samples`` (at least one).

    >>> s = spread([4.0, 1.0, 3.0, 2.0])
    >>> s["min"], s["median"], s["max"], s["n"]
    (1.0, 2.5, 4.0, 4)
    """
    xs = sorted(float(x) for x in samples)
    if len(xs) >= 2:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    else:
        q1 = q3 = xs[0]
    return {"n": len(xs), "min": xs[0], "q1": q1, "median": statistics.median(xs), "q3": q3,
            "max": xs[-1], "iqr": q3 - q1}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.split(":")[0].strip() in ("model name", "Model", "cpu model"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine() -> dict[str, Any]:
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpus_available": len(affinity) if affinity is not None else os.cpu_count(),
        "cpu_affinity": affinity,
        "memory_bytes": memory_bytes(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
    }


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_commit(folder: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the checkout hpccloud runs from, or None (no git / no repo)."""
    folder = str(folder or Path(__file__).resolve().parents[2])
    try:
        head = subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", folder, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def mpi_library() -> str | None:
    """First line of ``MPI_Get_library_version`` if this process already loaded mpi4py.MPI."""
    mod = sys.modules.get("mpi4py.MPI")
    if mod is None:
        return None
    try:
        return mod.Get_library_version().strip().splitlines()[0]
    except Exception:  # noqa: BLE001 - provenance must never fail a benchmark
        return None


def software() -> dict[str, Any]:
    from hpccloud import __version__

    return {
        "hpccloud": __version__,
        "git": git_commit(),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "numba": _version("numba"),
        "mpi4py": _version("mpi4py"),
        "mpi_library": mpi_library(),
        "mpich_wheel": _version("mpich"),
    }


def busy_warning(before: list[float] | None, after: list[float] | None, cpus: int,
                 threads: int) -> str | None:
    """A warning when the load says other work shared the machine, else None.

    >>> busy_warning([0.1, 0.1, 0.1], [1.9, 0.5, 0.2], cpus=2, threads=2) is None
    True
    >>> busy_warning([3.0, 2.0, 1.0], [4.0, 2.0, 1.0], cpus=2, threads=2)[:8]
    'WARNING:'
    """
    if before is None or after is None:
        return None
    reasons = []
    if before[0] > BUSY_BEFORE_FRACTION * cpus:
        reasons.append(f"1-minute load {before[0]:.2f} before the run on {cpus} CPU(s)")
    if after[0] > threads + BUSY_AFTER_FRACTION * cpus:
        reasons.append(f"1-minute load {after[0]:.2f} after it, with {threads} thread(s) of ours")
    if not reasons:
        return None
    return ("WARNING: the machine was busy (" + "; ".join(reasons) + "): the timings include "
            "other work. Fix: rerun on an idle node (Slurm: --exclusive) and compare ratios "
            "measured in the same run, not absolute times.")


def collect(before: Before, threads: int | None = None, ranks: int | None = None) -> dict[str, Any]:
    """The provenance record; call it right after the timed part."""
    after = load_average()
    mach = machine()
    cpus = int(mach["cpus_available"] or 1)
    nthreads = int(threads or 1) * int(ranks or 1)
    return {
        "format": FORMAT,
        "started_utc": before.started_utc,
        "finished_utc": _utc_now(),
        "command": [os.path.basename(sys.argv[0]), *sys.argv[1:]],
        "machine": mach,
        "software": software(),
        "threads": threads,
        "ranks": ranks,
        "environment": {k: os.environ[k] for k in (*SLURM_KEYS, *THREAD_KEYS) if k in os.environ},
        "load_average_before": before.load_average,
        "load_average_after": after,
        "busy_warning": busy_warning(before.load_average, after, cpus, nthreads),
    }


def attach(kind: str, results: Any, before: Before, threads: int | None = None,
           ranks: int | None = None) -> dict[str, Any]:
    """``{"kind", "provenance", "results"}`` for a benchmark's results."""
    return {"kind": kind, "provenance": collect(before, threads=threads, ranks=ranks),
            "results": results}
