"""Machine limits and output targets, checked before the first step (pure; no MPI).

What a job will need — each rank's peak memory from the workload's estimate
(:meth:`hpccloud.workloads.base.Workload.estimate`), the bytes it writes — is
compared with what its node has, and every output target is created or probed
for writing, so a run is refused in seconds with the figures and the fix instead
of failing after an hour. The runner gathers the per-rank figures and calls
:func:`check_memory` with them; rank and host are arguments, so a unit test can
ask what a 4-rank node would say.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from hpccloud.errors import ConfigError


@dataclass(frozen=True)
class NodeMemory:
    """Bytes of memory this process may use on its node, and where the figure came from."""

    total_bytes: int
    available_bytes: int
    source: str


def _cgroup_limit() -> tuple[int, int] | None:
    """(limit, usage) of this process's cgroup v2 memory, or None when unlimited or unknown."""
    try:
        with open("/proc/self/cgroup") as fh:
            rel = next((ln.split(":", 2)[2].strip() for ln in fh if ln.startswith("0::")), None)
        if rel is None:
            return None
        base = os.path.join("/sys/fs/cgroup", rel.lstrip("/"))
        with open(os.path.join(base, "memory.max")) as fh:
            raw = fh.read().strip()
        if raw == "max":
            return None
        with open(os.path.join(base, "memory.current")) as fh:
            return int(raw), int(fh.read().strip())
    except (OSError, ValueError, IndexError):
        return None


def node_memory() -> NodeMemory:
    """Memory this node offers: ``os.sysconf`` total, ``MemAvailable`` (free + reclaimable
    cache) where /proc has it, capped by a cgroup limit (a Slurm job's ``--mem``)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = os.sysconf("SC_PHYS_PAGES") * page
    available, source = os.sysconf("SC_AVPHYS_PAGES") * page, "sysconf"
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    available, source = int(line.split()[1]) * 1024, "/proc/meminfo MemAvailable"
    except (OSError, ValueError):
        pass
    cg = _cgroup_limit()
    if cg is not None and cg[0] - cg[1] < available:
        available, source = max(0, cg[0] - cg[1]), "cgroup memory.max"
        total = min(total, cg[0])
    return NodeMemory(int(total), int(available), source)


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def check_memory(hosts: list[str], need_bytes: list[int], available_bytes: list[int],
                 what: str, fix: str, headroom: float = 0.9) -> None:
    """Refuse when the ranks of a node together need more than ``headroom`` of what it has.

    ``hosts[r]``, ``need_bytes[r]`` and ``available_bytes[r]`` are rank ``r``'s node,
    estimate and its node's available memory (the same on one node, up to timing).
    """
    nodes: dict[str, list[int]] = {}
    for r, h in enumerate(hosts):
        nodes.setdefault(h, []).append(r)
    for host, ranks in sorted(nodes.items()):
        need = sum(need_bytes[r] for r in ranks)
        have = min(available_bytes[r] for r in ranks)
        if need > headroom * have:
            raise ConfigError(
                f"{what}: the {len(ranks)} ranks on node {host} would need about {gib(need)} "
                f"({gib(max(need_bytes[r] for r in ranks))} per rank at most), the node has "
                f"{gib(have)} available. Fix: {fix}")


def probe_folder(flag: str, path: str) -> None:
    """Create folder ``path`` (with parents) and check a file can be written in it."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{flag} {path}: is a file, not a folder. Fix: give a folder path, or "
                          "move the file away")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot create the folder ({exc.strerror}). Fix: choose "
                          "a folder you may write") from None
    _probe_write(flag, path, path)


def probe_file(flag: str, path: str, append: bool = False) -> None:
    """Check that file ``path`` can be written (created in its folder, or appended to)."""
    if os.path.isdir(path):
        raise ConfigError(f"{flag} {path}: is a folder, not a file. Fix: give a file name, e.g. "
                          f"{os.path.join(path, 'report.json')}")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot create its folder {folder} ({exc.strerror}). "
                          "Fix: choose a path you may write") from None
    if append and os.path.exists(path):
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        except OSError as exc:
            raise ConfigError(f"{flag} {path}: cannot append ({exc.strerror}). Fix: choose a file "
                              "you may write") from None
        return
    _probe_write(flag, path, folder)


def _probe_write(flag: str, path: str, folder: str) -> None:
    # a debris-shaped name (hpccloud.io.debris), so a crash right here leaves nothing for long
    probe = os.path.join(folder, f".probe.{os.getpid() % 10**8:08d}.tmp")
    try:
        with open(probe, "wb") as fh:
            fh.write(b"x")
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot write in {folder} ({exc.strerror}). Fix: choose "
                          "a path you may write") from None


def check_disk(targets: list[tuple[str, str, int]], headroom: float = 0.95) -> None:
    """Refuse when the bytes to be written on one file system exceed its free space.

    ``targets`` are ``(flag, existing folder, bytes)``; targets on one file system
    (same ``st_dev``) are summed.
    """
    by_dev: dict[int, list[tuple[str, str, int]]] = {}
    for flag, folder, nbytes in targets:
        by_dev.setdefault(os.stat(folder).st_dev, []).append((flag, folder, nbytes))
    for items in by_dev.values():
        need = sum(n for _f, _p, n in items)
        free = shutil.disk_usage(items[0][1]).free
        if need > headroom * free:
            parts = ", ".join(f"{f} {p}: {gib(n)}" for f, p, n in items)
            raise ConfigError(f"not enough disk space: the run will write about {gib(need)} "
                              f"({parts}) where {gib(free)} are free. Fix: free space, write "
                              "elsewhere, or write fewer checkpoints")


__all__ = ["NodeMemory", "check_disk", "check_memory", "node_memory", "probe_file", "probe_folder"]
