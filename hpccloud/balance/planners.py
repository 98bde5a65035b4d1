"""Planners: ``static``, ``even``, ``greedy`` (baselines) and ``topo`` (hpccloud's own).

Every planner takes a :class:`~hpccloud.balance.problem.Problem` and returns new
owners; :func:`plan_problem` wraps the answer into a :class:`MigrationPlan` with
the predicted makespans, the migration-schedule time, the lower bound and the
resource cost, and re-checks residency (a planner bug can never leak a shard
into a forbidden region: the plan raises :class:`ResidencyError` instead).

``topo`` in brief (details in :func:`_topo`):

1. **recognise a balanced map** — if the current makespan is within
   ``tolerance`` of the lower bound T*, stop (no moves, O(S) work);
2. **groups first** — work targets per (residency rule × group) from the
   lower-bound relaxation, chosen by an LP to move the least work; surplus is
   sent along the fastest group-to-group links first, taking the shards nearest
   (in shard order, i.e. in space) to the receiving group so halo neighbours stay
   together and few edges cross slow links;
3. **then ranks inside each group** — per-rank targets in proportion to measured
   speed, lowered by each rank's halo time (so ranks on a slow boundary get less
   compute); an over-target rank sheds its outermost shards, keeps the core of
   its block, and the shed/incoming shards fill under-target ranks of the same
   group in spatial order; only surplus moves;
4. two candidates (with and without moves across groups) are priced on the
   model, and up to 16 shards per rank a third: inside each group, whole shards
   at the group's count bound (ranks keep their own shards while they fit, the
   rest placed largest first where they finish earliest: ``_count_split``); the
   cheapest ``makespan × horizon + migration`` wins; with moves across
   groups, a fourth takes each flow from every sending rank's outermost shards
   (:func:`_layer_key`) instead of the group's edge; when staying inside the
   groups was priced too and came within :data:`LEVEL_GAP` of meeting T*'s
   total, two more lie between the two (:data:`LEVEL_FRACTIONS`: the groups
   filled to a level above T*, fewer bytes across the slow links for a longer
   step); each candidate is also
   priced with its slow (cross-group) receptions spread over the receiving
   group (:mod:`hpccloud.balance.spread`), kept if that lowers its total;
5. **the gate** — keep it only if ``(T_now − T_new) × horizon > migration``;
   otherwise the plan has no moves and ``gate_passed`` is False.

Residency is a hard constraint by construction (a group only holds ranks that
accept the same classes, and shards only cross to groups their rule allows)
and is checked again on every plan.
"""

from __future__ import annotations

import contextvars
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

from hpccloud.balance import local, model
from hpccloud.balance.bound import (
    count_bound_s,
    fractional_bound_s,
    group_targets,
    lower_bound_s,
    residency_rules,
)
from hpccloud.balance.calibration import Calibration
from hpccloud.balance.problem import Problem
from hpccloud.balance.spread import spread_receptions
from hpccloud.errors import InvalidArgument


@dataclass
class PlanOptions:
    """Knobs of the planners.

    horizon_steps : steps the plan's saving lasts (the gate's H, and the
        horizon of ``resource_cost`` and ``horizon_total_s``): in a run, the
        steps left, or to the next rebalance where the load is forecast to move
        (:func:`hpccloud.runner.loop.plan_horizon`).
    tolerance : a map whose makespan is within ``(1 + tolerance) × T*`` counts
        as balanced and ``topo`` stops at once.
    min_gain : ``topo`` migrates only if the makespan drops by at least this
        fraction of itself, and prefers a plan with fewer moves unless a bigger
        one gains this much more. Hysteresis: measured work units are noisy
        (a few % per shard), and a plan must not chase that noise.
    local_moves : cap on the moves of ``topo``'s local search (``local.improve``).
    halo_aware : ``topo`` lowers a rank's compute target by its halo time.
    cross_region : ``topo`` may move shards between groups (regions).
    portfolio : ``topo`` also prices the optimal contiguous split and the
        baselines' maps (``_portfolio``) and takes the cheapest over the horizon.
    calibration : the measured step and rebalance terms
        (:class:`~hpccloud.balance.calibration.Calibration`); when given, every
        predicted step time, migration time and the gate use them.
    recent_work : work units per shard measured in earlier windows (most recent
        first; the problem's own ``work_units`` are the latest). When given,
        ``topo`` plans on a motion-compensated forecast of the next window's
        work (:func:`~hpccloud.balance.forecast.forecast_work`): a load that
        moves is planned for where it is going, not where it was.
    scenarios : other work units per shard the next window may bring, as likely
        as the problem's own (e.g. the window's last steps alone, when the load
        grows or shifts within a window). ``topo`` prices every candidate on each
        and on the problem's own work and decides on the mean (its predicted
        step is that mean): a map that holds up whichever comes wins over one
        tuned to a single forecast. Not used when the motion forecast applies.
    priced_on : for the planners other than ``topo``: work units per shard
        ``(mean, *per_step)`` the plan (and the map before it) is *priced* on,
        e.g. the workload's own forecast of the next window. The planner still
        decides on the problem's measured work (a baseline stays a baseline); only
        its predicted step times take the change the workload knows is coming.
    """

    horizon_steps: int = 100
    tolerance: float = 0.01
    min_gain: float = 0.02
    local_moves: int = 2048
    halo_aware: bool = True
    cross_region: bool = True
    calibration: Calibration | None = None
    portfolio: bool = True
    recent_work: tuple[np.ndarray, ...] = ()
    scenarios: tuple[np.ndarray, ...] = ()
    priced_on: tuple[np.ndarray, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.horizon_steps, int | np.integer) or self.horizon_steps < 1:
            raise InvalidArgument(f"PlanOptions.horizon_steps must be an integer >= 1, got {self.horizon_steps!r}")
        if not self.tolerance >= 0:
            raise InvalidArgument(f"PlanOptions.tolerance must be >= 0, got {self.tolerance!r}")
        if not 0 <= self.min_gain < 1:
            raise InvalidArgument(f"PlanOptions.min_gain must be in [0, 1), got {self.min_gain!r}")
        if self.local_moves < 0:
            raise InvalidArgument(f"PlanOptions.local_moves must be >= 0, got {self.local_moves!r}")
        for name in ("scenarios", "priced_on"):
            for k, w in enumerate(getattr(self, name)):
                w = np.asarray(w)
                if w.ndim != 1 or not np.all(np.isfinite(w)) or np.any(w < 0):
                    raise InvalidArgument(f"PlanOptions.{name}[{k}] must be a 1-D array of "
                                          "finite work units >= 0, one per shard")


class Moves(Sequence):
    """The ``(shard, from_rank, to_rank)`` triples of a plan, as a read-only sequence over arrays.

    A plan at 10^5 shards may move 10^4; building that many tuples up front costs
    more than the rest of a balanced-map check, so they are made on demand.

    >>> import numpy as np
    >>> m = Moves(np.array([3, 5]), np.array([0, 0]), np.array([1, 2]))
    >>> len(m), m[1], list(m)
    (2, (5, 0, 2), [(3, 0, 1), (5, 0, 2)])
    """

    __slots__ = ("shard", "src_rank", "dst_rank")

    def __init__(self, shard: np.ndarray, src_rank: np.ndarray, dst_rank: np.ndarray) -> None:
        self.shard, self.src_rank, self.dst_rank = shard, src_rank, dst_rank

    def __len__(self) -> int:
        return int(self.shard.size)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return list(Moves(self.shard[i], self.src_rank[i], self.dst_rank[i]))
        return int(self.shard[i]), int(self.src_rank[i]), int(self.dst_rank[i])

    def __iter__(self):
        return zip(self.shard.tolist(), self.src_rank.tolist(), self.dst_rank.tolist(), strict=True)

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Moves(n={len(self)})"


