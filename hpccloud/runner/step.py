"""One timed step on one rank: halo exchange, the kernel on every local shard, one sync.

::

    halo exchange ── workload.begin_step ── kernel on every local shard (each
    timed, wall clock and CPU) ── workload.end_step ── sleeping allgather of
    the step's per-rank figures (the one synchronisation point of a step)

The allgather's wait sleeps instead of spinning, so when ranks share cores a
rank that has finished leaves the core to one that has not.
"""

from __future__ import annotations

import time
from typing import Any

from hpccloud.comm.halo import HaloExchange
from hpccloud.comm.wait import STEP_WAIT_BACKOFF, sleeping_allgather


class Stepper:
    """Runs steps for one job; keeps the halo exchange's plan until the map changes."""

    def __init__(self, job):
        self.job = job
        self._hx: HaloExchange | None = None
        self._hx_version = -1
        self.checkpoint_written = False  # every rank's pending checkpoint files are written
        self.mark = time.perf_counter()
        # a rank of a core shared by too many ranks waits for the step's slowest rank
        # backing off (see STEP_WAIT_BACKOFF); a rank with its cores to itself polls on:
        # a wait that backs off ends late, and its peers' collective rounds wait for it
        self.wait_backoff = STEP_WAIT_BACKOFF if job.cores.oversubscribed[job.rank] else None

    def restart_clock(self) -> None:
        """The next step's wall time counts from now (after a rebalance or a checkpoint)."""
        self.mark = time.perf_counter()

    def _exchange(self) -> float:
        job = self.job
        t0 = time.perf_counter()
        if self._hx is None or self._hx_version != job.shard_map.version:
            self.close()
            self._hx, self._hx_version = HaloExchange(job.comm, job.shard_map), job.shard_map.version
        self._hx.exchange(job.local)
        return time.perf_counter() - t0

    def step(self, step: int) -> tuple[dict[str, Any], dict[int, float], dict[int, float]]:
        """Run ``step``; return its record and this rank's seconds per shard: wall and CPU.

        ``step_s`` is the step's wall time as the job pays it: from the previous
        step's sync (or :meth:`restart_clock`) to this step's, sync included (this
        rank's clock; the ranks leave a sync within a poll interval of each other).
        ``active_s`` is the slowest rank's time before the sync. Every other
        figure is per rank and the same on every rank.
        """
        job, wl = self.job, self.job.wl
        tr = job.tracer
        t0 = time.perf_counter()  # the previous step's allgather lined the ranks up
        halo_s = self._exchange() if wl.halo else 0.0
        t1 = time.perf_counter()
        if wl.halo:
            tr.add("halo exchange", "halo", t0, t0 + halo_s, step=step)
        wl.begin_step(job.comm, job.shard_map, job.local, step)
        t2 = time.perf_counter()
        tr.add("begin_step", "collective", t1, t2, step=step)
        shard_s: dict[int, float] = {}
        shard_cpu_s: dict[int, float] = {}
        units = 0.0
        for sid in sorted(job.local):
            shard = job.shard_map.shards[sid]
            ts, cs = time.perf_counter(), time.process_time()
            job.local[sid], u = wl.compute(shard, job.local[sid], step)
            te, ce = time.perf_counter(), time.process_time()
            shard_s[sid], shard_cpu_s[sid] = te - ts, ce - cs
            tr.add(wl.kernel, "kernel", ts, te, step=step, shard=sid)
            units += u
        busy_cpu_s = sum(shard_cpu_s.values())
        busy_s = sum(shard_s.values())
        t3 = time.perf_counter()
        job.shard_map = wl.end_step(job.comm, job.shard_map, job.local, step)
        t4 = time.perf_counter()
        tr.add("end_step", "collective", t3, t4, step=step)
        step_s = t4 - t0
        # whether this rank's checkpoint files are written rides on the step's one collective
        writer = job.ckpt_writer
        written = float(writer is not None and writer.ready())
        rows = sleeping_allgather(job.comm, (busy_s, halo_s, units, step_s, busy_cpu_s,
                                             len(shard_s), written), backoff=self.wait_backoff)
        now = time.perf_counter()
        self.checkpoint_written = bool(rows[:, 6].all())
        tr.add("step sync", "wait", t4, now, step=step)
        tr.add(f"step {step}", "step", self.mark, now, step=step)
        rec = {
            "step": step,
            "step_s": now - self.mark,
            "active_s": float(rows[:, 3].max()),
            "busy_s": rows[:, 0].tolist(),
            "halo_s": rows[:, 1].tolist(),
            "work_units": rows[:, 2].tolist(),
            "busy_cpu_s": rows[:, 4].tolist(),
            "rank_step_s": rows[:, 3].tolist(),
            "n_shards": [int(x) for x in rows[:, 5]],
        }
        self.mark = now
        return rec, shard_s, shard_cpu_s

    def close(self) -> None:
        if self._hx is not None:
            self._hx.free()
            self._hx = None
