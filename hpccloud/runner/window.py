"""The measurement window: what the steps since the last rebalance measured.

The loop adds every step's record; the rebalance stage asks the window for the
ranks' rates and the shards' work units, then the window starts afresh. Keeping
the measurements in one object breaks the loop ↔ rebalance dependency: the
rebalance stage needs the window, not the loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpccloud.measure.cores import CoreShares, planner_rates

#: ``recent`` work: the last 1/RECENT_PART of a window's steps
RECENT_PART = 3


def recent_steps(n: int) -> int:
    """How many of a window's ``n`` steps its ``recent`` work averages (at least one)."""
    return max(1, n // RECENT_PART)


def spread_steps(steps: list[int], most: int) -> list[int]:
    """Up to ``most`` of ``steps`` (sorted), evenly spread, the first and the last kept.

    >>> spread_steps(list(range(35, 40)), 4)
    [35, 36, 38, 39]
    """
    if len(steps) <= most:
        return steps
    return [steps[int(i)] for i in np.linspace(0, len(steps) - 1, most).round()]


class Window:
    """Step records and per-shard seconds since the last :meth:`reset` (one per rank)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.steps: list[dict[str, Any]] = []
        # this rank's seconds per local shard, per step: wall clock and CPU
        self.shard_steps: dict[int, list[float]] = {}
        self.shard_cpu_steps: dict[int, list[float]] = {}

    def add(self, record: dict[str, Any], shard_s: dict[int, float],
            shard_cpu_s: dict[int, float] | None = None) -> None:
        """One step: its gathered record and this rank's seconds per local shard (wall, CPU)."""
        self.steps.append(record)
        for sid, sec in shard_s.items():
            self.shard_steps.setdefault(sid, []).append(sec)
        for sid, sec in (shard_cpu_s or {}).items():
            self.shard_cpu_steps.setdefault(sid, []).append(sec)

    def rank_sums(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per rank: work units, busy wall seconds and busy CPU seconds over the window."""
        units, secs, cpu = np.zeros(size), np.zeros(size), np.zeros(size)
        for rec in self.steps:
            units += rec["work_units"]
            secs += rec["busy_s"]
            cpu += rec["busy_cpu_s"]
        return units, secs, cpu

    def rates(self, size: int, cores: CoreShares | None) -> dict[str, np.ndarray]:
        """Measured rates [units/s]: ``wall``, ``cpu`` and the ``planner``'s (NaN: no sample).

        Ranks that share cores are rated by CPU time × the cores they get, twins by their
        pooled CPU rate (:func:`~hpccloud.measure.cores.planner_rates`), the others by
        wall time.
        """
        units, secs, cpu = self.rank_sums(size)
        wall = np.where(secs > 0, units / np.maximum(secs, 1e-300), np.nan)
        cpu_rate = np.where((cpu > 0) & (units > 0), units / np.maximum(cpu, 1e-300), np.nan)
        return {"wall": wall, "cpu": cpu_rate,
                "planner": planner_rates(wall, cpu_rate, cores, cpu_s=cpu)}

    def shard_work(self, comm, n_shards: int, owners: np.ndarray, wall: np.ndarray,
                   fallback: np.ndarray, cpu: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Collective: every shard's work units over the window and over its last steps.

        A shard's units are its mean CPU seconds per step × its rank's CPU rate
        (``cpu``, units per CPU second), so they travel with the shard; where a rank
        has no CPU rate (or one of its shards no CPU samples), its mean wall seconds ×
        its wall rate (``fallback`` where a rank has none). CPU time, because a rank
        on a shared core is switched out in the middle of some of its kernel calls:
        those calls' wall time holds its core-mates' time slices. 2 ranks on one
        core, particles, 12 tiles each: wall-clock tile work 0.8-1.6 rms off the
        tiles' own particle counts (which spread 1-2 %), CPU time 0.05-0.11; the
        planner moved "heavy" tiles that were not (topo's later k-means moves:
        +7.5 % predicted, -0.1 % achieved; by CPU time +8.0 / +4.3).

        Returns ``(window, recent)``: ``recent`` averages only the last third of
        the shard's steps (at least one), what a load that grows or shifts within
        the window looks like at its end. Per-shard seconds stay local during the
        window and are gathered once here.
        """
        from hpccloud.comm.wait import sleeping_allreduce

        # every shard is on one rank: a sum of the ranks' rows is the whole map's (a wait
        # that sleeps: the ranks arrive from their last step at different times)
        rows = np.zeros((4, n_shards))
        for k, steps in enumerate((self.shard_steps, self.shard_cpu_steps)):
            for sid, x in steps.items():
                if x:
                    rows[2 * k, sid], rows[2 * k + 1, sid] = np.mean(x), np.mean(x[-recent_steps(len(x)):])
        window_s, recent_s, window_cpu_s, recent_cpu_s = sleeping_allreduce(comm, rows)
        rate = np.where(np.isfinite(wall), wall, fallback)
        if cpu is not None:
            # per rank: all its shards by CPU time, or all by wall time (its units add up)
            cpu = np.asarray(cpu, np.float64)
            by_cpu = (np.isfinite(cpu) & (cpu > 0)
                      & (np.bincount(owners, window_cpu_s <= 0, cpu.size) == 0))
            rate = np.where(by_cpu, cpu, rate)
            window_s = np.where(by_cpu[owners], window_cpu_s, window_s)
            recent_s = np.where(by_cpu[owners], recent_cpu_s, recent_s)
        return window_s * rate[owners], recent_s * rate[owners]

    def median_step_s(self) -> float | None:
        return float(np.median([s["step_s"] for s in self.steps])) if self.steps else None
