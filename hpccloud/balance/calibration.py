"""The calibrated cost model: what a step and a rebalance really spend, fitted from the run's records.

The planning model (:mod:`hpccloud.balance.model`) prices compute ``C_r = Σ w/v_r``
and halo ``H_r`` (as it runs: max α + Σ n/β). A run spends more than that, and
the terms are measured on the machine it runs on, never configured:

**A step** (per rank ``r``, ``n_r`` shards)::

    t_r = step_fixed_s + per_shard_s · n_r + compute_scale · C_r + halo_scale · H_r

``step_fixed_s`` is the synchronisation every step pays (the step's allgather,
the barrier-to-barrier slack); ``per_shard_s`` the Python dispatch per shard
(kernel call, halo bookkeeping); ``compute_scale`` how the probed speed relates
to the speed the steps achieve (e.g. ranks that share cores, a cache level the
probe did not see); ``halo_scale`` the same for the halo's link figures. The
predicted step time is ``max_r t_r``. Where ranks share cores and the step's
waits sleep, ``C_r`` is the compute as the core group runs it
(:meth:`Calibration.compute_as_run`).

**A rebalance** (only when shards move, besides the planning every window pays)::

    migration = migration_fixed_s + pack_s_per_byte · bytes + schedule + fresh

where ``schedule`` is :func:`~hpccloud.balance.model.migration_schedule` (the
busiest rank's sends or receives) with each (src, dst) job lasting ``calls · per_call_s + bytes ·
route_s_per_byte[route]`` — the transport's *achieved* throughput per route class
(:data:`ROUTES`: same host, same region, across regions), not the raw link β.
A route never measured falls back to the link model (``α + n/β``).
``fresh`` is memory the ranks touch for the first time (:meth:`Calibration.fresh_s`):
each rank's bytes sent + received (received twice where the workload's unpack
copies them, ``unpack_copies``) beyond the most one migration has left warm on it
so far (``warm_io_bytes``); the senders' fresh bytes summed over the ranks that
share cores (``rank_core``) on their busiest core group, plus the receivers'
on theirs, × ``fresh_s_per_byte``. A job's first migrations took 3-4x their
price without it (stencil2d, 4 ranks on 2 cores: 26-37 ms against 7-9 ms); the
later ones meet the memory the first touched.
``plan_fixed_s`` (planning + agreement rounds) is paid by every rebalance,
moves or not; it is reported, and the gate does not count it (it is spent either way).

**Fitting** (:func:`fit`): non-negative least squares on relative error, over
the samples of a window (or of a whole run): every rank of every step sample is
one row; every migration sample is one row. A term no sample exercises keeps
its prior (:data:`IDENTITY` by default).

>>> import numpy as np
>>> cal = Calibration(step_fixed_s=1e-3, per_shard_s=1e-4)
>>> cal.step_s(compute_s=np.array([0.010, 0.020]), halo_s=np.zeros(2), n_shards=np.array([4, 2]))
array([0.0114, 0.0212])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import cast

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import nnls

from hpccloud.balance.problem import Problem
from hpccloud.errors import InvalidArgument

#: route classes of the transport, in the order of ``route_s_per_byte``
ROUTES = ("same_host", "same_region", "cross_region")


@dataclass(frozen=True)
class Calibration:
    """Measured terms of the step and rebalance cost (seconds; see the module notes).

    ``route_s_per_byte`` holds seconds per byte for each of :data:`ROUTES`
    (NaN: not measured, use the link model). ``rank_host`` [P] names each
    rank's host (any integer labels) so "same host" can be told from "same
    region"; without it every pair inside a region counts as ``same_region``.
    ``samples`` is how many records the fit used (0 for a prior).
    ``rank_core`` [P] labels the ranks that share cores alike (None: none
    share), ``warm_io_bytes`` [P] the most memory one migration has left warm on
    each rank (:func:`warmed_bytes`; None: nothing yet) and ``unpack_copies``
    the bytes the workload's unpack writes per byte received, for :meth:`fresh_s`.
    ``pool_solo`` [P] (with ``rank_core``; None: no pooling) prices the compute of
    ranks that share cores as their core group runs it (:meth:`compute_as_run`):
    each rank's speed with its group's cores to itself over its speed while the
    whole group computes (e.g. 3 for one of 3 ranks pinned to one core); the step
    terms are then fitted and predicted on that compute, and ``topo``'s gate
    prices a plan with each core group's CPU work pooled (its compute and its
    per-shard dispatch shared by its ranks, no rank faster than alone). For steps
    whose ranks wait for each other sleeping after their kernels (the runner's
    step sync): a rank done early leaves its core to its core-mates. 4 ranks on 2
    cores, a compute-bound kernel, 24 and 8 shards on one core's ranks against 16
    and 16 took 1.05x the step (1.50x rank by rank, 1.00x pooled); 20+20 against
    12+12 took 1.24x (1.25x either way). Not for steps with MPI's blocking
    collectives after the kernels (a rank spins on its core-mate's core: 1.48x).
    """

    step_fixed_s: float = 0.0
    per_shard_s: float = 0.0
    compute_scale: float = 1.0
    halo_scale: float = 1.0
    plan_fixed_s: float = 0.0
    migration_fixed_s: float = 0.0
    per_call_s: float = 0.0
    pack_s_per_byte: float = 0.0
    route_s_per_byte: tuple[float, float, float] = (float("nan"),) * 3
    rank_host: tuple[int, ...] | None = None
    samples: int = 0
    fresh_s_per_byte: float = 0.0
    rank_core: tuple[int, ...] | None = None
    warm_io_bytes: tuple[float, ...] | None = None
    unpack_copies: float = 0.0
    pool_solo: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for f in ("step_fixed_s", "per_shard_s", "compute_scale", "halo_scale", "plan_fixed_s",
                  "migration_fixed_s", "per_call_s", "pack_s_per_byte", "fresh_s_per_byte",
                  "unpack_copies"):
            x = getattr(self, f)
            if not (np.isfinite(x) and x >= 0):
                raise InvalidArgument(f"Calibration.{f} must be finite and >= 0, got {x!r}")
        if len(self.route_s_per_byte) != len(ROUTES) or any(
                np.isfinite(x) and x < 0 for x in self.route_s_per_byte):
            raise InvalidArgument(f"Calibration.route_s_per_byte: {len(ROUTES)} values >= 0 or NaN "
                                  f"({', '.join(ROUTES)}), got {self.route_s_per_byte!r}")
        if self.pool_solo is not None:
            solo = np.asarray(self.pool_solo, np.float64)
            if (self.rank_core is None or solo.shape != (len(self.rank_core),)
                    or not np.all(np.isfinite(solo)) or np.any(solo < 1.0)):
                raise InvalidArgument("Calibration.pool_solo needs rank_core and one factor >= 1 "
                                      f"per rank, got {self.pool_solo!r}")

    # ------------------------------------------------------------------ the step
    def step_s(self, compute_s: ArrayLike, halo_s: ArrayLike, n_shards: ArrayLike) -> np.ndarray:
        """Predicted step time of every rank, float64 [P]."""
        return (self.step_fixed_s + self.per_shard_s * np.asarray(n_shards, dtype=np.float64)
                + self.compute_scale * np.asarray(compute_s) + self.halo_scale * np.asarray(halo_s))

    def compute_as_run(self, compute_s: ArrayLike, speed: ArrayLike) -> np.ndarray:
        """Each rank's compute [s] as its core group runs it.

        Without ``pool_solo``: ``compute_s`` itself. With it, ranks of one core group
        (``rank_core``) finish their compute together when the step's waits sleep (a
        rank done early leaves its core to its core-mates): each gets the group's
        work over its summed speed, ``Σ C·v / Σ v``, never less than its own compute
        with the group's cores to itself (``C / pool_solo``). Fitted rank by rank on
        4 ranks on 2 cores (3 ranks on one: stencil2d, hot spot), the steps' wall
        time did not follow the slowest rank's compute (7.5 ms predicted for an
        11.6 ms step, 10.7 for 8.2) and the fit put it into halo (``halo_scale``
        75-125, ``compute_scale`` 0.0-0.4); the group's mean followed it.

        >>> cal = Calibration(rank_core=(0, 0, 0, 1), pool_solo=(3.0, 3.0, 3.0, 1.0))
        >>> cal.compute_as_run([6.0, 3.0, 0.0, 2.0], [1.0, 1.0, 1.0, 3.0]).tolist()
        [3.0, 3.0, 3.0, 2.0]
        """
        c = np.asarray(compute_s, np.float64)
        if self.pool_solo is None or self.core_index is None:
            return c
        core = self.core_index
        v = np.asarray(speed, np.float64)
        vsum = np.bincount(core, v)
        shared = np.bincount(core, c * v) / np.where(vsum > 0, vsum, 1.0)
        return np.maximum(shared[core], c / np.asarray(self.pool_solo, np.float64))

    @cached_property
    def core_index(self) -> np.ndarray | None:
        """``rank_core`` as group indices 0..G-1 (None: no core groups), once per calibration:
        :meth:`compute_as_run` runs in every evaluation of a plan."""
        if self.rank_core is None:
            return None
        return np.unique(np.asarray(self.rank_core), return_inverse=True)[1].reshape(-1)

    # ------------------------------------------------------------------ the rebalance
    def route_of(self, p: Problem, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Route class (index into :data:`ROUTES`) of each (src, dst) rank pair, int64."""
        same_region = p.rank_region[src] == p.rank_region[dst]
        route = np.where(same_region, 1, 2)
        if self.rank_host is not None:
            host = np.asarray(self.rank_host)
            if host.shape != (p.n_ranks,):
                raise InvalidArgument(f"Calibration.rank_host names {host.size} ranks, the problem has "
                                      f"{p.n_ranks}; calibrate on the same job")
            route = np.where(same_region & (host[src] == host[dst]), 0, route)
        return route.astype(np.int64)

    def pair_s(self, p: Problem, src: np.ndarray, dst: np.ndarray, calls: np.ndarray,
               nbytes: np.ndarray) -> np.ndarray:
        """Duration of each (src, dst) job of a migration (see the module notes)."""
        per_byte = np.asarray(self.route_s_per_byte, dtype=np.float64)[self.route_of(p, src, dst)]
        measured = np.isfinite(per_byte)
        alpha, inv_beta = p.link_terms(src, dst)
        hockney = calls * alpha + nbytes * inv_beta
        return np.where(measured, calls * self.per_call_s + nbytes * np.where(measured, per_byte, 0.0),
                        hockney)

    def migration_extra_s(self, nbytes: float) -> float:
        """What a migration pays besides its schedule: fixed cost and pack/unpack."""
        return (self.migration_fixed_s + self.pack_s_per_byte * nbytes) if nbytes > 0 else 0.0

    def fresh_s(self, p: Problem, owners_before: np.ndarray, owners_after: np.ndarray,
                moved: np.ndarray) -> float:
        """What moving shards ``moved`` pays for memory its ranks touch for the first time
        (:func:`fresh_bytes` of each rank's bytes sent and received, × ``fresh_s_per_byte``)."""
        if self.fresh_s_per_byte <= 0 or moved.size == 0:
            return 0.0
        nbytes = p.nbytes_f64[moved]
        sent = np.bincount(owners_before[moved], nbytes, p.n_ranks)
        received = np.bincount(owners_after[moved], nbytes, p.n_ranks)
        return self.fresh_s_per_byte * fresh_bytes(sent, received, self.warm_io_bytes,
                                                   self.rank_core, self.unpack_copies)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["route_s_per_byte"] = {r: (None if not np.isfinite(x) else float(x))
                                 for r, x in zip(ROUTES, self.route_s_per_byte, strict=True)}
        for k in ("rank_host", "rank_core", "warm_io_bytes", "pool_solo"):
            d[k] = None if getattr(self, k) is None else list(getattr(self, k))
        return d

    @classmethod
    def from_json(cls, d: dict) -> Calibration:
        d = dict(d)
        routes = d.pop("route_s_per_byte", None) or {}
        d["route_s_per_byte"] = tuple(float("nan") if routes.get(r) is None else float(routes[r])
                                      for r in ROUTES)
        for k, kind in (("rank_host", int), ("rank_core", int), ("warm_io_bytes", float),
                        ("pool_solo", float)):
            if d.get(k) is not None:
                d[k] = tuple(kind(x) for x in d[k])
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InvalidArgument(f"calibration: unknown key(s) {sorted(unknown)}")
        return cls(**d)