@dataclass
class MigrationPlan:
    """A plan and its predictions (all times in seconds, per step unless said otherwise)."""

    planner: str
    owners_before: np.ndarray
    owners_after: np.ndarray
    moves: Moves
    makespan_before_s: float
    makespan_after_s: float
    lower_bound_s: float
    migration_s: float
    migration_bytes: int
    imbalance_before: float
    imbalance_after: float
    resource_cost: float
    gate_passed: bool
    plan_seconds: float
    horizon_steps: int = 100
    provenance: str = "measured"
    loads_before_s: np.ndarray | None = field(default=None, repr=False)
    loads_after_s: np.ndarray | None = field(default=None, repr=False)
    calibration: Calibration | None = None
    forecast_shift: int = 0  # topo planned on the work moved by this many shards (0: as measured)
    scenarios: int = 0  # other work scenarios topo priced beside the problem's own (its figures are means)

    @property
    def horizon_total_s(self) -> float:
        """``makespan_after × horizon + migration``: predicted wall time over the horizon."""
        return self.makespan_after_s * self.horizon_steps + self.migration_s

    @property
    def ratio_to_bound(self) -> float:
        return self.makespan_after_s / self.lower_bound_s if self.lower_bound_s > 0 else 1.0

    def to_json(self, include_owners: bool = True) -> dict:
        d = {
            "planner": self.planner,
            "provenance": self.provenance,
            "makespan_before_s": self.makespan_before_s,
            "makespan_after_s": self.makespan_after_s,
            "lower_bound_s": self.lower_bound_s,
            "ratio_to_bound": self.ratio_to_bound,
            "migration_s": self.migration_s,
            "migration_bytes": self.migration_bytes,
            "n_moves": len(self.moves),
            "imbalance_before": self.imbalance_before,
            "imbalance_after": self.imbalance_after,
            "resource_cost": self.resource_cost,
            "gate_passed": self.gate_passed,
            "horizon_steps": self.horizon_steps,
            "horizon_total_s": self.horizon_total_s,
            "plan_seconds": self.plan_seconds,
            "forecast_shift": self.forecast_shift,
            "scenarios": self.scenarios,
            "moves": [list(m) for m in self.moves],
        }
        if self.calibration is not None:
            d["calibration"] = self.calibration.to_json()
            # what the rebalance costs in wall time: planning + agreement, then the migration
            d["predicted_rebalance_wall_s"] = self.calibration.plan_fixed_s + self.migration_s
        if include_owners:
            d["owners_before"] = self.owners_before.tolist()
            d["owners_after"] = self.owners_after.tolist()
        return d


@dataclass
class _Eval:
    owners: np.ndarray
    loads: np.ndarray
    halo: np.ndarray
    makespan_s: float
    migration_s: float = 0.0
    migration_bytes: int = 0
    moved: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    cut: tuple | None = None

    def total_s(self, horizon: int) -> float:
        return self.makespan_s * horizon + self.migration_s


#: the evaluations of the :func:`plan_problem` call under way, by problem, calibration, map
#: and map before: a plan prices the same map more than once (the current map as the
#: polish's start, candidates that coincide, each again on every scenario); on 15 plans
#: of 4-rank runs 0-71 % of the evaluations (median 40 %) repeated an earlier one
_EVALS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("hpccloud_plan_evals", default=None)
#: ... up to this many shards: the key is the maps' bytes, hashed (at 10^6 shards each
#: key cost more than the repeats saved: 100,000 ranks, topo 528 ms a plan against 483)
EVAL_MEMO_MAX_SHARDS = 1 << 16


def _evaluate(p: Problem, owners: np.ndarray, owners_before: np.ndarray | None = None,
              cal: Calibration | None = None) -> _Eval:
    """``owners`` priced on ``p`` (with ``owners_before``: and the migration to it); once per
    plan (see :data:`_EVALS`). Callers must not modify the returned evaluation."""
    memo = _EVALS.get()
    if memo is None or p.n_shards > EVAL_MEMO_MAX_SHARDS:
        return _evaluate_now(p, owners, owners_before, cal)
    key = (id(p), id(cal), np.asarray(owners).tobytes(),
           None if owners_before is None else np.asarray(owners_before).tobytes())
    hit = memo.get(key)
    if hit is None:  # the entry holds p and cal: their ids stay theirs for the plan
        hit = memo[key] = (p, cal, _evaluate_now(p, owners, owners_before, cal))
    return hit[2]


def _evaluate_now(p: Problem, owners: np.ndarray, owners_before: np.ndarray | None,
                  cal: Calibration | None) -> _Eval:
    cut = model.cut_edges(p, owners)
    halo = model.halo_s(p, owners, cut)
    if cal is None:
        loads = model.compute_s(p, owners) + halo
    else:
        loads = cal.step_s(cal.compute_as_run(model.compute_s(p, owners), p.speed_units_per_s), halo,
                           np.bincount(owners, minlength=p.n_ranks))
        halo = cal.halo_scale * halo
    ev = _Eval(owners, loads, halo, float(loads.max()) if loads.size else 0.0, cut=cut)
    if owners_before is not None:
        if cal is None:
            ev.migration_s, ev.migration_bytes, ev.moved = model.migration_schedule(p, owners_before, owners)
        else:
            sched_s, ev.migration_bytes, ev.moved = model.migration_schedule(
                p, owners_before, owners, pair_s=lambda *a: cal.pair_s(p, *a))
            ev.migration_s = (sched_s + cal.migration_extra_s(ev.migration_bytes)
                              + cal.fresh_s(p, owners_before, owners, ev.moved))
    return ev


def _scenario_problems(p: Problem, opts: PlanOptions) -> list[Problem]:
    """``opts.scenarios`` as problems (those equal to ``p``'s own work add nothing)."""
    out = []
    for k, w in enumerate(opts.scenarios):
        w = np.asarray(w, np.float64)
        if w.shape != p.work_units.shape:
            raise InvalidArgument(f"PlanOptions.scenarios[{k}] has {w.size} work units for "
                                  f"{p.n_shards} shards")
        if not np.array_equal(w, p.work_units):
            out.append(p.with_work_units(w))
    return out


def _expected(ev: _Eval, scenarios: Sequence[Problem], cal: Calibration | None) -> _Eval:
    """``ev`` priced on its own problem and every scenario alike: mean loads, mean makespan."""
    if not scenarios:
        return ev
    loads = [ev.loads] + [_evaluate(q, ev.owners, cal=cal).loads for q in scenarios]
    return dataclasses.replace(ev, loads=np.mean(loads, axis=0),
                               makespan_s=float(np.mean([x.max() for x in loads])))


