"""Which ranks share cores, discovered from each rank's host and CPU affinity.

When ranks of one node may run on overlapping sets of cores (more ranks than
cores, or ranks pinned together with ``taskset``/``--cpu-bind``), a rank's
*wall-clock* kernel rate is not a property of the rank: it rises whenever its
core-mates wait and falls when they compute, so a planner fed wall rates chases
its own tail. For those ranks the runner times kernels in CPU seconds (the
rank's own speed on a core) and multiplies by the cores the rank can have when
every rank of its group computes at once — the situation a balanced plan
creates:

``cores_r = threads_r × min(1, cores_in_group / Σ threads in group)``

A *group* is a set of ranks on one host whose affinity sets overlap
(transitively); ``cores_in_group`` is the size of their union. Nothing here is
configured: host names and affinities are read from the running processes.
Ranks with cores of their own (the normal case on a cluster) are not
oversubscribed and keep their wall-clock rates.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import numpy as np

from hpccloud.measure.discover import union_components


def this_host() -> str:
    """The node name: ``SLURMD_NODENAME`` under Slurm, else the host name."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def this_cpus() -> frozenset[int]:
    """The logical CPUs this process may run on."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: assume the whole machine
        return frozenset(range(os.cpu_count() or 1))


@dataclass(frozen=True)
class CoreShares:
    """Per rank: host, CPU set, threads, and the core group it falls in.

    >>> cs = CoreShares.from_ranks(["a"] * 4, [{1}, {0}, {0}, {0}], [1, 1, 1, 1])
    >>> cs.group.tolist(), cs.cores_per_rank().tolist()
    ([0, 1, 1, 1], [1.0, 0.3333333333333333, 0.3333333333333333, 0.3333333333333333])
    >>> cs.oversubscribed.tolist()
    [False, True, True, True]
    """

    hosts: tuple[str, ...]
    cpus: tuple[frozenset[int], ...]
    threads: tuple[int, ...]
    group: np.ndarray          # (P,) group id per rank
    group_cores: np.ndarray    # (P,) cores in the union of the group's CPU sets
    group_threads: np.ndarray  # (P,) threads of all ranks in the group

    @classmethod
    def from_ranks(cls, hosts, cpus, threads) -> CoreShares:
        hosts = tuple(str(h) for h in hosts)
        cpus = tuple(frozenset(int(c) for c in s) for s in cpus)
        threads = tuple(max(1, int(t)) for t in threads)
        n = len(hosts)
        if not len(cpus) == len(threads) == n:
            raise ValueError("hosts, cpus and threads need one entry per rank")
        # ranks on one host that share a CPU: each (host, cpu) joins every rank that has it
        # to the first that had it — O(sum of the CPU sets), not a P x P table (10^5 ranks)
        first: dict[tuple[str, int], int] = {}
        edge_a: list[int] = []
        edge_b: list[int] = []
        for i in range(n):
            for c in cpus[i]:
                j = first.setdefault((hosts[i], c), i)
                if j != i:
                    edge_a.append(j)
                    edge_b.append(i)
        group = union_components(n, edge_a, edge_b)
        union: dict[int, set[int]] = {}
        demand: dict[int, int] = {}
        for i in range(n):
            union.setdefault(int(group[i]), set()).update(cpus[i])
            demand[int(group[i])] = demand.get(int(group[i]), 0) + threads[i]
        return cls(hosts, cpus, threads, group,
                   np.array([max(1, len(union[int(g)])) for g in group], dtype=np.float64),
                   np.array([demand[int(g)] for g in group], dtype=np.float64))

    @property
    def oversubscribed(self) -> np.ndarray:
        """(P,) True where the group's ranks want more threads than it has cores."""
        return self.group_threads > self.group_cores

    def cores_per_rank(self) -> np.ndarray:
        """(P,) cores rank r gets while every rank of its group computes at once."""
        t = np.asarray(self.threads, dtype=np.float64)
        return t * np.minimum(1.0, self.group_cores / self.group_threads)

    @property
    def twins(self) -> np.ndarray:
        """(P,) a class id per rank: ranks of one class share a host, a CPU set and a thread
        count, so they run a kernel at one speed; each rank of a class shares its cores
        with every other."""
        keys = list(zip(self.hosts, self.cpus, self.threads, strict=True))
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        return np.array([first[k] for k in keys], dtype=np.int64)

    def to_json(self) -> dict:
        return {"hosts": list(self.hosts), "cpus": [sorted(c) for c in self.cpus],
                "threads": list(self.threads), "group": self.group.tolist(),
                "cores_per_rank": self.cores_per_rank().tolist(),
                "oversubscribed": self.oversubscribed.tolist()}


def discover_cores(comm, threads: int) -> CoreShares:
    """Collective: every rank's host, affinity and thread count; the same result everywhere."""
    rows = comm.allgather((this_host(), sorted(this_cpus()), int(threads)))
    return CoreShares.from_ranks(*zip(*rows, strict=True))


def planner_rates(wall_rate: np.ndarray, cpu_rate: np.ndarray, shares: CoreShares | None,
                  cpu_s: np.ndarray | None = None) -> np.ndarray:
    """Rates for the planner: wall-clock where a rank has its cores to itself; for ranks of an
    oversubscribed group, CPU-time rate × the cores the rank gets when its whole group computes.

    Oversubscribed ranks that are twins (:attr:`CoreShares.twins`: one host, CPU set and
    thread count) run at one speed, so they get their pooled CPU rate: their units over
    their CPU seconds (``cpu_s``, the rates' weights; None: equal weights), and a twin
    without a sample gets it too. A difference between twins is the time slices they
    happened to get: replayed over the matrix's kept runs (particles, spmv, k-means,
    stencil2d, mandelbrot on 1+3, 3+1, 2+1), a twin's offset from its twins' mean in one
    window predicted the next window's at rms 0.008-0.18, the pooled rate (offset 0) at
    0.003-0.14 in every workload.

    >>> cs = CoreShares.from_ranks(["a"] * 3, [{1}, {0}, {0}], [1, 1, 1])
    >>> planner_rates(np.array([9.0, 6.0, 4.0]), np.array([10.0, 10.0, 10.0]), cs).tolist()
    [9.0, 5.0, 5.0]
    >>> planner_rates(np.array([9.0, 4.0, 4.0]), np.array([9.0, 12.0, 6.0]), cs,
    ...               cpu_s=np.array([1.0, 1.0, 2.0])).tolist()  # 24 units in 3 CPU s, half a core
    [9.0, 4.0, 4.0]
    """
    wall = np.asarray(wall_rate, dtype=np.float64)
    if shares is None:
        return wall.copy()
    cpu = np.asarray(cpu_rate, dtype=np.float64)
    weight = np.ones(cpu.shape) if cpu_s is None else np.asarray(cpu_s, dtype=np.float64)
    ok = np.isfinite(cpu) & (cpu > 0) & np.isfinite(weight) & (weight > 0)
    twins = shares.twins  # O(P): one weighted mean per class, not a pass per class
    w = np.where(ok, weight, 0.0)
    total = np.bincount(twins, w, minlength=twins.size)[twins]
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = np.bincount(twins, np.where(ok, cpu, 0.0) * w, minlength=twins.size)[twins] / total
    over = shares.oversubscribed & np.isfinite(pooled) & (pooled > 0)
    return np.where(over, pooled * shares.cores_per_rank(), wall)


__all__ = ["CoreShares", "discover_cores", "planner_rates", "this_cpus", "this_host"]