IDENTITY = Calibration()


def touched_bytes(sent: ArrayLike, received: ArrayLike, unpack_copies: float = 0.0) -> np.ndarray:
    """Bytes of memory each rank writes in a move: what it sends (a pack's copy, or the
    transport's send) plus what it receives, again where unpack copies it into arrays of
    its own (``unpack_copies``: the workload's :attr:`~hpccloud.workloads.base.Workload.unpack_copies`).

    >>> touched_bytes([4.0, 0.0], [0.0, 4.0], unpack_copies=1.0)
    array([4., 8.])
    """
    return (np.asarray(sent, np.float64)
            + (1.0 + float(unpack_copies)) * np.asarray(received, np.float64))


def warmed_bytes(sent: ArrayLike, received: ArrayLike, unpack_copies: float = 0.0) -> np.ndarray:
    """Memory a move leaves warm on each rank for its later moves (its buffer pool): what
    it received and what it sent, each with the copy its unpack makes — a sender gives
    back the payloads it sent and, where unpack copies, the arrays the shards lived in.

    >>> warmed_bytes([4.0, 0.0], [0.0, 4.0], unpack_copies=1.0)
    array([8., 8.])
    """
    return (1.0 + float(unpack_copies)) * (np.asarray(sent, np.float64)
                                           + np.asarray(received, np.float64))


