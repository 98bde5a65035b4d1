"""Rebalance stage: models from the window, a plan on rank 0, the moves, the refitted links.

::

    window ─► rates per rank (wall / CPU × cores) and work units per shard
           ─► rank 0 plans with the run's balancer, the plan is broadcast
           ─► only the shards that leave are packed; the transport moves them
              (residency re-checked before a byte moves, checksummed, audited)
           ─► arrivals unpacked into warm buffers; every transfer refits the links

Predicted and achieved figures are both recorded on the plan.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from hpccloud.balance import PlanOptions, plan_problem, problem_from
from hpccloud.comm.agree import bcast_result
from hpccloud.comm.transport import execute_aligned
from hpccloud.comm.wait import sleeping_allgather
from hpccloud.measure.speed import RateEstimate
from hpccloud.runner.window import Window, spread_steps


def measured_models(job, window: Window) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Set the speed model (:class:`~hpccloud.measure.speed.RateEstimate`) and the shards'
    work units from ``window``; return the window's rates and the rate each rank ran at."""
    rates = window.rates(job.size, job.cores)
    old = job.speed.rate(job.wl.kernel)
    if job.rate_estimate is None:  # the speeds measured before the first window are its prior
        job.rate_estimate = RateEstimate(old if job.speed.provenance == "measured" else None)
    rate = fill_rates(rates["planner"], old)
    # the shards' units are converted at the rates the window ran at; the planner prices
    # the next window at the estimate
    job.speed.set_rates(job.wl.kernel, fill_rates(job.rate_estimate.add(rates["planner"]), rate))
    work, recent = window.shard_work(job.comm, len(job.shard_map), job.shard_map.owners(),
                                     rates["wall"], rate, cpu=rates["cpu"])
    # the window's end as a scenario beside its mean (topo prices its candidates on both)
    job.scenario_work = [recent]
    # the previous window's work goes to the planner beside this one's (topo prices its
    # candidates on both: a load that moves must not be chased to where it was)
    job.recent_work = [job.shard_map.work_units()] if job.measured_work else []
    job.measured_work = True
    job.shard_map = job.shard_map.with_work_units(work)
    return rates, rate


def fill_rates(rate: np.ndarray, old: np.ndarray) -> np.ndarray:
    """``rate`` where finite, else ``old``, else the median of those (1 without any).

    >>> fill_rates(np.array([2.0, np.nan, np.nan]), np.array([5.0, 3.0, np.nan])).tolist()
    [2.0, 3.0, 2.5]
    """
    out = np.where(np.isfinite(rate), rate, old)
    if not np.isfinite(out).any():
        return np.ones(out.shape)
    return np.where(np.isfinite(out), out, np.nanmedian(out))


#: most steps of the measured window, and of the next, whose work the workload's model estimates
FORECAST_STEPS = 3


def workload_forecast(job, window: Window, step: int, horizon: int) -> list[np.ndarray] | None:
    """The next window's work per shard as the workload models it, scaled to what was measured.

    For a workload whose :meth:`~hpccloud.workloads.base.Workload.work_estimate`
    models its change from step to step (a hot spot that moves, a zoom), each
    shard's measured work changes by its estimate at a step of the next window
    less its mean estimate in the window that was measured (up to
    :data:`FORECAST_STEPS` each), in measured units (:func:`changing_units`).
    Returns ``[mean, *per_step]``: the planner's work and its scenarios (None:
    the workload has no model, or no step is left). The rates stay measured;
    only the change of work comes from the model.
    """
    if not job.wl.forecasts_work:
        return None
    past = spread_steps(sorted(int(r["step"]) for r in window.steps), FORECAST_STEPS)
    future = spread_steps(list(range(step + 1, min(step + horizon, job.cfg.steps - 1) + 1)), FORECAST_STEPS)
    if not past or not future:
        return None
    est = job.wl.work_forecast(job.shard_map.shards, past + future)
    then = est[:len(past)].mean(axis=0)
    measured = job.shard_map.work_units()
    ahead = np.maximum(0.0, measured + changing_units(then, measured) * (est[len(past):] - then))
    return [ahead.mean(axis=0), *ahead]