def _bound_s(p: Problem, cal: Calibration | None) -> float:
    """T*: no map of ``p`` steps faster (with ``cal``: on the calibrated terms)."""
    if cal is not None and cal.pool_solo is not None:
        # core-mates share their compute: a rank runs up to its speed alone (solo x its
        # share), whole shards per rank no longer bound a core's time; what holds is the
        # fractional bound at those speeds and the total work over the total speed
        solo = np.asarray(cal.pool_solo, np.float64)

        def pooled_bound(q: Problem) -> float:
            # q's own rules (cached: groups and rules do not depend on speed), its groups'
            # speeds summed at the ranks' speeds alone
            _, rule_groups, rule_work, _, group_of_rank = residency_rules(q)
            alone = np.bincount(group_of_rank, weights=q.speed_units_per_s * solo,
                                minlength=rule_groups.shape[1])
            return max(fractional_bound_s(rule_groups, rule_work, alone),
                       float(q.work_units.sum() / q.speed_units_per_s.sum()))

        bound = p.memo("pooled_bound_s", pooled_bound)
    else:
        bound = p.memo("lower_bound_s", lower_bound_s)
    if cal is not None:  # every calibrated term is >= 0: the scaled compute bound still holds
        bound = cal.step_fixed_s + cal.compute_scale * bound
        if cal.per_shard_s > 0 and cal.pool_solo is None:
            # ... and so does the count bound with each shard's dispatch (not where core-mates
            # share their compute: whole shards per rank no longer bound a core's time)
            bound = max(bound, cal.step_fixed_s + count_bound_s(p.work_units, p.speed_units_per_s,
                                                                cal.per_shard_s, cal.compute_scale))
    return bound


# --------------------------------------------------------------------------- baselines


def _static(p: Problem, opts: PlanOptions, before: _Eval, bound: float) -> tuple[_Eval, bool | None]:
    return before, False


def _even(p: Problem, opts: PlanOptions, before: _Eval, bound: float) -> tuple[_Eval, bool | None]:
    """Equal shard counts per rank (under residency), blind to speed, halo and links.

    Like Heat's ``balance_()``: counts, not time. It reuses ``topo``'s group/rank
    machinery on a copy of the problem where every shard weighs 1 and every
    rank runs at 1, so it also moves only the surplus (Heat shifts contiguous
    blocks instead; the counts are the same).
    """
    unit = dataclasses.replace(p, work_units=np.ones(p.n_shards), speed_units_per_s=np.ones(p.n_ranks))
    owners = _rebalance(unit, opts, _evaluate(unit, p.owners), cross_region=True, halo_aware=False)
    return _evaluate(p, owners, p.owners, opts.calibration), None


def _greedy(p: Problem, opts: PlanOptions, before: _Eval, bound: float) -> tuple[_Eval, bool | None]:
    """Longest processing time first on measured speeds (Charm++ GreedyLB).

    Shards in decreasing work order each go to the allowed rank that is least
    loaded (load = assigned work / speed, as GreedyLB with PE speeds); current
    placement, halo traffic and link speeds are ignored. One min-heap per rank
    group keeps residency: a shard only looks at the heaps of groups its class
    may live in.
    """
    return _evaluate(p, _greedy_owners(p), p.owners, opts.calibration), None


def _greedy_owners(p: Problem) -> np.ndarray:
    """``greedy``'s map (see :func:`_greedy`), not yet priced."""
    rule_of_class, rule_groups, _, _, group_of_rank = residency_rules(p)
    K = rule_groups.shape[1]
    # ranks of each group (CSR), groups of each rule (CSR): the compiled LPT's inputs
    rank_order = np.argsort(group_of_rank, kind="stable")
    rank_ptr = np.searchsorted(group_of_rank[rank_order], np.arange(K + 1))
    rule_idx, group_idx = np.nonzero(rule_groups)
    rule_ptr = np.searchsorted(rule_idx, np.arange(rule_groups.shape[0] + 1))
    order = np.argsort(-p.work_units, kind="stable")
    rules = rule_of_class[p.class_id[order]]
    owners = _lpt(order, p.work_units[order], rules, rule_ptr, group_idx.astype(np.int64),
                  rank_ptr, rank_order.astype(np.int64), 1.0 / p.speed_units_per_s, p.n_shards)
    return owners


@njit(cache=True, nogil=True)
def _lpt(order, work, rules, rule_ptr, rule_group, rank_ptr, rank_of, inv_speed, n_shards):  # pragma: no cover
    # one binary min-heap of (load, rank) per group, laid out in one array at rank_ptr[g]:
    # heapq's order (load, then rank) so the answer equals the Python heap's, 10^6 shards in ~0.2 s
    load = np.zeros(rank_of.size)
    rank = rank_of.copy()
    for g in range(rank_ptr.size - 1):  # ranks ascending with load 0: already a heap
        lo = rank_ptr[g]
        hi = rank_ptr[g + 1]
        rank[lo:hi] = np.sort(rank[lo:hi])
    owners = np.empty(n_shards, np.int64)
    for k in range(order.size):
        m = rules[k]
        best = -1
        for q in range(rule_ptr[m], rule_ptr[m + 1]):
            g = rule_group[q]
            lo = rank_ptr[g]
            if rank_ptr[g + 1] == lo:
                continue
            if best < 0 or load[lo] < load[rank_ptr[best]]:
                best = g
        lo = rank_ptr[best]
        n = rank_ptr[best + 1] - lo
        r = rank[lo]
        owners[order[k]] = r
        # replace the root and sift it down
        t = load[lo] + work[k] * inv_speed[r]
        i = 0
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            if c + 1 < n and (load[lo + c + 1] < load[lo + c]
                              or (load[lo + c + 1] == load[lo + c] and rank[lo + c + 1] < rank[lo + c])):
                c += 1
            if load[lo + c] < t or (load[lo + c] == t and rank[lo + c] < r):
                load[lo + i] = load[lo + c]
                rank[lo + i] = rank[lo + c]
                i = c
            else:
                break
        load[lo + i] = t
        rank[lo + i] = r
    return owners


def _metis(p: Problem, opts: PlanOptions, before: _Eval, bound: float) -> tuple[_Eval, bool | None]:
    """METIS k-way on the halo graph with speed targets, then scratch-remap (``balance.metis``)."""
    from hpccloud.balance.metis import metis_owners

    return _evaluate(p, metis_owners(p, horizon_steps=opts.horizon_steps), p.owners, opts.calibration), None


# --------------------------------------------------------------------------- topo


def _group_link_cost(p: Problem, group_of_rank: np.ndarray, K: int, nbytes: float) -> np.ndarray:
    """Seconds to send a typical shard between groups (a few representative ranks per group)."""
    # the first 4 ranks of each group (in rank order), all (rep a, rep b) pairs in one lookup
    order = np.argsort(group_of_rank, kind="stable")
    start = np.searchsorted(group_of_rank[order], np.arange(K))
    count = np.minimum(np.bincount(group_of_rank, minlength=K), 4)
    ga, gb, i, j = (x.ravel() for x in np.meshgrid(np.arange(K), np.arange(K), np.arange(4), np.arange(4),
                                                   indexing="ij"))
    ok = (ga != gb) & (i < count[ga]) & (j < count[gb])
    ga, gb, i, j = ga[ok], gb[ok], i[ok], j[ok]
    src, dst = order[start[ga] + i], order[start[gb] + j]
    alpha, inv_beta = p.link_terms(src, dst)
    total = np.bincount(ga * K + gb, weights=alpha + nbytes * inv_beta, minlength=K * K)
    n = np.bincount(ga * K + gb, minlength=K * K)
    return (total / np.maximum(n, 1)).reshape(K, K)