def fresh_bytes(sent: ArrayLike, received: ArrayLike, warm_io_bytes: ArrayLike | None = None,
                rank_core: ArrayLike | None = None, unpack_copies: float = 0.0) -> float:
    """Bytes of first-touched memory on a migration's path: its senders' busiest core
    group, then its receivers'.

    Each rank's :func:`touched_bytes` beyond ``warm_io_bytes`` (the most one
    migration has left warm on it, :func:`warmed_bytes`; None: none) is fresh; it is shared
    between the rank's sending and receiving in proportion. Each side's fresh
    bytes are summed over the ranks of each core group (``rank_core`` labels;
    None: a rank per core: ranks that share a core fault one after another),
    and the two sides' busiest groups add up: the senders pack and send before
    the receivers' buffers fill and unpack.

    >>> fresh_bytes([4.0, 0.0, 0.0], [0.0, 2.0, 2.0], rank_core=[0, 1, 1])
    8.0
    >>> fresh_bytes([4.0, 0.0, 0.0], [0.0, 2.0, 2.0], [2.0, 0.0, 0.0], rank_core=[0, 1, 1],
    ...             unpack_copies=1.0)
    10.0
    """
    sent = np.asarray(sent, np.float64)
    touched = touched_bytes(sent, received, unpack_copies)
    received = touched - sent  # what the receiving touches
    warm = 0.0 if warm_io_bytes is None else np.asarray(warm_io_bytes, np.float64)
    share = np.divide(np.maximum(0.0, touched - warm), touched, out=np.zeros_like(touched),
                      where=touched > 0)
    group = (np.arange(sent.size) if rank_core is None
             else np.unique(np.asarray(rank_core), return_inverse=True)[1])
    return float(np.bincount(group, share * sent).max(initial=0.0)
                 + np.bincount(group, share * received).max(initial=0.0))


