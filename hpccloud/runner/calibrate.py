"""The closed loop: the cost model refitted from what each window of the run measured.

After every window the rebalance stage (on rank 0, where the plan is made)
hands this module the window's step records and the last migration's figures;
:class:`Calibrator` turns them into samples of the pure model in
:mod:`hpccloud.balance.calibration` and refits its terms by least squares —
per-step fixed cost and per-shard dispatch, compute and halo scales, the
rebalance's fixed and per-call costs (from its rounds), packing and the
transport's achieved throughput per route class. The plan is then priced, and the gate decided, on
the calibrated figures. Nothing here is configured: every term comes from this
run's own records (until a term is measured it stays at the identity prior,
i.e. the raw model).

The step terms are fitted to each step's wall time as the job paid it
against the model's slowest rank (:func:`~hpccloud.balance.calibration.fit_step_makespan`),
not to each rank's own time: a collective inside the step (k-means' centroid
reduction) makes every rank's own time the slowest rank's, and ranks that share
a core read their own kernel at full speed half of the time. Fitted per rank,
the compute term of the default k-means job went to ~0 on a 2+1 core layout,
and the planner saw no gain in moving work off the shared core.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any, cast

import numpy as np

from hpccloud.balance import Problem, model
from hpccloud.balance.calibration import (
    ROUTES,
    Calibration,
    MigrationSample,
    StepSample,
    fit_step_makespan,
    fresh_bytes,
    relative_error,
    warmed_bytes,
)

#: steps (per rank rows) and migrations kept for the fit: the machine drifts
STEP_SAMPLES = 48
MIGRATION_SAMPLES = 16
#: transfers kept per route class for the route's throughput
TRANSFER_SAMPLES = 256
#: a move is cold when more than this share of its busiest core's bytes met memory never
#: touched before (see :meth:`Calibrator.add_migration`)
COLD_SHARE = 0.25


def host_labels(hosts) -> tuple[int, ...]:
    """Integer labels of the ranks' hosts (same label: same host)."""
    ids: dict[str, int] = {}
    return tuple(ids.setdefault(h, len(ids)) for h in hosts)