def _decompose_flows(current: np.ndarray, target: np.ndarray, cost: np.ndarray, min_amount: float):
    """Split each rule's surplus→deficit into (rule, src group, dst group, work) flows, cheapest links first."""
    flows = []
    for m in range(current.shape[0]):
        surplus = np.maximum(current[m] - target[m], 0.0)
        deficit = np.maximum(target[m] - current[m], 0.0)
        while True:
            src = np.flatnonzero(surplus > min_amount)
            dst = np.flatnonzero(deficit > min_amount)
            if src.size == 0 or dst.size == 0:
                break
            sub = cost[np.ix_(src, dst)]
            i, j = np.unravel_index(np.argmin(sub), sub.shape)
            a, b = int(src[i]), int(dst[j])
            amount = min(surplus[a], deficit[b])
            flows.append((m, a, b, amount))
            surplus[a] -= amount
            deficit[b] -= amount
    return flows


def _take_by_work(cand: np.ndarray, key: np.ndarray, work: np.ndarray, amount: float) -> np.ndarray:
    """The candidates with the smallest key whose work adds up to ``amount`` (rounded per shard)."""
    if cand.size == 0:
        return cand
    # usually far fewer shards are needed than there are candidates: sort only the nearest
    need = int(min(cand.size, 2 * np.ceil(amount / max(float(work[cand].mean()), 1e-300)) + 16))
    if need < cand.size:
        part = np.argpartition(key, need - 1)[:need]
        if float(work[cand[part]].sum()) < amount:
            part = np.arange(cand.size)
    else:
        part = np.arange(cand.size)
    order = part[np.argsort(key[part], kind="stable")]
    w = work[cand[order]]
    cum = np.cumsum(w)
    return cand[order[cum - 0.5 * w < amount]]


def _layer_key(cand: np.ndarray, owner: np.ndarray, centre: float) -> np.ndarray:
    """Sort key taking candidates in layers: every rank's outermost shard first.

    A shard's layer is its depth in its rank's block (among ``cand``), counted from
    the block's end that faces ``centre``; inside a layer the shards nearest
    ``centre`` come first. Taking by this key spreads a flow over every sending
    rank of the group (one shard each, then a second, ...) instead of emptying the
    ranks at the group's edge one after another.
    """
    if cand.size == 0:  # an earlier flow of the same bucket took every shard
        return np.zeros(0, np.float64)
    order = np.lexsort((cand, owner))
    o_sorted, c_sorted = owner[order], cand[order].astype(np.float64)
    first = np.searchsorted(o_sorted, o_sorted, side="left")
    last = np.searchsorted(o_sorted, o_sorted, side="right")
    index = np.arange(order.size) - first
    count = last - first
    cum = np.concatenate([[0.0], np.cumsum(c_sorted)])
    block_centre = (cum[last] - cum[first]) / count
    depth_sorted = np.where(centre > block_centre, count - 1 - index, index)
    depth = np.empty(order.size, np.float64)
    depth[order] = depth_sorted
    return depth + np.abs(cand - centre) / (float(cand.max()) + float(abs(centre)) + 2.0)


def _rebalance(p: Problem, opts: PlanOptions, before: _Eval, *, cross_region: bool,
               halo_aware: bool, spread_take: bool = False, level: float = 0.0) -> np.ndarray:
    """Steps 2–3 of ``topo`` (see the module notes); returns new owners.

    ``spread_take``: a flow between groups takes every sending rank's outermost
    shards first (:func:`_layer_key`), not the shards nearest the receiving
    group: more halo edges across the groups, but the migration no longer waits
    on the few ranks at the group's edge sending all they have.

    ``level`` > 0: the groups aim at finishing by ``T* × (1 + level)`` instead of
    T*: only the groups above that shed, just down to it, into the others'
    room below it (cheapest links first). Less work crosses between groups
    than meeting T*, for a longer step.
    """
    S, P = p.n_shards, p.n_ranks
    w = p.work_units
    owners = p.owners
    rule_of_class, rule_groups, rule_work, group_speed, group_of_rank = residency_rules(p)
    K = group_speed.size
    shard_group = group_of_rank[owners]
    new_group = shard_group.copy()

    # ---- step 2: groups first
    if cross_region and K > 1:
        M = rule_groups.shape[0]
        # one compiled pass: work per (rule, group), shards by (rule, group) bucket (a stable
        # counting sort: O(S), instead of a scan of all S per flow; a flow's source group only
        # loses shards, surplus and deficit groups being disjoint), position sums per group
        current, by_bucket, b_start, pos_sum, n_in = _group_step_sums(
            rule_of_class, p.class_id, shard_group, w, M, K)
        t_star = fractional_bound_s(rule_groups, rule_work, group_speed)
        if level > 0.0 and rule_groups.shape[0] == 1:
            # one rule: a group's room is its capacity at the level, whatever it holds now
            # (surplus = above it, deficit = room left below it; the flows end with the surplus)
            target = (t_star * (1.0 + level) * np.where(rule_groups[0], group_speed, 0.0))[None, :]
        else:  # the least work moved that fits every group under the level (an LP if several rules)
            target = group_targets(rule_groups, rule_work, group_speed, current, t_star * (1.0 + level))
        mean_bytes = float(p.nbytes.mean()) if S else 0.0
        cost = _group_link_cost(p, group_of_rank, K, mean_bytes)
        min_amount = 0.5 * float(w.min()) if S else 0.0
        flows = _decompose_flows(current, target, cost, min_amount)
        if flows:
            gone = np.zeros(S, bool)
        for m, a, b, amount in flows:
            centre_b = float(pos_sum[b] / n_in[b]) if n_in[b] else float(S)
            cand = by_bucket[b_start[m * K + a]:b_start[m * K + a + 1]]
            cand = cand[~gone[cand]]
            key = _layer_key(cand, owners[cand], centre_b) if spread_take else np.abs(cand - centre_b)
            taken = _take_by_work(cand, key, w, amount)
            new_group[taken] = b
            gone[taken] = True
            moved_pos = float(taken.astype(np.float64).sum())
            pos_sum[a] -= moved_pos
            pos_sum[b] += moved_pos
            n_in[a] -= taken.size
            n_in[b] += taken.size

    # ---- step 3: ranks inside each group
    v = p.speed_units_per_s
    # one compiled pass over the shards: work per group after step 2; shards, position sums
    # and the work that stays in its group, per rank
    group_work, count, pos_sum, stay_work = _rank_step_sums(owners, new_group, shard_group, w, K, P)
    h = before.halo if halo_aware else np.zeros(P)
    # equal finishing time T_g inside a group: (T_g - h_r) v_r summed = W_g
    t_group = (group_work + np.bincount(group_of_rank, weights=h * v, minlength=K)) / group_speed
    target = np.maximum(t_group[group_of_rank] - h, 0.0) * v
    tsum = np.bincount(group_of_rank, weights=target, minlength=K)
    with np.errstate(invalid="ignore", divide="ignore"):
        target *= np.where(tsum > 0, group_work / tsum, 0.0)[group_of_rank]

    centre = pos_sum / np.maximum(count, 1)
    # ranks of a group in spatial order (by the centre of their blocks; empty ranks last)
    empty_centre = np.where(count > 0, centre, S + np.arange(P))
    ranks_sorted = np.lexsort((empty_centre, group_of_rank))
    grp_sorted = group_of_rank[ranks_sorted]
    g_start = np.searchsorted(grp_sorted, np.arange(K), side="left")
    g_end = np.searchsorted(grp_sorted, np.arange(K), side="right")
    # which end should a rank shed from? Picture the group's ranks on a line: the
    # work that must cross the boundary left of rank k is the deficit of the ranks
    # before it; shed on the side that pulls harder, keep the other end.
    diff = (target - stay_work)[ranks_sorted]
    cdiff = np.cumsum(diff)
    cdiff_in = cdiff - np.concatenate([[0.0], cdiff])[g_start][grp_sorted]
    left_pull = np.maximum(cdiff_in - diff, 0.0)
    right_pull = np.maximum(-cdiff_in, 0.0)
    side_sorted = np.sign(right_pull - left_pull)  # +1 shed high positions, -1 low, 0 both ends
    side = np.empty(P)
    side[ranks_sorted] = side_sorted
    # only ranks above target shed; the shards of the others all stay (about half the work).
    # A shedding rank keeps its shards in keep-key order until its target is met; the rest,
    # and the shards step 2 sent to another group, form the pool (compiled: _shed)
    shedding = stay_work > target * (1.0 + 1e-12)
    kept_shed, in_pool = _shed(owners, new_group, shard_group, w, centre, side, target, shedding)
    new_owners = owners.copy()
    kept = np.where(shedding, kept_shed, stay_work)
    deficit = np.maximum(target - kept, 0.0)

    # fill deficits group by group, in spatial order on both sides
    cum_def = np.cumsum(deficit[ranks_sorted])
    def_before = np.concatenate([[0.0], cum_def])[g_start]
    _fill(in_pool, new_group, w, def_before, cum_def, g_start, g_end, ranks_sorted, new_owners)
    return new_owners