@dataclass(frozen=True)
class StepSample:
    """One step (or a window's median step) as the model sees it and as it ran, per rank [P].

    compute_s : ``Σ w/v`` of each rank's shards (the model's compute, on the rates the planner used).
    halo_s : the model's halo time of each rank (``model.halo_s``).
    n_shards : shards each rank held.
    achieved_s : the step time each rank measured (its share of the step, barrier to barrier).
    """

    compute_s: np.ndarray
    halo_s: np.ndarray
    n_shards: np.ndarray
    achieved_s: np.ndarray


@dataclass(frozen=True)
class MigrationSample:
    """One migration as it ran, seen from the rank on its critical path.

    bytes_by_route : bytes that rank sent or received, per route class (:data:`ROUTES`).
    calls : transport calls (shards) on that rank.
    achieved_s : the transport's wall time (barrier to barrier).
    pack_s : time spent packing and unpacking (NaN if not measured).
    plan_s : the rebalance's planning + agreement wall time (NaN if not measured).
    """

    bytes_by_route: tuple[float, float, float]
    calls: int
    achieved_s: float
    pack_s: float = float("nan")
    plan_s: float = float("nan")
    total_bytes: float = float("nan")

    @classmethod
    def from_moves(cls, p: Problem, cal: Calibration, src: np.ndarray, dst: np.ndarray,
                   nbytes: np.ndarray, achieved_s: float, **kw) -> MigrationSample:
        """The sample of a migration of shards ``src → dst`` (arrays over moved shards).

        The critical rank is the one with the most bytes sent or received.
        """
        src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
        nbytes = np.asarray(nbytes, np.float64)
        route = cal.route_of(p, src, dst)
        P, R = p.n_ranks, len(ROUTES)
        per = np.zeros((P, R))
        np.add.at(per, (src, route), nbytes)
        np.add.at(per, (dst, route), nbytes)
        calls = np.bincount(src, minlength=P) + np.bincount(dst, minlength=P)
        r = int(np.argmax(per.sum(axis=1))) if src.size else 0
        return cls(cast("tuple[float, float, float]", tuple(float(x) for x in per[r])), int(calls[r]), float(achieved_s),
                   total_bytes=float(nbytes.sum()), **kw)


