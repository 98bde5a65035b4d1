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


class Window:
    """Step records and per-shard seconds since the last :meth:`reset` (one per rank)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.shard_s: dict[int, float] = {}
        self.shard_n: dict[int, int] = {}

    def add(self, record: dict[str, Any], shard_s: dict[int, float]) -> None:
        """One step: its gathered record and this rank's seconds per local shard."""
        self.steps.append(record)
        for sid, sec in shard_s.items():
            self.shard_s[sid] = self.shard_s.get(sid, 0.0) + sec
            self.shard_n[sid] = self.shard_n.get(sid, 0) + 1

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

        Ranks that share cores are rated by CPU time × the cores they get
        (:func:`~hpccloud.measure.cores.planner_rates`), the others by wall time.
        """
        units, secs, cpu = self.rank_sums(size)
        wall = np.where(secs > 0, units / np.maximum(secs, 1e-300), np.nan)
        cpu_rate = np.where((cpu > 0) & (units > 0), units / np.maximum(cpu, 1e-300), np.nan)
        return {"wall": wall, "cpu": cpu_rate, "planner": planner_rates(wall, cpu_rate, cores)}

    def shard_work(self, comm, n_shards: int, owners: np.ndarray, wall: np.ndarray,
                   fallback: np.ndarray) -> np.ndarray:
        """Collective: every shard's work units — its mean seconds per step × its rank's rate.

        Per-shard seconds stay local during the window and are gathered once here.
        A shard's units are its share of its rank's wall time × that rank's wall
        rate (``fallback`` where a rank has none), so they travel with the shard.
        """
        shard_s = np.zeros(n_shards)
        shard_n = np.zeros(n_shards)
        for part_s, part_n in comm.allgather((self.shard_s, self.shard_n)):
            for sid, sec in part_s.items():
                shard_s[sid] += sec
                shard_n[sid] += part_n[sid]
        mean_s = np.where(shard_n > 0, shard_s / np.maximum(shard_n, 1), 0.0)
        return mean_s * np.where(np.isfinite(wall), wall, fallback)[owners]

    def median_step_s(self) -> float | None:
        return float(np.median([s["step_s"] for s in self.steps])) if self.steps else None