@njit(cache=True, nogil=True)
def _group_step_sums(rule_of_class, class_id, shard_group, w, n_rules, n_groups):  # pragma: no cover - compiled
    # step 2's inputs in two passes over the shards, summed in shard order (the bits of
    # np.bincount): work per (rule, group) [M, K]; shards by bucket rule * K + group in
    # shard order with the bucket starts; position sums and shard counts (float) per group
    K = n_groups
    current = np.zeros(n_rules * K)
    ptr = np.zeros(n_rules * K + 1, np.int64)
    pos_sum = np.zeros(K)
    n_in = np.zeros(K)
    for s in range(w.size):
        g = shard_group[s]
        b = rule_of_class[class_id[s]] * K + g
        current[b] += w[s]
        ptr[b + 1] += 1
        pos_sum[g] += float(s)
        n_in[g] += 1.0
    for b in range(n_rules * K):
        ptr[b + 1] += ptr[b]
    fill = ptr[:n_rules * K].copy()
    by_bucket = np.empty(w.size, np.int64)
    for s in range(w.size):
        b = rule_of_class[class_id[s]] * K + shard_group[s]
        by_bucket[fill[b]] = s
        fill[b] += 1
    return current.reshape(n_rules, K), by_bucket, ptr, pos_sum, n_in


@njit(cache=True, nogil=True)
def _rank_step_sums(owners, new_group, shard_group, w, n_groups, n_ranks):  # pragma: no cover - compiled
    # the bincounts of _rebalance's rank step in one pass, summed in shard order (same bits)
    group_work = np.zeros(n_groups)
    count = np.zeros(n_ranks, np.int64)
    pos_sum = np.zeros(n_ranks)
    stay_work = np.zeros(n_ranks)
    for s in range(owners.size):
        r = owners[s]
        group_work[new_group[s]] += w[s]
        count[r] += 1
        pos_sum[r] += float(s)
        if new_group[s] == shard_group[s]:
            stay_work[r] += w[s]
    return group_work, count, pos_sum, stay_work


@njit(cache=True, nogil=True)
def _shed(owners, new_group, shard_group, w, centre, side, target, shedding):  # pragma: no cover - compiled
    # Each shedding rank's staying shards, sorted by keep key (distance from the block's
    # centre, or signed towards the side it keeps), are kept while the work before a shard
    # plus half its own is below the target. Returns (kept work of each shedding rank, pool
    # mask: shards that leave their rank). The key and the running sum are those of one
    # stable argsort over all shedding ranks, rank by rank, so the answer is the same bits.
    S = owners.size
    P = centre.size
    start = np.zeros(P + 1, np.int64)
    for s in range(S):
        r = owners[s]
        if new_group[s] == shard_group[s] and shedding[r]:
            start[r + 1] += 1
    for r in range(P):
        start[r + 1] += start[r]
    fill = start[:P].copy()
    act = np.empty(start[P], np.int64)
    for s in range(S):
        r = owners[s]
        if new_group[s] == shard_group[s] and shedding[r]:
            act[fill[r]] = s
            fill[r] += 1
    in_pool = new_group != shard_group
    kept = np.zeros(P)
    scale = 4.0 * S + 4.0
    longest = 0
    for r in range(P):
        longest = max(longest, start[r + 1] - start[r])
    key_buf = np.empty(longest)
    order_buf = np.empty(longest, np.int64)
    cum = 0.0
    for r in range(P):
        lo = start[r]
        hi = start[r + 1]
        n = hi - lo
        if n == 0:
            continue
        key = key_buf[:n]
        c = centre[r]
        sd = side[r]
        for i in range(n):
            rel = float(act[lo + i]) - c
            kk = abs(rel) if sd == 0 else sd * rel
            key[i] = r * scale + (kk + S + 1.0)
        order = _stable_order(key, order_buf[:n])
        base = cum
        lim = target[r] + 1e-12 * target[r]
        acc = 0.0
        for i in range(n):
            s = act[lo + order[i]]
            ws = w[s]
            cum += ws
            if (cum - base) - 0.5 * ws < lim:
                acc += ws
            else:
                in_pool[s] = True
        kept[r] = acc
    return kept, in_pool


@njit(cache=True, nogil=True)
def _stable_order(key, out):  # pragma: no cover - compiled
    # np.argsort(key, kind="stable") for keys that fall then rise (a block's shards by distance
    # from its centre, or by position: one run): merge the two runs in O(n); any other shape
    # is sorted in full. Ties go to the lower index, as in a stable sort.
    n = key.size
    t = 1
    while t < n and key[t] < key[t - 1]:  # [0, t) strictly falling
        t += 1
    for i in range(t + 1, n):  # [t, n) must not fall
        if key[i] < key[i - 1]:
            return np.argsort(key, kind="mergesort")
    i = t - 1
    j = t
    for k in range(n):
        if j >= n or (i >= 0 and key[i] <= key[j]):
            out[k] = i
            i -= 1
        else:
            out[k] = j
            j += 1
    return out