#: weight of the pull towards the prior, per unit of column scale (only decides directions the data leave free)
PRIOR_WEIGHT = 1e-6
#: ... in the step fit on the steps' wall times. A window repeats one map (~10 steps), so
#: 48 rows carry ~5 designs; at 1e-6 the split between the terms followed noise in those few
#: and zeroed compute_scale now and then (particles 3+1: 3 of 5 refits; 4 ranks on 2 cores:
#: 0.02-0.17). At 1e-2 (the prior weighs ~half a row per term) compute_scale stayed 0.5-1.1 on
#: the same records and the next window's step was predicted as well (median error within
#: ±0.03 of 1e-6's on six recorded runs)
STEP_PRIOR_WEIGHT = 1e-2
#: ... for ``compute_scale`` where core-mates' compute is pooled (``Calibration.pool_solo``):
#: the pooled compute is the group's measured kernel time itself, so its scale is 1 unless
#: the records say otherwise clearly, and they seldom can: with one map a window, a static
#: run's rows repeat one design and the fit traded compute for the fixed and per-shard
#: terms (stencil2d, 3 ranks on one core and 1 on the other: compute_scale 0.00 with a
#: 3.2 ms fixed term; at this weight 0.99 and 0.8 ms, and the window's steps fitted as well
#: or better: median error 0.095 against 0.105)
POOLED_COMPUTE_PRIOR_WEIGHT = 1.0