def changing_units(estimate: np.ndarray, measured: np.ndarray) -> float:
    """Measured units per unit of the workload's estimate, for the part of the work that changes.

    The slope ``k`` of ``measured ≈ a + k · estimate`` over the shards (least
    squares, ``a, k >= 0``): a shard's measured work also holds what the estimate
    does not see and that does not change with it (the kernel call, the halo
    bookkeeping). Scaled as a whole by the estimate's ratio, a 256² stencil tile
    entering the hot spot (7 sweeps for 1) was forecast 7x its work; topo then
    priced the current map 1.19-1.35x the step it achieved (greedy, unforecast:
    0.96-0.98) and moved for a gain that never came. Without spread in the
    estimate the two parts cannot be told apart: all of it scales (``Σ measured / Σ estimate``).

    >>> est = np.array([1.0, 1.0, 7.0, 7.0])
    >>> round(changing_units(est, 5.0 + 2.0 * est), 9)
    2.0
    """
    from scipy.optimize import nnls

    e, m = np.asarray(estimate, np.float64), np.asarray(measured, np.float64)
    ok = np.isfinite(e) & np.isfinite(m)
    e, m = e[ok], m[ok]
    if not e.size or e.sum() <= 0:
        return 0.0
    if np.ptp(e) <= 1e-9 * np.abs(e).max():
        return float(m.sum() / e.sum())
    x, _ = nnls(np.column_stack([np.ones_like(e), e]), m)
    return float(x[1])


def rebalance(job, window: Window, step: int, horizon: int) -> dict[str, Any]:
    """Collective: plan and (if the gate opens) migrate; return the plan's record.

    With ``--calibrate`` (the default) rank 0 first refits the cost model from
    the window (:mod:`hpccloud.runner.calibrate`), and the plan and its gate are
    priced on the calibrated figures.
    """
    t0 = time.perf_counter()
    rates, ran_at = measured_models(job, window)
    t_models = time.perf_counter()

    def make_plan():
        problem = problem_from(job.shard_map, job.links, job.speed, job.policy,
                               kernel=job.wl.kernel)
        cal = None
        if job.cfg.calibrate:
            job.calibrator.add_window(problem, window.steps, rate=ran_at)
            cal = job.calibrator.refit()
        recent, scenarios = tuple(job.recent_work), tuple(job.scenario_work)
        ahead = workload_forecast(job, window, step, horizon)
        topo = job.cfg.balancer == "topo"
        if ahead is not None and topo:  # the workload's own model of the change replaces the guesses
            problem = problem.with_work_units(ahead[0])
            recent, scenarios = (), tuple(ahead[1:])
        # the other planners decide on the window as measured, and their plans are priced
        # on the same forecast as topo's: predicted and achieved steps compare alike
        priced_on = () if ahead is None or topo else tuple(ahead)
        plan = plan_problem(problem, job.cfg.balancer,
                            PlanOptions(horizon_steps=horizon, calibration=cal, recent_work=recent,
                                        scenarios=scenarios, priced_on=priced_on))
        basis = ("measured window" if ahead is None else "workload forecast" if topo
                 else "measured window, priced on the workload forecast")
        return plan, basis

    knew_planning = job.cfg.calibrate and job.calibrator.knows_planning
    p, work_basis = bcast_result(job.comm, make_plan)
    t_plan = time.perf_counter()
    job.tracer.add("measure", "rebalance", t0, t_models, after_step=step)
    job.tracer.add("plan", "rebalance", t_models, t_plan, after_step=step, moves=len(p.moves))
    record = {"after_step": step, **p.to_json(),
              "rates_units_per_s": {k: [None if not np.isfinite(x) else float(x) for x in v]
                                    for k, v in rates.items()}}
    record["work_basis"] = work_basis
    est = job.rate_estimate
    record["rate_estimate"] = {"shrink": est.shrink, "noise": None if not np.isfinite(est.noise) else est.noise,
                               "windows": len(est.rows), "prior": est.log_prior is not None}
    record.pop("owners_before", None)
    record.pop("owners_after", None)
    if job.cfg.calibrate:
        # until a rebalance after the first has been measured, the model has no figure
        # for its cost outside the move (the first pays one-time costs): the prediction
        # then takes this rebalance's own measured models and planning time, and says so
        record["rebalance_wall_basis"] = "calibrated" if knew_planning else "measured planning"
        if not knew_planning:
            record["predicted_rebalance_wall_s"] = (t_plan - t0) + record["migration_s"]
    t_start = t_plan
    if p.moves:
        figures, t_start = migrate(job, p.owners_after)
        record.update(figures)
    t_end = time.perf_counter()
    if p.moves:
        # the move as the job pays it: pack, transport, unpack, the links' refit, from the
        # ranks lined up (see migrate) to the closing allgather. The model's migration_s
        # prices the same span: pack per byte + the transport's schedule + a fixed part
        move_s = comm_max(job.comm, t_end - t_start)
        record["achieved_transport_s"] = record["achieved_migration_s"]
        record["achieved_migration_s"] = move_s
        if job.cfg.calibrate and job.rank == 0:
            pack = record["pack_s"] + record["unpack_s"]
            job.calibrator.add_migration(job.audit[-record["transfers"]:],
                                         max(0.0, move_s - pack), pack, record["migration_s"])
        job.tracer.add("move", "rebalance", t_plan, t_end, after_step=step)
    record["achieved_step_s_before"] = window.median_step_s()
    record["phases_s"] = {"models": t_models - t0, "plan": t_plan - t_models,
                          "align": t_start - t_plan, "move": t_end - t_start}
    return record


