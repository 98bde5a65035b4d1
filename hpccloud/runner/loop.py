"""The job as a thin loop over the stages.

::

    options ─► setup (models, placement, data or restart) ─► for each step:
        step (halo, kernels, one sync) ─► window
        [rebalance point] rebalance (models from the window, plan, move)
        [checkpoint point] checkpoint
    ─► publish (HDF5 per region + catalogue) ─► report
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from hpccloud.comm.agree import agree
from hpccloud.comm.wait import sleeping_barrier
from hpccloud.report import Progress, build_report
from hpccloud.runner import checkpointing
from hpccloud.runner.options import RunConfig
from hpccloud.runner.publish import write_output
from hpccloud.runner.rebalance import rebalance
from hpccloud.runner.setup import Job, prepare
from hpccloud.runner.step import Stepper
from hpccloud.runner.window import Window
from hpccloud.trace import Tracer

#: test mode: every rank checks every shard it holds against the policy at every step
CHECK_EVERY_STEP_ENV = "HPCCLOUD_CHECK_RESIDENCY_EVERY_STEP"


def next_rebalance(cfg: RunConfig, step: int) -> int | None:
    """The step count after which the next rebalance comes, looking from after ``step``
    (``None``: no more). Rebalances come after ``first_rebalance`` steps (default 3,
    as soon as two steps past the first-touch one measured the ranks, when
    ``rebalance_every >= 6``; with a shorter K the first multiple is early enough) and
    after every multiple of ``rebalance_every``.

    >>> cfg = RunConfig(steps=30, rebalance_every=10)
    >>> [next_rebalance(cfg, s) for s in (0, 2, 3, 9, 25)]
    [3, 3, 10, 10, 30]
    >>> next_rebalance(RunConfig(rebalance_every=0), 0) is None
    True
    """
    done = step + 1
    k = cfg.rebalance_every
    first = cfg.first_rebalance if cfg.first_rebalance is not None else (3 if k >= 6 else 0)
    points = []
    if first and first >= done:
        points.append(first)
    if k:
        points.append(-(-done // k) * k)
    return min(points) if points else None


def plan_horizon(cfg: RunConfig, done: int, stationary: bool) -> int:
    """The steps a plan made after ``done`` steps is priced over (its gate's H): ``--horizon``
    if given; else, for a workload whose work the plan takes as it was measured
    (``stationary``: no model of its change), the steps left in the run; for one whose
    work changes as it models it (a hot spot that moves), the steps to the next
    scheduled rebalance.

    A move is worth making if what it saves before the run ends pays for it. Where the
    work stays, so does the saving: the next rebalances keep the map, and waiting for
    one only forgoes the saving meanwhile (the move costs the same then). Priced over
    the steps to the next rebalance instead, a move that corrects a difference in the
    ranks' speeds had to pay for itself within one interval, at every rebalance: topo
    mostly kept its map where greedy, which has no gate, moved and won (k-means and
    particles on 3 and 4 ranks pinned to 2 cores, 6 of 6 cells). Where the load moves
    on, the saving lasts until the map is planned again.

    >>> cfg = RunConfig(steps=60, rebalance_every=10)
    >>> plan_horizon(cfg, 3, stationary=True), plan_horizon(cfg, 3, stationary=False)
    (57, 7)
    >>> plan_horizon(RunConfig(steps=60, rebalance_every=10, horizon_steps=5), 3, stationary=True)
    5
    """
    if cfg.horizon_steps:
        return int(cfg.horizon_steps)
    left = cfg.steps - done
    if stationary:
        return left
    after = next_rebalance(cfg, done)
    return min((after or cfg.steps) - done, left)


class Deferral:
    """Rebalance points skipped while plans keep finding nothing worth moving.

    A rebalance costs even when it moves nothing: the window's models, the plan
    on rank 0 while the others wait, the broadcast and the barriers (10-20 ms a
    rebalance of the k-means job on 3+1 ranks on 2 cores, 10-20 % of a 60-step
    run at K=10, which a static job never pays). After two plans in a row that
    moved nothing, the next scheduled point is skipped, after three the next
    three, then seven (the gap doubles, as a load-balancing period that adapts
    to what the balancer finds). A skipped point is taken after all when the
    step time drifted: the median of the last ``rebalance_every`` steps' slowest
    active time left the band of the window the last plan judged (its median ±
    3 MADs, at least ± 1 %). The figures are gathered ones, so every rank decides
    alike. A plan that moves resets it, unless it moved for a predicted saving
    below what the plan cost (:meth:`planned`).

    >>> d = Deferral()
    >>> steps = [{"active_s": 0.010}] * 10
    >>> d.planned(0, steps); d.planned(0, steps)
    >>> d.skip(steps), d.skip([{"active_s": 0.013}] * 10)
    (True, False)
    """

    def __init__(self) -> None:
        self.idle = 0
        self.skips_left = 0
        self.band: tuple[float, float] | None = None

    def planned(self, n_moves: int, steps: list[dict[str, Any]], net_s: float | None = None,
                gain_s: float = 0.0, plan_s: float = 0.0) -> None:
        """A rebalance ran: its plan's moves and the window it planned on; for a plan that
        moves, its predicted saving over the horizon net of the move (``net_s``), per
        step (``gain_s``), and what making the plan cost (``plan_s``: rank 0's measured
        planning time, the same figure on every rank — the ranks must decide alike).

        A move predicted to save less than its plan cost counts as idle: the balancer
        looked and found nothing worth the price of looking (the stencil job on 5
        ranks / 2 cores: a 4-shard move for a net ~0 put the ladder back to every
        point, and two more 15 ms plans followed that found nothing). The band it
        judges the next steps by is the window's less the predicted gain per step.
        """
        small = bool(n_moves) and net_s is not None and net_s < plan_s
        if (n_moves and not small) or not steps:
            self.idle, self.skips_left, self.band = 0, 0, None
            return
        self.idle += 1
        active = np.array([s["active_s"] for s in steps], np.float64)
        med = float(np.median(active))
        half = max(3.0 * float(np.median(np.abs(active - med))), 0.01 * med)
        mid = med - (max(0.0, gain_s) if small else 0.0)
        self.band = (mid - half, mid + half)
        self.skips_left = 2 ** (self.idle - 1) - 1

    def skip(self, recent: list[dict[str, Any]]) -> bool:
        """Whether to skip this scheduled point, given the steps since the last plan."""
        if self.skips_left <= 0 or self.band is None or not recent:
            return False
        now = float(np.median([s["active_s"] for s in recent]))
        if not self.band[0] <= now <= self.band[1]:
            self.skips_left = 0  # the load moved: plan now
            return False
        self.skips_left -= 1
        return True


def loop(job: Job) -> float:
    """Collective: run the steps from ``job.start_step``; return the loop's wall time.

    A :class:`~hpccloud.comm.watchdog.Watchdog` watches the waits (``--stall-timeout``);
    rank 0 tells a supervisor each completed step and published checkpoint
    (:class:`~hpccloud.supervise.ProgressWriter`); checkpoints are written while
    the next steps run and published once every rank's files are written.
    """
    from hpccloud.comm import watchdog
    from hpccloud.supervise import ProgressWriter
    from hpccloud.testing.faults import maybe_fault

    cfg = job.cfg
    stepper = Stepper(job)
    window = Window()
    deferral = Deferral() if cfg.defer_idle else None
    check_every_step = os.environ.get(CHECK_EVERY_STEP_ENV) == "1"
    progress = Progress(job.rank == 0 and not cfg.quiet, cfg.steps, job.start_step)
    supervisor = ProgressWriter() if job.rank == 0 else ProgressWriter("")
    supervisor.start(job.start_step)
    wd = watchdog.Watchdog(job.comm, cfg.stall_timeout or watchdog.DEFAULT_STALL_TIMEOUT_S,
                           lambda r: f"host {job.topology.hosts[r]}, region {job.topology.region_of(r)}")
    watchdog.install(wd)
    sleeping_barrier(job.comm)
    t_start = time.perf_counter()
    stepper.restart_clock()
    try:
        for step in range(job.start_step, cfg.steps):
            maybe_fault(job.rank, step)
            rec, shard_s, shard_cpu_s = stepper.step(step)
            job.steps.append(rec)
            window.add(rec, shard_s, shard_cpu_s)
            wd.progress(step, rec["step_s"])
            supervisor.step(step + 1)
            if check_every_step:
                agree(job.comm, job.check_local)
            if stepper.checkpoint_written:  # every rank's files are written: publish
                with job.tracer.span("checkpoint finish", "io", step=step + 1):
                    checkpointing.finish(job)  # its seconds go to job.checkpoints, not the step
                stepper.restart_clock()
            progress.update(step, rec["step_s"])
            done = step + 1
            nxt = next_rebalance(cfg, step)
            if step == job.start_step and cfg.steps - step > 2 and nxt != done:
                window.reset()  # the first step pays first-touch and cache costs: not a rate
            due = nxt == done and done < cfg.steps
            if due and deferral is not None and deferral.skip(
                    window.steps[-(cfg.rebalance_every or len(window.steps)):]):
                job.deferred.append(done)
            elif due:
                horizon = plan_horizon(cfg, done, stationary=not job.wl.forecasts_work)
                t_rb = time.perf_counter()
                record = rebalance(job, window, step, horizon)
                if deferral is not None:
                    gain = float(record["makespan_before_s"] - record["makespan_after_s"])
                    deferral.planned(int(record.get("n_moves") or 0), window.steps,
                                     net_s=gain * int(record["horizon_steps"]) - float(record["migration_s"]),
                                     # rank 0's planning time, broadcast with the plan: every
                                     # rank must decide alike (its own clock's phases differ)
                                     gain_s=gain, plan_s=float(record["plan_seconds"]))
                window.reset()
                t_wait = time.perf_counter()
                sleeping_barrier(job.comm)
                t_done = time.perf_counter()
                job.tracer.add("barrier", "wait", t_wait, t_done)
                job.tracer.add("rebalance", "step", t_rb, t_done, after_step=step)
                record["rebalance_wall_s"] = t_done - t_rb
                if cfg.calibrate:
                    job.calibrator.add_rebalance(record)
                job.plans.append(record)
                progress.log(record)
                stepper.restart_clock()
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0:
                with job.tracer.span("checkpoint start", "io", step=done):
                    checkpointing.start(job, done, on_published=supervisor.checkpoint)
                stepper.restart_clock()
        checkpointing.close(job)
    finally:
        stepper.close()
        watchdog.install(None)
        supervisor.close()
    wd.free()
    progress.close()
    return time.perf_counter() - t_start


def run(comm, topology, cfg: RunConfig) -> dict[str, Any]:
    """Run one job collectively on ``comm``; return the report (the same dict on every rank)."""
    agree(comm, cfg.validate)
    tracer = Tracer(enabled=bool(cfg.trace))
    if cfg.trace:
        tracer.sync_clock(comm)
    with tracer.span("setup", "step"):
        job = prepare(comm, topology, cfg)
    job.tracer = tracer
    try:
        total_s = loop(job)
        output = None
        if cfg.output:
            with tracer.span("write output", "io"):
                output = write_output(job)
        if cfg.trace:
            regions = [topology.region_of(r) for r in range(job.size)]
            tracer.gather_write(comm, cfg.trace, regions, {"run_id": job.run_id,
                                                           "workload": job.wl.name})
        report = build_report(job, total_s, output)
    except BaseException:
        if job.claims is not None:
            job.claims.abandon()  # a folder it created and never wrote into goes again
        raise
    if job.claims is not None:
        job.claims.release()
    return report