def _nnls_relative(a: np.ndarray, y: np.ndarray, prior: np.ndarray,
                   weight: float | np.ndarray = PRIOR_WEIGHT, per: np.ndarray | None = None,
                   l1_rounds: int = 0) -> np.ndarray:
    """``argmin_{x >= 0} Σ ((a x − y) / per)² + ε Σ ((x − prior) · scale)²`` (rows with y <= 0 dropped).

    ``weight`` is a scalar or one per column. ``per`` is each row's yardstick (default: its own ``y``). The weak pull
    towards ``prior`` only matters where the records cannot tell terms apart
    (e.g. every shard does the same work on equal ranks, so shard count and
    compute are proportional): the fit then keeps the prior's split.
    ``l1_rounds`` > 0 reweights the rows that many times (iteratively reweighted
    least squares, weights ``1/max(|residual|, L1_FLOOR)``) towards
    ``Σ |a x − y| / per`` for the residuals above :data:`L1_FLOOR` (squares
    below it, as Huber's loss): a median, not a mean, of rows that share a
    design and scatter widely.
    """
    keep = y > 0
    per = y if per is None else np.asarray(per, np.float64)
    a, y, per = a[keep], y[keep], per[keep]
    if y.size == 0:
        return np.full(a.shape[1], np.nan)
    scale = np.maximum(np.abs(a / per[:, None]).max(axis=0), 1e-300)  # columns to O(1)
    k = a.shape[1]
    reg = np.diag(np.sqrt(np.broadcast_to(np.asarray(weight, np.float64), (k,)) * y.size))
    rhs_reg = reg @ (np.nan_to_num(prior) * scale)

    def solve(w: np.ndarray) -> np.ndarray:
        return nnls(np.vstack([a / per[:, None] / scale * w[:, None], reg]),
                    np.concatenate([y / per * w, rhs_reg]))[0]

    x = solve(np.ones_like(y))
    for _ in range(max(0, int(l1_rounds))):
        # |r|^-1/2 on the rows: their squares weigh |r|^-1, so the sum tends to Σ |r|
        x = solve(1.0 / np.sqrt(np.maximum(np.abs(a @ (x / scale) - y) / per, L1_FLOOR)))
    return x / scale


#: relative residual below which the reweighting keeps least squares (the steps' own
#: jitter, where squares estimate the terms better: 30 synthetic runs with 3 % noise,
#: median error of the per-shard term 0.09 at 0.05, 0.14 in plain least squares); above
#: it, absolute values (alternating steps on shared cores)
L1_FLOOR = 0.05
#: reweighting rounds of the step fit
STEP_L1_ROUNDS = 5


#: the step terms, in the column order of :func:`_step_rows`
STEP_TERMS = ("step_fixed_s", "per_shard_s", "compute_scale", "halo_scale")


def _step_rows(s: StepSample) -> np.ndarray:
    """``[P, 4]`` float64: each rank's multipliers of :data:`STEP_TERMS` (1, shards, compute, halo)."""
    return np.column_stack([np.ones(np.size(s.compute_s)), s.n_shards, s.compute_s, s.halo_s]) \
        .astype(np.float64)