@njit(cache=True, nogil=True)
def _fill(in_pool, new_group, w, def_before, cum_def, g_start, g_end, ranks_sorted, new_owners):  # pragma: no cover
    # pooled shards, group by group in shard (spatial) order, go to the rank whose slice of the
    # group's cumulative deficit holds the middle of the shard's slice of the pool's work
    K = def_before.size
    ptr = np.zeros(K + 1, np.int64)
    for s in range(in_pool.size):
        if in_pool[s]:
            ptr[new_group[s] + 1] += 1
    for g in range(K):
        ptr[g + 1] += ptr[g]
    fill = ptr[:K].copy()
    pool = np.empty(ptr[K], np.int64)
    for s in range(in_pool.size):
        if in_pool[s]:
            g = new_group[s]
            pool[fill[g]] = s
            fill[g] += 1
    pcum = 0.0
    for g in range(K):
        base = pcum
        for i in range(ptr[g], ptr[g + 1]):
            s = pool[i]
            pw = w[s]
            pcum += pw
            val = def_before[g] + (pcum - base) - 0.5 * pw
            idx = np.searchsorted(cum_def, val, side="right")
            idx = min(max(idx, g_start[g]), g_end[g] - 1)
            new_owners[s] = ranks_sorted[idx]


def _group_finish_s(p: Problem, shard_group: np.ndarray, halo_s: np.ndarray) -> np.ndarray:
    """Per group: the time at which its ranks would all finish with its work spread by speed."""
    group_of_rank, _ = p.groups
    K = int(group_of_rank.max()) + 1
    v = p.speed_units_per_s
    work = np.bincount(shard_group, weights=p.work_units, minlength=K)
    return (work + np.bincount(group_of_rank, weights=halo_s * v, minlength=K)) / np.bincount(
        group_of_rank, weights=v, minlength=K)


#: ``topo``'s portfolio prices metis's map only up to this many ranks (its remap is O(P^3))
PORTFOLIO_METIS_MAX_RANKS = 256
#: ... and the other candidates up to this many: above it topo's own plan is within ~1 % of
#: T* on the scenarios measured (the portfolio pays off for hot spots on few ranks), and
#: pricing the candidates would double the planning time at 10^4-10^5 ranks
PORTFOLIO_MAX_RANKS = 4096
#: ... and only when topo's own plan ends more than this fraction above T* (closer to the
#: bound no candidate can gain much, and pricing them is most of a small plan's time)
PORTFOLIO_GAP = 0.05


#: ``topo``'s candidates between staying inside the groups and meeting T* across them: the
#: groups filled to ``T* × (1 + f × (T_stay / T_full − 1))`` for each ``f`` (``T_stay``,
#: ``T_full``: the groups' equal-finish times without and with the moves across them)
LEVEL_FRACTIONS = (0.1, 0.3)
#: ... tried when the totals of staying and of meeting T* lie within this fraction of each
#: other (where the levels won, 26 hetero-speed plans at 1,024 ranks: 0.02-2.6 %)
LEVEL_GAP = 0.05


#: ``topo``'s whole-shard candidate is tried up to this many shards per rank (beyond, the
#: rank step's rounding at shard boundaries no longer decides the makespan)
COUNT_SPLIT_MAX_SHARDS_PER_RANK = 16


def _count_split(p: Problem, owners: np.ndarray) -> np.ndarray:
    """Whole shards inside each group at the group's count bound (a ``topo`` candidate).

    The rank step aims at fractional targets ``T_g · v_r``; with a few shards per
    rank the rounding at shard boundaries decides the makespan (hetero-speed,
    ~6 shards per rank: 1.2 × T* before the local search, 1.10-1.14 after). Here
    every rank keeps its own shards, nearest its block's centre first, while they
    fit under the group's count bound (:func:`~hpccloud.balance.bound.count_bound_s`
    of the group's shards on its ranks) × its speed; the others are placed
    largest first where they finish earliest (LPT). For equal shards the group
    then finishes at its count bound, and only the shards that must move do.
    Groups are kept (residency holds by construction: see :attr:`Problem.groups`).
    """
    group_of_rank, _ = p.groups
    w, v = p.work_units, p.speed_units_per_s
    new = owners.copy()
    shard_group = group_of_rank[owners]
    pos = np.arange(p.n_shards, dtype=np.float64)
    local_of = np.full(p.n_ranks, -1, np.int64)
    for g in np.unique(shard_group):
        ranks = np.flatnonzero(group_of_rank == g)
        vg = v[ranks]
        if ranks.size < 2 or not np.all(vg > 0):
            continue
        shards = np.flatnonzero(shard_group == g)
        t = count_bound_s(w[shards], vg)
        if not t > 0:
            continue
        cap = t * vg * (1.0 + 1e-9)
        local_of[ranks] = np.arange(ranks.size)
        r_loc = local_of[owners[shards]]
        n_in = np.bincount(r_loc, minlength=ranks.size)
        centre = np.bincount(r_loc, weights=pos[shards], minlength=ranks.size) / np.maximum(n_in, 1)
        order = np.lexsort((np.abs(pos[shards] - centre[r_loc]), r_loc))
        s_sorted, r_sorted = shards[order], r_loc[order]
        cum = np.cumsum(w[s_sorted])
        start = np.concatenate([[0], np.cumsum(n_in)[:-1]])
        cum_in = cum - np.concatenate([[0.0], cum])[start][r_sorted]
        keep = cum_in <= cap[r_sorted]
        load = np.bincount(r_sorted[keep], weights=w[s_sorted[keep]], minlength=ranks.size)
        pool = s_sorted[~keep]
        for sid in pool[np.argsort(-w[pool], kind="stable")]:
            k = int(np.argmin((load + w[sid]) / vg))
            load[k] += w[sid]
            new[sid] = ranks[k]
    return new


def _portfolio_may_pay(gap_s: float, horizon: int, cal: Calibration | None) -> bool:
    """Whether pricing the portfolio can pay for itself.

    No candidate ends below T*, so the most it can save is ``gap_s`` (topo's
    plan − T*) per step over the horizon. In a run the calibration knows what a
    rebalance's planning costs (``plan_fixed_s``, measured; pricing the
    candidates is most of it on small problems): when the whole possible saving
    is smaller, the candidates are not priced. Without a calibration (simulate,
    plan) they always are.
    """
    if cal is None or cal.plan_fixed_s <= 0.0:
        return True
    return gap_s * horizon > cal.plan_fixed_s


def _portfolio(p: Problem, opts: PlanOptions, best: _Eval, full: _Eval, bound: float, polished) -> _Eval | None:
    """More candidates for ``topo``, priced on the same model and passed through the same gate.

    * the optimal contiguous split (``chains``) of ``full``'s group loads (the
      candidate that rebalanced across groups): whole
      shards, so the rank step's rounding at shard boundaries does not decide
      the makespan when a rank holds only a few shards;
    * the baselines' maps (greedy; metis up to :data:`PORTFOLIO_METIS_MAX_RANKS`
      ranks): with uneven shard work (hot spots) a scattered map may simply be
      the better one, and then ``topo`` must not be worse than the baseline.

    Returns the cheapest candidate over the horizon if it saves ``min_gain`` of
    ``best``'s total, else None. A baseline's map is priced in full (halo,
    schedule) only if a cheap lower bound on its total — compute makespan ×
    horizon + the migration's one-message-at-a-time bound — leaves it a chance;
    the contiguous split is polished by the local search, which moves shards, so
    only ``T* × horizon`` bounds it.
    """
    from hpccloud.balance.chains import chain_owners
    from hpccloud.balance.metis import metis_owners

    H = opts.horizon_steps
    cal = opts.calibration
    need = (1.0 - opts.min_gain) * best.total_s(H)
    makers = [lambda: chain_owners(p, full.owners), lambda: _greedy_owners(p)]
    if p.n_ranks <= PORTFOLIO_METIS_MAX_RANKS:
        makers.append(lambda: metis_owners(p, horizon_steps=H))
    winner = None
    for k, make in enumerate(makers):
        if k == 0:
            if bound * H >= need:
                continue
            ev = polished(make())
            if ev.total_s(H) < need:
                winner, need = ev, ev.total_s(H)
            continue
        owners = make()
        compute = model.compute_s(p, owners)
        if cal is None:
            floor_s = float(compute.max()) * H + model.migration_lower_bound_s(p, p.owners, owners)
        else:  # achieved route throughput may beat the raw links: bound by the step alone
            floor_s = float(cal.step_s(cal.compute_as_run(compute, p.speed_units_per_s), 0.0,
                                       np.bincount(owners, minlength=p.n_ranks)).max()) * H
        if floor_s >= need:
            continue
        ev = _evaluate(p, owners, p.owners, cal)
        if ev.total_s(H) < need:
            winner, need = ev, ev.total_s(H)
    return winner