class Calibrator:
    """The run's calibration and the samples it was fitted from (kept on every rank)."""

    def __init__(self, hosts, rank_region, migration_fixed_s: float = 0.0,
                 route_s_per_byte: float = float("nan"), pack_s_per_byte: float = float("nan"),
                 fresh_s_per_byte: float = float("nan"), rank_core=None,
                 unpack_copies: float = 0.0, pool_solo=(), per_call_s: float = float("nan")):
        self.rank_host = host_labels(hosts)
        self.rank_region = tuple(rank_region)
        # which ranks share cores (labels; None: none do), and the probe's cost of memory
        # touched for the first time: a migration's first bytes pay it until one is measured
        self.rank_core = None if rank_core is None else tuple(int(x) for x in rank_core)
        # ranks that share cores priced as their core group runs them (empty: no pooling;
        # see Calibration.compute_as_run)
        self.pool_solo = tuple(float(x) for x in pool_solo) if len(pool_solo) and self.rank_core else None
        self.fresh_prior_s_per_byte = float(fresh_s_per_byte)
        # the bytes the workload's unpack writes per byte received (its own arrays)
        self.unpack_copies = float(unpack_copies)
        # the most memory one migration has left warm on each rank (see
        # :func:`~hpccloud.balance.calibration.warmed_bytes`),
        # and every migration that went beyond it: (seconds beyond its warm price, fresh bytes)
        self.warm_io_bytes = np.zeros(len(self.rank_host))
        self.fresh: deque[tuple[float, float]] = deque(maxlen=MIGRATION_SAMPLES)
        # the transport probe's one-shard move (setup): the rounds' price until a move after
        # the first is measured, and the base of every move's per-call slope
        self.migration_fixed_prior_s = float(migration_fixed_s)
        # ... and what each further shard of one rank adds (the probe's burst rounds; NaN: not
        # probed): one sample of the per-call cost beside the job's own moves
        self.per_call_prior_s = float(per_call_s)
        # ... and its shard-sized rounds (NaN: not probed): seconds per byte moved, on every
        # route until the route's own transfers are timed, and per byte packed + unpacked
        # until a migration's packing is. Without them the first migration was priced on
        # the raw links alone: 0.2-1.5 ms predicted against 4-31 ms achieved
        self.route_prior_s_per_byte = float(route_s_per_byte)
        self.pack_prior_s_per_byte = float(pack_s_per_byte)
        self.calibration = self._prior()
        self.steps: deque[StepSample] = deque(maxlen=STEP_SAMPLES)
        self.step_wall_s: deque[float] = deque(maxlen=STEP_SAMPLES)  # beside self.steps
        self.window_wall_s: deque[float] = deque(maxlen=STEP_SAMPLES)  # each step's window median
        self.migrations: deque[MigrationSample] = deque(maxlen=MIGRATION_SAMPLES)
        # a rebalance's wall time outside its move (window models, planning, agreement,
        # the closing barrier); the first rebalance's is kept apart: it pays the planners'
        # first calls (compilation, imports: 40-200 ms against 15-50 ms later), so it is
        # recorded but not fitted
        self.plan_s: deque[float] = deque(maxlen=MIGRATION_SAMPLES)
        self.first_plan_s: float | None = None
        # every transfer as its receiver timed it, per route class: (bytes, seconds)
        self.transfers: list[deque[tuple[float, float]]] = [deque(maxlen=TRANSFER_SAMPLES)
                                                            for _ in ROUTES]
        self.first_migration: MigrationSample | None = None
        # every migration's rounds: its wall time beyond its data phase, with the calls of its
        # busiest rank (most shards sent or received). The first migration's are recorded, not
        # fitted: they pay one-time costs (the transport's and the workload's first calls on
        # real shards); until a later move is measured the probe's one-shard move and burst
        # price the rounds. Over 283 runs of the balance matrix the first move's cost per
        # call read 1.57x the later moves' (median; > 2x in 40 % of the runs). Replayed over
        # 215 later migrations of 130 runs (greedy and topo, 4 layouts, 4 workloads), each
        # predicted from the moves before it: median error 0.267 fitting every move's rounds
        # (the first's included, no burst), 0.247 with the first fitted until a later move and
        # the burst as one sample, 0.249 this way (topo 0.269, 0.243, 0.234); median predicted
        # / achieved 1.11, 1.12, 1.07
        self.first_rounds: tuple[float, int] | None = None
        self.rounds: deque[tuple[float, int]] = deque(maxlen=MIGRATION_SAMPLES)

    # ------------------------------------------------------------------ samples
    def add_window(self, p: Problem, steps: list[dict[str, Any]], rate: np.ndarray | None = None) -> None:
        """The window's steps as the model sees them: ``p`` is the problem planned on
        (the window's map and links), ``rate`` the ranks' rates in the window (default:
        ``p``'s speeds; the planner's may be an estimate beside what the window measured)."""
        if not steps:
            return
        halo = model.halo_s(p, p.owners)
        rate = p.speed_units_per_s if rate is None else np.asarray(rate, np.float64)
        median = float(np.median([float(rec["step_s"]) for rec in steps]))
        for rec in steps:
            units = np.asarray(rec["work_units"], np.float64)
            compute = self.calibration.compute_as_run(
                np.where(rate > 0, units / np.maximum(rate, 1e-300), 0.0), rate)
            self.steps.append(StepSample(compute, halo, np.asarray(rec["n_shards"], np.float64),
                                         np.asarray(rec["rank_step_s"], np.float64)))
            self.step_wall_s.append(float(rec["step_s"]))
            self.window_wall_s.append(median)

    @property
    def knows_planning(self) -> bool:
        """Whether a rebalance's cost outside the move has been measured (after the first)."""
        return bool(self.plan_s)

    def add_rebalance(self, record: dict[str, Any]) -> None:
        """A finished rebalance's record (with ``rebalance_wall_s``): its time outside the move."""
        wall = record.get("rebalance_wall_s")
        if wall is None or not np.isfinite(wall):
            return
        outside = max(0.0, float(wall) - float(record.get("achieved_migration_s") or 0.0))
        if self.first_plan_s is None:
            self.first_plan_s = outside
        else:
            self.plan_s.append(outside)

    def add_migration(self, records: list[dict[str, Any]], achieved_s: float, pack_s: float,
                      predicted_s: float | None = None) -> None:
        """One migration: bytes per route class on its busiest rank, calls, and the move's
        wall time without packing and unpacking (``achieved_s``; those are ``pack_s``).

        ``predicted_s`` is the plan's price of the move on the current calibration
        (packing included): with it, a move that touched fresh memory measures what that
        cost (its time beyond the rest of the price, per fresh byte)."""
        size = len(self.rank_host)
        per = np.zeros((size, len(ROUTES)))
        sends, recvs = np.zeros(size), np.zeros(size)
        sent, got = np.zeros(size), np.zeros(size)  # bytes
        received = np.zeros(size)  # each receiver's seconds on its shards (timed back to back)
        total = 0.0
        for r in records:
            a, b, n = int(r["src_rank"]), int(r["dst_rank"]), float(r["nbytes"])
            route = self.route(a, b)
            per[a, route] += n
            per[b, route] += n
            sends[a] += 1
            recvs[b] += 1
            sent[a] += n
            got[b] += n
            total += n
            secs = r.get("seconds")
            if secs is not None and np.isfinite(secs):
                received[b] += float(secs)
        if not records:
            return
        io = sent + got
        fresh = fresh_bytes(sent, got, self.warm_io_bytes, self.rank_core, self.unpack_copies)
        # a move mostly into memory its ranks never touched (every job's first; a later one
        # bigger than any before): receive buffers, packed and unpacked copies fault in. On
        # the default job at 2 ranks the first move's 12 transfers took 4.1 ms against
        # 1.0-1.5 ms for later ones, its unpack 4.4 ms against 0.3-1.8; a second move of
        # 8.9 MB from a rank that had sent 2 MB packed at 1.4 ns/B, where warm moves pack at
        # 0.3-0.4. Such a move measures the fresh-memory term (below) and is kept out of the
        # transfers' and packing's fits: priced on it, that run's next moves were predicted
        # at 2x what they took (19.0 ms for 10.0, 19.6 for 8.5)
        cold = fresh > COLD_SHARE * fresh_bytes(sent, got, None, self.rank_core,
                                                self.unpack_copies)
        calls = int(np.maximum(sends, recvs).max())
        rounds_s = max(0.0, float(achieved_s) - float(received.max()))
        if cold and predicted_s is not None:
            # what the move's data phase and packing spent beyond their warm price: its
            # rounds are the rounds' fit's to explain (fixed + per call). Measured on the
            # whole move, a first move of 30-48 small shards (mandelbrot) put the excess of
            # its rounds into the fresh rate (3.2-4.2 ns/B) as well as into the per-call
            # cost, and the next move was priced at 2.5x what it took (18.5 ms for 7.2)
            cal = self.calibration
            warm_price = predicted_s - cal.fresh_s_per_byte * fresh
            rounds_price = cal.migration_fixed_s + cal.per_call_s * calls
            self.fresh.append((float(received.max()) + float(pack_s) - (warm_price - rounds_price),
                               fresh))
        # a sender's pool gets back what it sent and, where unpack copies, the arrays the
        # shards lived in: its later receives meet warm memory. Counted as touched only
        # (what it sent), a stencil rank's later receives were priced partly fresh: greedy's
        # later stencil2d moves, median signed error +0.14, now +0.06 (45 moves a side)
        self.warm_io_bytes = np.maximum(self.warm_io_bytes,
                                        warmed_bytes(sent, got, self.unpack_copies))
        k = int(np.argmax(io))
        by_route = cast("tuple[float, float, float]", tuple(float(x) for x in per[k]))
        sample = MigrationSample(by_route, int(sends[k] + recvs[k]), float(achieved_s),
                                 pack_s=float(pack_s), total_bytes=total)
        # the move's rounds: its wall time beyond its data phase (which ends with the slowest
        # receiver's last shard; each receiver times its shards back to back) is the
        # barriers, the agreement on the plan, the bookkeeping per shard and the closing
        # gather. They meet no fresh memory, so a later cold move's count too (the job's
        # first move's are kept apart: see __init__)
        if self.first_rounds is None:
            self.first_rounds = (rounds_s, calls)
        else:
            self.rounds.append((rounds_s, calls))
        if self.first_migration is None:
            self.first_migration = sample
        if cold:  # recorded, not fitted (the routes and packing keep their figures)
            return
        self.migrations.append(sample)
        for r in records:
            secs = r.get("seconds")
            if secs is not None and np.isfinite(secs) and secs > 0 and r["nbytes"] > 0:
                self.transfers[self.route(int(r["src_rank"]), int(r["dst_rank"]))].append(
                    (float(r["nbytes"]), float(secs)))

    def _prior(self) -> Calibration:
        """What is known before any sample: the hosts, and the transport probe's figures."""
        route = self.route_prior_s_per_byte
        pack = self.pack_prior_s_per_byte
        fresh = self.fresh_prior_s_per_byte
        per_call = self.per_call_prior_s if np.isfinite(self.per_call_prior_s) else 0.0
        return Calibration(rank_host=self.rank_host, per_call_s=per_call,
                           migration_fixed_s=max(0.0, self.migration_fixed_prior_s - per_call),
                           route_s_per_byte=(route, route, route) if np.isfinite(route) and route >= 0
                           else Calibration.route_s_per_byte,
                           pack_s_per_byte=pack if np.isfinite(pack) and pack >= 0 else 0.0,
                           fresh_s_per_byte=fresh if np.isfinite(fresh) and fresh >= 0 else 0.0,
                           rank_core=self.rank_core, unpack_copies=self.unpack_copies,
                           warm_io_bytes=tuple(float(x) for x in self.warm_io_bytes),
                           pool_solo=self.pool_solo)

    def route(self, a: int, b: int) -> int:
        """Route class of a transfer from rank ``a`` to ``b`` (index into ``ROUTES``)."""
        if self.rank_region[a] != self.rank_region[b]:
            return 2
        return 0 if self.rank_host[a] == self.rank_host[b] else 1

    # ------------------------------------------------------------------ the fit
    def route_s_per_byte(self) -> tuple[float, float, float]:
        """Seconds per byte of each route class from the transfers' own timings (NaN: none).

        Every transfer is timed by its receiver, so a migration gives as many
        samples as it moves shards: the throughput is Σ seconds / Σ bytes over
        the recent transfers of the route (a migration's wall time, one sample
        per migration, could not tell the routes and the per-call cost apart).
        """
        out = []
        for samples in self.transfers:
            nbytes = sum(b for b, _ in samples)
            out.append(sum(t for _, t in samples) / nbytes if nbytes > 0 else float("nan"))
        return cast("tuple[float, float, float]", tuple(out))

    def refit(self) -> Calibration:
        """Refit every term from the samples kept; the new calibration is also kept.

        The step terms: least squares of the steps' wall times on the model's slowest rank
        (:func:`~hpccloud.balance.calibration.fit_step_makespan`).
        The rebalance terms: route throughput from the transfers' timings; the
        migrations' *rounds* (wall time beyond the data phase: the barriers, the
        agreement, the bookkeeping per shard, the closing gather) as a fixed cost plus
        a cost per call of the busiest rank; packing per byte; the rebalance's cost
        outside the move.

        The per-call cost is the median over the migrations after the first of what
        each spent beyond the transport probe's one-shard move, per call beyond the
        first, with the probe's burst of :data:`~hpccloud.measure.probe.PROBE_BURST_SHARDS`
        shards as one more sample; the fixed cost the median of the rounds less their
        calls' cost. Until a move after the first is measured, the probe's figures stand
        (see ``__init__`` for the replayed figures of this rule).

        With every move's rounds fitted and no burst, over 987 migrations
        of the balance matrix's cells (3 layouts x 5 workloads, topo and greedy, 254
        runs), predicting each from the ones before it in its run, the median error
        was 0.240 (topo 0.289, greedy 0.212). Without a per-call term (the median
        of the rounds) it was 0.246 (topo 0.328), and a move of 20 shards was priced
        like one of two. The fit this replaced (the probe's fixed part until three
        migrations, then a per-call cost from what the wall time left over) had
        recorded 0.28 (topo 0.38) over the 228 migrations of the 60 runs made with
        it, under-predicting 73-82 % of the moves; the rounds (5-95 %: 3.4-13 ms)
        are 2-3x the probe's move.
        """
        migrations = list(self.migrations)
        prior = self._prior()
        cal = fit_step_makespan(list(self.steps), list(self.step_wall_s), prior=prior,
                                window_s=list(self.window_wall_s))
        if self.rounds or self.first_rounds is not None:
            # a route with no timed transfer keeps the probe's figure (or NaN)
            routes = cast("tuple[float, float, float]", tuple(
                r if np.isfinite(r) else q
                for r, q in zip(self.route_s_per_byte(), prior.route_s_per_byte, strict=True)))
            packed = [(m.pack_s, m.total_bytes) for m in migrations
                      if np.isfinite(m.pack_s) and np.isfinite(m.total_bytes) and m.total_bytes > 0]
            pack = (sum(t for t, _ in packed) / sum(b for _, b in packed) if packed
                    else prior.pack_s_per_byte)
            cal = dataclasses.replace(cal, route_s_per_byte=routes, pack_s_per_byte=pack)
        if self.rounds:  # until a move after the first is measured: the probe's figures
            probe = self.migration_fixed_prior_s  # one shard's move; 0: not probed
            rounds = list(self.rounds)
            slopes = [max(0.0, (r - probe) / (c - 1)) for r, c in rounds if c > 1 and probe > 0]
            if np.isfinite(self.per_call_prior_s) and self.per_call_prior_s >= 0:
                slopes.append(self.per_call_prior_s)  # the probe's burst: one sample among the moves'
            per_call = float(np.median(slopes)) if slopes else 0.0
            fixed = max(0.0, float(np.median([r - per_call * c for r, c in rounds])))
            cal = dataclasses.replace(cal, per_call_s=per_call, migration_fixed_s=fixed,
                                      samples=cal.samples + len(rounds))
        if self.fresh:  # Σ beyond / Σ fresh bytes: the moves that touched the most weigh the most
            cal = dataclasses.replace(cal, fresh_s_per_byte=max(
                0.0, sum(t for t, _ in self.fresh) / sum(b for _, b in self.fresh)))
        if self.plan_s:
            cal = dataclasses.replace(cal, plan_fixed_s=float(np.median(self.plan_s)))
        self.calibration = cal
        return cal


def model_error(plans: list[dict[str, Any]]) -> dict[str, float | None]:
    """Median relative error of the calibrated predictions over the plans after the first.

    Step time: ``makespan_after_s`` vs the achieved median step until the next
    plan; migration: ``migration_s`` vs ``achieved_migration_s`` (plans that
    moved); rebalance wall time: ``predicted_rebalance_wall_s`` vs ``rebalance_wall_s``.
    """
    later = plans[1:]

    def err(pred_key: str, ach_key: str) -> float | None:
        pairs = [(p.get(pred_key), p.get(ach_key)) for p in later]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None and b > 0]
        if not pairs:
            return None
        value = relative_error(np.array([a for a, _ in pairs]), np.array([b for _, b in pairs]))
        return None if not np.isfinite(value) else value

    return {"step": err("makespan_after_s", "achieved_step_s_after"),
            "migration": err("migration_s", "achieved_migration_s"),
            "rebalance_wall": err("predicted_rebalance_wall_s", "rebalance_wall_s"),
            "plans_compared": len(later)}