def fit(steps: Sequence[StepSample] = (), migrations: Sequence[MigrationSample] = (),
        prior: Calibration = IDENTITY) -> Calibration:
    """Least-squares refit of the calibration's terms from a run's records.

    A term no sample exercises (a column of zeros, e.g. no halo, or no bytes on a
    route) keeps ``prior``'s value.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> truth = Calibration(step_fixed_s=2e-3, per_shard_s=3e-4, compute_scale=1.3, halo_scale=0.5)
    >>> samples = []
    >>> for _ in range(30):
    ...     c, h, n = rng.uniform(0.01, 0.05, 4), rng.uniform(0, 0.01, 4), rng.integers(1, 20, 4)
    ...     samples.append(StepSample(c, h, n, truth.step_s(c, h, n)))
    >>> got = fit(samples)
    >>> [round(x, 4) for x in (got.step_fixed_s, got.per_shard_s, got.compute_scale, got.halo_scale)]
    [0.002, 0.0003, 1.3, 0.5]
    """
    kw: dict = {}
    n_samples = 0
    if steps:
        a = np.concatenate([_step_rows(s) for s in steps])
        y = np.concatenate([np.asarray(s.achieved_s, np.float64) for s in steps])
        ok = np.all(np.isfinite(a), axis=1) & np.isfinite(y)
        a, y = a[ok], y[ok]
        used = np.abs(a).sum(axis=0) > 0
        if y.size and used.any():
            prior_x = np.array([getattr(prior, n) for n in STEP_TERMS])[used]
            x = _nnls_relative(a[:, used], y, prior_x)
            for name, value in zip([n for n, u in zip(STEP_TERMS, used, strict=True) if u], x,
                                   strict=True):
                if np.isfinite(value):
                    kw[name] = float(value)
            n_samples += int(y.size)
    if migrations:
        rows = np.array([[1.0, m.calls, *m.bytes_by_route] for m in migrations], dtype=np.float64)
        y = np.array([m.achieved_s for m in migrations], dtype=np.float64)
        used = rows.sum(axis=0) > 0
        used[0] = len(migrations) > 1  # a constant from one sample would absorb everything
        prior_x = np.array([prior.migration_fixed_s, prior.per_call_s, *prior.route_s_per_byte])[used]
        x = _nnls_relative(rows[:, used], y, prior_x)
        full = np.full(rows.shape[1], np.nan)
        full[used] = x
        if np.isfinite(full[0]):
            kw["migration_fixed_s"] = float(full[0])
        if np.isfinite(full[1]):
            kw["per_call_s"] = float(full[1])
        routes = list(prior.route_s_per_byte)
        for i in range(len(ROUTES)):
            if np.isfinite(full[2 + i]):
                routes[i] = float(full[2 + i])
        kw["route_s_per_byte"] = tuple(routes)
        pack = [(m.pack_s, m.total_bytes) for m in migrations
                if np.isfinite(m.pack_s) and np.isfinite(m.total_bytes) and m.total_bytes > 0]
        if pack:
            kw["pack_s_per_byte"] = float(sum(t for t, _ in pack) / sum(b for _, b in pack))
        plan = [m.plan_s for m in migrations if np.isfinite(m.plan_s)]
        if plan:
            kw["plan_fixed_s"] = float(np.median(plan))
        n_samples += len(migrations)
    return dataclasses.replace(prior, samples=prior.samples + n_samples, **kw)