def _topo(p: Problem, opts: PlanOptions, before: _Eval, bound: float,
          scenarios: Sequence[Problem] = ()) -> tuple[_Eval, bool | None]:
    H = opts.horizon_steps
    t_now = before.makespan_s
    # no plan ends below T*: when even T* would not gain enough, stop (O(S), no planning)
    if t_now - bound <= max(opts.tolerance * bound, opts.min_gain * t_now):
        return before, False
    min_gain_s = opts.min_gain * t_now

    cal = opts.calibration
    local_terms: dict[str, Any] = {} if cal is None else {"compute_scale": cal.compute_scale, "halo_scale": cal.halo_scale,
                                          "per_shard_s": cal.per_shard_s}

    pair_s = None if cal is None else (lambda *a: cal.pair_s(p, *a))
    # spreading a migration over more ranks (spread_receptions, the layered flows) pays when
    # their transfers run side by side; ranks of one host copy through one memory system,
    # often on shared cores, so a run whose ranks all share a host does not try it (the
    # 4-rank matrix on 2 cores with it: topo within 1.02 x the best in 5 of 15 cells, 8-10
    # in earlier sessions without; too noisy to pin on it, but nothing there to gain)
    hosts = None if cal is None else cal.rank_host
    spread_ok = (hosts is None or len(set(hosts)) > 1) and p.n_ranks <= PORTFOLIO_MAX_RANKS

    # the local search prices a move on the two ranks it joins; where core-mates share their
    # compute (cal.pool_solo) a move changes the whole group's, and the search would trade
    # shards between core-mates for nothing
    local_ok = bool(opts.local_moves) and (cal is None or cal.pool_solo is None)

    def polished(owners: np.ndarray) -> _Eval:
        if local_ok:
            ev = _evaluate(p, owners, cal=cal)
            owners = local.improve(p, owners, ev.loads, max_moves=opts.local_moves, cut=ev.cut, **local_terms)
        ev = _evaluate(p, owners, p.owners, cal)
        if spread_ok and ev.moved.size:
            # slow receptions spread over the receiving group, if that pays (above the portfolio's
            # rank limit it did not change a plan measured, and would add ~40 % to the planning time)
            spread = spread_receptions(p, owners, pair_s=pair_s)
            if np.any(spread != owners):
                ev_spread = _evaluate(p, spread, p.owners, cal)
                if ev_spread.total_s(H) < ev.total_s(H):
                    ev = ev_spread
        return ev

    candidates = []
    polish = None
    if t_now <= bound * (1.0 + 5.0 * opts.min_gain + opts.tolerance):
        # near balanced: a few local moves may be all it takes (and all that noise deserves)
        polish = polished(p.owners)
    group_of_rank, _ = p.groups
    multi = opts.cross_region and int(group_of_rank.max()) > 0
    full = polished(_rebalance(p, opts, before, cross_region=multi, halo_aware=opts.halo_aware))
    candidates.append(full)
    if p.n_ranks <= PORTFOLIO_MAX_RANKS and p.n_shards <= COUNT_SPLIT_MAX_SHARDS_PER_RANK * p.n_ranks:
        candidates.append(polished(_count_split(p, full.owners)))
    full_crosses = multi and bool(np.any(group_of_rank[full.owners] != group_of_rank[p.owners]))
    if full_crosses:
        # moves across groups ride the slowest links: price staying inside the groups, unless
        # staying clearly cannot win. Predict its makespan from the groups' equal-finish
        # times (work + halo over aggregate speed), scaled by what the rank level made of
        # them in the full candidate (shard granularity, halo): O(S) instead of a plan.
        t_stay = _group_finish_s(p, group_of_rank[p.owners], before.halo).max()
        t_full = _group_finish_s(p, group_of_rank[full.owners], before.halo).max()
        t_stay_pred = full.makespan_s * float(t_stay / t_full) if t_full > 0 else full.makespan_s
        if (t_stay_pred - full.makespan_s) * H < 2.0 * full.migration_s:
            candidates.append(polished(_rebalance(p, opts, before, cross_region=False,
                                                  halo_aware=opts.halo_aware)))
            stay = candidates[-1]
            lo, hi = sorted((full.total_s(H), stay.total_s(H)))
            if (p.n_ranks <= PORTFOLIO_MAX_RANKS and t_stay > t_full > 0
                    and hi <= (1.0 + LEVEL_GAP) * lo):
                # staying wins by its migration, meeting T* by its step, and neither by
                # much: the best total may lie between (hetero-speed, 1,024 ranks in 16
                # regions, seed 11: staying won at 1.070 x T*; a level 0.1 of the way gave
                # 1.009 x T* and a total 0.9 % lower)
                for f in LEVEL_FRACTIONS:
                    candidates.append(polished(_rebalance(
                        p, opts, before, cross_region=True, halo_aware=opts.halo_aware,
                        level=f * float(t_stay / t_full - 1.0))))
    if spread_ok and full_crosses:
        # the flows across groups taken from every sending rank, not from the group's edge
        candidates.append(polished(_rebalance(p, opts, before, cross_region=True,
                                              halo_aware=opts.halo_aware, spread_take=True)))
    if scenarios and p.n_ranks <= PORTFOLIO_MAX_RANKS:
        # the next window may bring any of the scenarios: a scattered map averages
        # what no forecast saw coming (neighbouring shards err together), so price it too
        candidates.append(_evaluate(p, _greedy_owners(p), p.owners, cal))
    # every candidate priced on each scenario alike (nothing changes without scenarios)
    candidates = [_expected(e, scenarios, cal) for e in candidates]
    best = min(candidates, key=lambda e: e.total_s(H))
    if (opts.portfolio and p.n_ranks <= PORTFOLIO_MAX_RANKS
            and best.makespan_s > (1.0 + PORTFOLIO_GAP) * bound
            and _portfolio_may_pay(best.makespan_s - bound, H, cal)):
        # hysteresis: another family of map replaces topo's own only if it saves min_gain of the total
        other = _portfolio(p, opts, best, full, bound, polished)
        if other is not None:
            other = _expected(other, scenarios, cal)
            if other.total_s(H) < (1.0 - opts.min_gain) * best.total_s(H):
                best = other
    # the cheapest over the horizon wins, but a plan must beat the local polish (if any)
    # by min_gain: noise in the work units is not a reason to move many shards
    if polish is not None:
        polish = _expected(polish, scenarios, cal)
        if best.makespan_s > polish.makespan_s - min_gain_s or best.total_s(H) >= polish.total_s(H):
            best = polish
    gain_s = t_now - best.makespan_s
    if best.moved.size and cal is not None and cal.pool_solo is not None:
        # ranks of one core finish their compute together: what the plan gains is what it
        # gains on the core groups (moves between core-mates gain ~nothing)
        solo = np.asarray(cal.pool_solo, np.float64)
        pooled_now = _pooled_makespan_s((p, *scenarios), p.owners, cal, solo)
        gain_s = min(gain_s, pooled_now - _pooled_makespan_s((p, *scenarios), best.owners, cal, solo))
        min_gain_s = opts.min_gain * pooled_now
    if best.moved.size and gain_s * H > best.migration_s and gain_s >= min_gain_s:
        return best, True
    return before, False