def comm_max(comm, value: float) -> float:
    """The largest ``value`` over the ranks (collective)."""
    from mpi4py import MPI

    return float(comm.allreduce(float(value), op=MPI.MAX))


def migrate(job, owners_after: np.ndarray) -> tuple[dict[str, Any], float]:
    """Collective: move the shards whose owner changes; update the job's map and arrays.

    Returns the move's figures and when it started on this rank's clock, as if it had
    packed after the ranks lined up. The ranks leave the plan's broadcast at different
    times (the root at once, the others when their sleep between polls ends, later on a
    shared core): a wait every rebalance pays, moving or not, so it is the plan's, not
    the move's. Timed from each rank's own end of the broadcast, the default particles
    job's moves (2 ranks, a core each) spent 0.8-1.4 ms of their 2.3-3.8 ms in it, and
    the rounds' fit took it for a cost per call. Packing overlaps that wait, and is
    counted whole.
    """
    comm, wl = job.comm, job.wl
    moving = np.asarray(owners_after) != job.shard_map.owners()
    # only the shards that leave are packed (a pack may copy: e.g. a tile without its halo)
    t0 = time.perf_counter()
    payloads = {sid: wl.pack(job.shard_map.shards[sid], arr)
                for sid, arr in job.local.items() if moving[sid]}
    pack_s = time.perf_counter() - t0
    job.tracer.add("pack", "rebalance", t0, t0 + pack_s, shards=len(payloads))
    t_wait = time.perf_counter()
    new_map, new_payloads, records, wait_s, transport_s = execute_aligned(
        comm, job.shard_map, payloads, owners_after, job.policy, key=job.key,
        audit=job.cfg.audit, pool=job.pool)
    t0 = t_wait + wait_s
    started = t0 - pack_s
    job.tracer.add("barrier", "wait", t_wait, t0)
    job.tracer.add("transport", "rebalance", t0, t0 + transport_s)
    t0 = time.perf_counter()
    # stayed: keep the stored array (with its halo); arrived: rebuild it from the payload
    local = {sid: arr for sid, arr in job.local.items() if not moving[sid]}
    for sid, payload in new_payloads.items():
        local[sid] = wl.unpack(new_map.shards[sid], payload)
        if not np.may_share_memory(local[sid], payload):
            job.pool.give(payload)  # unpacked into its own array: the payload is free
    for sid in set(job.local) - set(local):
        wl.forget(sid)
        if wl.recycle_departed and not np.may_share_memory(job.local[sid], payloads[sid]):
            job.pool.give(job.local[sid])  # left, and not handed to the transport as is
    job.local = local
    job.shard_map = new_map
    unpack_s = time.perf_counter() - t0
    job.tracer.add("unpack", "rebalance", t0, t0 + unpack_s, shards=len(new_payloads))
    t0 = time.perf_counter()
    job.check_local()
    t1 = time.perf_counter()
    job.tracer.add("check", "rebalance", t0, t1)
    all_records = [r if isinstance(r, dict) else r.to_json() for r in records]  # same everywhere
    for r in all_records:  # each transfer on the receiver's timeline, as the receiver timed it
        if r["dst_rank"] == job.rank:
            job.tracer.add_posix(f"shard {r['shard_id']}", "transfer", r["time"], r["seconds"],
                                 shard=r["shard_id"], src_rank=r["src_rank"], nbytes=r["nbytes"],
                                 cross_region=r["src_region"] != r["dst_region"])
    for r in all_records:
        job.links.add_sample(r["src_rank"], r["dst_rank"], r["nbytes"], r["seconds"])
    job.links.refit((r["src_rank"], r["dst_rank"]) for r in all_records)
    job.audit.extend(all_records)
    t0 = time.perf_counter()
    job.tracer.add("records", "rebalance", t1, t0, transfers=len(all_records))
    # the slowest rank's figures; the wait sleeps (a spinning one took a shared core from
    # the ranks still unpacking)
    slowest = sleeping_allgather(comm, (transport_s, pack_s, unpack_s)).max(axis=0)
    job.tracer.add("gather", "rebalance", t0, time.perf_counter())
    return {"achieved_migration_s": float(slowest[0]),
            "pack_s": float(slowest[1]), "unpack_s": float(slowest[2]),
            "moved_bytes": sum(r["nbytes"] for r in all_records),
            "cross_region_bytes": sum(r["nbytes"] for r in all_records
                                      if r["src_region"] != r["dst_region"]),
            "transfers": len(all_records)}, started