def fit_step_makespan(steps: Sequence[StepSample], wall_s: ArrayLike, prior: Calibration = IDENTITY,
                      iterations: int = 12, prior_weight: float = STEP_PRIOR_WEIGHT,
                      window_s: ArrayLike | None = None) -> Calibration:
    """The step terms fitted to what the job pays: ``wall_k ≈ max_r t_r(k)`` (see the module notes).

    One row per step: its wall time as the job paid it (the slowest rank, the
    step's collectives and sync) against the model's slowest rank. The per-rank
    times (:func:`fit`) are only fair regressands when a rank's own time is its
    own: a workload with a collective inside its step (k-means' centroid
    reduction) makes every rank's time the slowest rank's, and ranks sharing a
    core read their own kernel at full speed half of the time. Fitted on those,
    the compute term went to ~0 (per-rank times did not follow compute) and the
    planner saw no gain in moving work off a shared core.

    The error is ``Σ |predicted − wall| / yardstick`` beyond 5 % (squares below:
    :func:`_nnls_relative`), a median fit: the model predicts a window's median
    step and is judged on it. The yardstick is each step's window's median wall
    (``window_s``; default: the step's own wall). Divided by its own wall, a
    step that ran short weighs more than one that ran long, and on ranks sharing
    cores steps alternate (k-means, 3 ranks on one core: 3.3-12.5 ms): the
    fit sat near the shortest. Replayed on recorded runs, predicting each next
    window's median step where the map did not change: static k-means,
    particles, spmv and mandelbrot on 3 core layouts (26 plans), median error
    0.118 (signed −0.111) → 0.063 (−0.025); greedy and topo runs (118 plans)
    0.063 (−0.031) → 0.058 (+0.005), 90th percentile 0.27 → 0.18.

    ``max`` makes the fit piecewise linear: with the critical rank of each step
    fixed it is :func:`_nnls_relative` on that rank's terms; the critical ranks
    are re-picked on the new terms until they stop changing (at most
    ``iterations`` rounds), and the terms with the smallest relative error of
    the true ``max`` are kept. Directions the records leave free (one map all
    run long: every step has the same terms) keep ``prior``'s split; the pull
    towards it (``prior_weight``, see :data:`STEP_PRIOR_WEIGHT`) is stronger than
    :func:`fit`'s because a window's steps repeat one map.

    >>> import numpy as np
    >>> truth = Calibration(step_fixed_s=1e-3, per_shard_s=2e-4, compute_scale=1.2)
    >>> rng = np.random.default_rng(0)
    >>> steps, walls = [], []
    >>> for _ in range(30):
    ...     c, n = rng.uniform(0.002, 0.02, 3), rng.integers(1, 12, 3)
    ...     wall = float(truth.step_s(c, np.zeros(3), n).max())
    ...     steps.append(StepSample(c, np.zeros(3), n, np.full(3, wall)))  # every rank reads the wall
    ...     walls.append(wall)
    >>> got = fit_step_makespan(steps, walls)  # truth 1 ms, 0.2 ms, 1.2
    >>> round(got.step_fixed_s * 1e3, 1), round(got.per_shard_s * 1e3, 2), round(got.compute_scale, 2)
    (1.0, 0.2, 1.2)
    """
    y = np.asarray(wall_s, np.float64)
    if len(steps) != y.size:
        raise InvalidArgument(f"fit_step_makespan: {len(steps)} step samples but {y.size} wall times")
    per = y if window_s is None else np.asarray(window_s, np.float64)
    if per.shape != y.shape:
        raise InvalidArgument(f"fit_step_makespan: {y.size} wall times but {per.size} window medians")
    feats = [_step_rows(s) for s in steps]
    ok = np.array([bool(np.isfinite(f).all()) and f.shape[0] > 0 for f in feats], bool) \
        & np.isfinite(y) & (y > 0) & np.isfinite(per) & (per > 0)
    feats = [f for f, k in zip(feats, ok, strict=True) if k]
    y, per = y[ok], per[ok]
    if not feats:
        return prior
    used = np.abs(np.concatenate(feats)).sum(axis=0) > 0
    prior_x = np.array([getattr(prior, n) for n in STEP_TERMS], np.float64)
    weights = np.full(len(STEP_TERMS), float(prior_weight))
    if prior.pool_solo is not None:  # pooled compute: its scale held near the prior's
        weights[STEP_TERMS.index("compute_scale")] = max(float(prior_weight), POOLED_COMPUTE_PRIOR_WEIGHT)
    x = prior_x.copy()
    best_x, best_err, picks = x, np.inf, None
    for _ in range(iterations):
        new_picks = np.array([int(np.argmax(f @ x)) for f in feats])
        if picks is not None and np.array_equal(new_picks, picks):
            break
        picks = new_picks
        a = np.array([f[r] for f, r in zip(feats, picks, strict=True)])
        x = prior_x.copy()
        x[used] = _nnls_relative(a[:, used], y, prior_x[used], weights[used], per=per,
                                 l1_rounds=STEP_L1_ROUNDS)
        if not np.all(np.isfinite(x)):
            break
        pred = np.array([float((f @ x).max()) for f in feats])
        err = float(np.sum(np.abs(pred - y) / per))
        if err < best_err:
            best_x, best_err = x, err
    fixed, per_shard, scale, halo = (float(v) for v in best_x)
    return dataclasses.replace(prior, samples=prior.samples + int(y.size), step_fixed_s=fixed,
                               per_shard_s=per_shard, compute_scale=scale, halo_scale=halo)


def relative_error(predicted: np.ndarray, achieved: np.ndarray) -> float:
    """Median of ``|predicted − achieved| / achieved`` (NaN when nothing to compare)."""
    p, a = np.asarray(predicted, np.float64), np.asarray(achieved, np.float64)
    ok = np.isfinite(p) & np.isfinite(a) & (a > 0)
    return float(np.median(np.abs(p[ok] - a[ok]) / a[ok])) if ok.any() else float("nan")