def _pooled_makespan_s(problems: Sequence[Problem], owners: np.ndarray, cal: Calibration,
                       solo: np.ndarray) -> float:
    """The calibrated makespan of ``owners`` with each core group's CPU work (compute and
    per-shard dispatch) pooled (see ``Calibration.pool_solo``; ``solo`` its per-rank
    factors), averaged over ``problems`` (the problem and its scenarios).

    >>> import numpy as np
    >>> from hpccloud.balance.problem import Problem
    >>> p = Problem.uniform(work_units=np.ones(8), owners=[0, 0, 0, 1, 2, 2, 3, 3],
    ...                     speed_units_per_s=[1.0] * 4)
    >>> cal = Calibration(rank_core=(0, 0, 1, 1))  # two ranks per core
    >>> round(_pooled_makespan_s([p], p.owners, cal, np.full(4, 2.0)), 3)  # core 0: 4 units at 2/s
    2.0
    """
    core = cal.core_index  # 0..G-1: labels with gaps would leave empty groups (0 / 0)
    if core is None:
        raise InvalidArgument("pooled compute needs Calibration.rank_core")
    out = []
    for q in problems:
        # the core's CPU work: compute and the per-shard dispatch (both fitted on the shared
        # core), shared by its ranks; halo and the fixed cost stay each rank's
        n = np.bincount(owners, minlength=q.n_ranks).astype(np.float64)
        work = np.bincount(owners, q.work_units, q.n_ranks)
        own = (cal.compute_scale * cal.compute_as_run(model.compute_s(q, owners), q.speed_units_per_s)
               + cal.per_shard_s * n)  # what _evaluate priced
        pooled = (cal.compute_scale * np.bincount(core, work) / np.bincount(core, q.speed_units_per_s)
                  + cal.per_shard_s * np.bincount(core, n) / np.bincount(core))[core]
        pooled = np.maximum(pooled, own / np.maximum(solo, 1.0))  # no rank beyond its own core
        loads = _evaluate(q, owners, cal=cal).loads + (pooled - own)
        out.append(float(loads.max()))
    return float(np.mean(out))


PLANNERS = {"static": _static, "even": _even, "greedy": _greedy, "metis": _metis, "topo": _topo}


def plan_problem(p: Problem, planner: str = "topo", options: PlanOptions | None = None) -> MigrationPlan:
    """Run one planner on ``p`` and price its plan on the model.

    >>> import numpy as np
    >>> from hpccloud.balance.problem import Problem
    >>> p = Problem.uniform(work_units=np.ones(8), owners=np.zeros(8, int), speed_units_per_s=[1.0, 1.0])
    >>> mp = plan_problem(p, "topo")
    >>> mp.makespan_before_s, round(mp.makespan_after_s, 3), len(mp.moves), mp.gate_passed
    (8.0, 4.0, 4, True)
    """
    if planner not in PLANNERS:
        raise InvalidArgument(f"unknown planner {planner!r}; choose one of {sorted(PLANNERS)}")
    opts = options or PlanOptions()
    cal = opts.calibration
    for name in ("rank_core", "warm_io_bytes"):  # rank_host: Calibration.route_of
        given = None if cal is None else getattr(cal, name)
        if given is not None and len(given) != p.n_ranks:
            raise InvalidArgument(f"Calibration.{name} names {len(given)} ranks, the problem has "
                                  f"{p.n_ranks}; calibrate on the same job")
    t0 = time.perf_counter()
    token = _EVALS.set({})
    try:
        return _plan(p, planner, opts, t0)
    finally:
        _EVALS.reset(token)


def _plan(p: Problem, planner: str, opts: PlanOptions, t0: float) -> MigrationPlan:
    """:func:`plan_problem`'s work, its arguments checked; ``t0``: when it began."""
    cal = opts.calibration
    p.warm()  # before the forecast's and the scenarios' variants: they share its caches
    forecast_shift = 0
    if planner == "topo" and opts.recent_work:
        from hpccloud.balance.forecast import forecast_work

        f = forecast_work(p.work_units, opts.recent_work[0])
        if f is not None:
            work, forecast_shift = f
            p = p.with_work_units(work)
    if planner != "topo" or forecast_shift:  # a moving load: the motion forecast stands alone
        opts = dataclasses.replace(opts, scenarios=())
    scenarios = _scenario_problems(p, opts)
    before = _expected(_evaluate(p, p.owners, cal=cal), scenarios, cal)
    bound = float(np.mean([_bound_s(q, cal) for q in (p, *scenarios)]))
    # only topo gets scenarios (emptied above for the others): built once, here
    after, gate = (_topo(p, opts, before, bound, scenarios) if scenarios
                   else PLANNERS[planner](p, opts, before, bound))
    if after is not before:
        p.check_residency(after.owners)
    if planner != "topo" and opts.priced_on:  # the baseline's own map, priced on what comes
        q = p.with_work_units(np.asarray(opts.priced_on[0], np.float64))
        ahead = _scenario_problems(q, dataclasses.replace(opts, scenarios=tuple(opts.priced_on[1:])))
        before = _expected(_evaluate(q, p.owners, cal=cal), ahead, cal)
        after = _expected(_evaluate(q, after.owners, p.owners, cal=cal), ahead, cal)
    gain_s = before.makespan_s - after.makespan_s
    if gate is None:  # baselines ignore the gate; report what it would have said
        gate = bool(after.moved.size) and gain_s * opts.horizon_steps > after.migration_s
    moved = after.moved
    moves = Moves(moved, p.owners[moved], after.owners[moved])
    cost = model.resource_cost(p, after.owners, after.loads, opts.horizon_steps, p.owners, moved=moved,
                               cut=after.cut)
    elapsed = time.perf_counter() - t0
    return MigrationPlan(
        planner=planner, owners_before=p.owners, owners_after=after.owners, moves=moves,
        makespan_before_s=before.makespan_s, makespan_after_s=after.makespan_s, lower_bound_s=bound,
        migration_s=after.migration_s, migration_bytes=after.migration_bytes,
        imbalance_before=model.imbalance(before.loads), imbalance_after=model.imbalance(after.loads),
        resource_cost=cost, gate_passed=gate, plan_seconds=elapsed, horizon_steps=opts.horizon_steps,
        provenance=p.provenance, loads_before_s=before.loads, loads_after_s=after.loads, calibration=cal,
        forecast_shift=forecast_shift, scenarios=len(scenarios))
