"""The lower bound T* on any plan's makespan, and the per-group work targets of ``topo``.

**The bound.** Relax the problem: let shards split fractionally, drop halo time
(it is never negative, so dropping it keeps the bound valid) and keep residency.
What remains is a transportation problem: data class ``c`` has ``W_c`` work
units that may flow to the rank groups it is allowed in; group ``k`` (ranks of
one region accepting the same classes) finishes ``T · V_k`` units in time ``T``,
``V_k`` its aggregate measured speed (inside a group fractional work spreads in
proportion to speed, so a group acts as one machine). By Gale's/Hall's theorem
the relaxation is feasible at ``T`` iff every set ``K`` of classes fits in the
groups it may use::

    T* = max over non-empty class sets K of  W(K) / V(groups allowed for some class in K)

Classes with the same allowed groups merge, so ``K`` ranges over at most
``2^M`` sets with ``M`` the number of distinct residency rules — a handful in
practice; enumerating them is exact and takes microseconds. With more than
:data:`MAX_ENUMERATED` rules the same value comes from an LP (scipy HiGHS),
whose variables are (rule × group), never (shard × rank).

No shard splits in a real plan, so two more bounds hold:
``max_s w_s / (fastest rank allowed for s)``, and the *count* bound
(:func:`count_bound_s`): every shard with work holds at least ``w_min``, so a
rank holding ``k`` of them needs at least ``k · w_min / v_r`` and the ``S``
shards need the ``S``-th smallest of all those times. With equal shards (and no
residency limits or halos) that is the optimum itself; with a few shards per
rank and unequal speeds it is well above ``Σw / Σv`` (1.08× on ``simulate``'s
hetero-speed at 6.25 shards per rank). :func:`lower_bound_s` returns the
largest of the three. With no residency limits the first is exactly ``Σw / Σv``.

>>> import numpy as np
>>> from hpccloud.balance.problem import Problem
>>> p = Problem.uniform(work_units=np.ones(6), owners=np.zeros(6, int), speed_units_per_s=[1.0, 2.0])
>>> lower_bound_s(p)   # 6 units / 3 units per s
2.0
"""

from __future__ import annotations

from typing import cast

import numpy as np
from scipy.optimize import linprog

from hpccloud.balance.problem import Problem
from hpccloud.errors import ResidencyError

MAX_ENUMERATED = 14
#: ranks up to which count_bound_s checks lo's next slot after every halving
SLOT_CHECK_MAX_RANKS = 1024


def residency_rules(p: Problem, work_units: np.ndarray | None = None):
    """Merge data classes with the same allowed groups.

    Returns ``(rule_of_class [C], rule_groups bool [M, K], rule_work [M], group_speed [K],
    group_of_rank [P])``; only classes with shards are kept in rules (others map to -1).
    """
    group_of_rank, allowed_by_group = p.groups
    group_speed = np.bincount(group_of_rank, weights=p.speed_units_per_s,
                              minlength=allowed_by_group.shape[1])
    class_work = (p.class_work_units if work_units is None
                  else np.bincount(p.class_id, weights=work_units, minlength=p.n_classes))
    rule_of_class, rule_groups = p.class_rules  # owner- and work-free: kept by the variants
    present = np.flatnonzero(rule_of_class >= 0)
    if present.size == 0:
        return rule_of_class, rule_groups, np.zeros(0), group_speed, group_of_rank
    inv = rule_of_class[present]
    rule_work = np.bincount(inv, weights=class_work[present], minlength=rule_groups.shape[0])
    if not np.all(rule_groups.any(axis=1)):
        bad = present[np.flatnonzero(~cast(np.ndarray, rule_groups.any(axis=1))[inv])[0]]
        raise ResidencyError(f"data class {p.class_names[bad]!r} may live on no rank")
    return rule_of_class, rule_groups, rule_work, group_speed, group_of_rank


def fractional_bound_s(rule_groups: np.ndarray, rule_work: np.ndarray, group_speed: np.ndarray) -> float:
    """T* of the fractional relaxation (exact; enumeration or HiGHS LP, see the module notes)."""
    M = rule_work.size
    if M == 0 or float(rule_work.sum()) == 0.0:
        return 0.0
    if M > MAX_ENUMERATED:
        return lp_bound_s(rule_groups, rule_work, group_speed)
    subsets = ((np.arange(1, 1 << M)[:, None] >> np.arange(M)[None, :]) & 1).astype(np.float64)
    work = subsets @ rule_work
    reach = (subsets @ rule_groups.astype(np.float64)) > 0
    speed = reach @ group_speed
    return float(np.max(work / speed))


def lp_bound_s(rule_groups: np.ndarray, rule_work: np.ndarray, group_speed: np.ndarray) -> float:
    """The same T* from ``scipy.optimize.linprog`` (HiGHS): min T s.t. work fits in T·V_k."""
    M, K = rule_groups.shape
    m_idx, k_idx = np.nonzero(rule_groups)
    n = m_idx.size
    # variables: x (one per allowed (rule, group) pair), then T
    c = np.zeros(n + 1)
    c[-1] = 1.0
    a_eq = np.zeros((M, n + 1))
    a_eq[m_idx, np.arange(n)] = 1.0
    a_ub = np.zeros((K, n + 1))
    a_ub[k_idx, np.arange(n)] = 1.0
    a_ub[:, -1] = -group_speed
    # scale to O(1) so HiGHS tolerances are relative
    scale = float(rule_work.sum())
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(K), A_eq=a_eq, b_eq=rule_work / scale,
                  bounds=[(0, None)] * (n + 1), method="highs")
    if res.status != 0:
        raise RuntimeError(f"lower-bound LP failed: {res.message}")
    return float(res.x[-1]) * scale


def granular_bound_s(p: Problem, work_units: np.ndarray | None = None) -> float:
    """``max_s w_s / v_max(class of s)``: a whole shard runs on one rank."""
    w = p.work_units if work_units is None else work_units
    if w.size == 0:
        return 0.0
    vmax = np.where(p.allowed, p.speed_units_per_s[None, :], 0.0).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.max(w / vmax[p.class_id]))


def count_bound_s(work_units: np.ndarray, speed_units_per_s: np.ndarray, per_shard_s: float = 0.0,
                  compute_scale: float = 1.0) -> float:
    """The count bound (see the module notes): the least ``T`` at which the ranks have room
    for every shard with work, at ``w_min`` units each (residency relaxed).

    With a calibrated step (``per_shard_s`` per shard held, compute times
    ``compute_scale``) a shard costs rank ``r`` at least
    ``per_shard_s + compute_scale · w_min / v_r``, and the same count applies.

    ``count(T) = Σ_r floor(T · v_r / w_min)`` rises in steps; ``T`` is bracketed in
    ``[n·w/V, (n + P)·w/V]`` (each floor loses < 1) and bisected until the bracket
    holds one step: the answer is the first slot ``k · w_min / v_r`` past its lower end.

    >>> count_bound_s(np.ones(3), np.array([1.0, 1.0]))   # 3 equal shards on 2 equal ranks
    2.0
    >>> round(count_bound_s(np.ones(7), np.array([1.0, 2.0, 4.0])), 6)   # Σw/Σv would say 1.0
    1.0
    >>> round(count_bound_s(np.ones(4), np.array([1.0, 3.0])), 6)        # Σw/Σv would say 1.0
    1.0
    >>> round(count_bound_s(np.ones(5), np.array([1.0, 3.0])), 6)        # not 1.25: 2 shards on the slow
    1.333333
    >>> round(count_bound_s(np.ones(5), np.array([1.0, 3.0]), per_shard_s=0.5), 6)  # 2 × 1.5 s
    3.0
    """
    w = np.asarray(work_units, np.float64)
    w = w[w > 0]
    v = np.asarray(speed_units_per_s, np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if w.size == 0 or v.size == 0:
        return 0.0
    w_min, n = float(w.min()), w.size
    cost = per_shard_s + compute_scale * w_min / v  # seconds per shard on each rank
    if not np.all(cost > 0):
        return 0.0
    scaled = 1.0 / cost  # shards per second
    total = float(scaled.sum())
    lo, hi = n / total, (n + v.size) / total

    def count(t: float) -> float:
        return float(np.floor(t * scaled * (1.0 + 1e-15)).sum())

    if count(lo) >= n:  # the fractional value is reached exactly
        return lo

    def next_slot(t: float) -> float:  # the earliest slot after t (count is flat until then)
        return max(t, float(np.min((np.floor(t * scaled) + 1.0) / scaled)))

    # bisect until lo's next slot is the answer (often at once: the first slot past the
    # fractional value), or the bracket stops shrinking (~50 halvings); the check after each
    # move of lo pays while few ranks' slots share the bracket (up to SLOT_CHECK_MAX_RANKS:
    # 64 shards on 4 ranks 2x faster; 10^5 ranks 5x slower with it)
    check = v.size <= SLOT_CHECK_MAX_RANKS
    done = count(next_slot(lo)) >= n
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if done or not lo < mid < hi or hi - lo <= 1e-12 * hi:
            break
        if count(mid) >= n:
            hi = mid
        else:
            lo = mid
            done = check and count(next_slot(lo)) >= n
    # count(lo) < n: the answer is the earliest slot after lo (never below lo)
    return next_slot(lo)


def lower_bound_s(p: Problem, work_units: np.ndarray | None = None) -> float:
    """A lower bound on the makespan of every plan of ``p`` (compute only, see the module notes)."""
    _, rule_groups, rule_work, group_speed, _ = residency_rules(p, work_units)
    w = p.work_units if work_units is None else work_units
    return max(fractional_bound_s(rule_groups, rule_work, group_speed), granular_bound_s(p, work_units),
               count_bound_s(w, p.speed_units_per_s))


def _two_group_targets(rule_groups: np.ndarray, rule_work: np.ndarray, group_speed: np.ndarray,
                       current: np.ndarray, t_star: float) -> np.ndarray | None:
    """:func:`group_targets` in closed form for two groups where every rule but one may live
    in one group only (the common case: public data and classes held in one region).

    The pinned rules stay where they must; the free rule keeps as much of its work in
    each group as the group's room under ``T*`` allows, the rest goes to the other
    group — the LP's unique optimum (moved work is ``|current − x|`` of the free rule
    in group 0, over the interval the rooms leave). None: another case (the LP
    decides), or the free rule's current work does not add up to its total.
    """
    if rule_groups.shape[1] != 2:
        return None
    n_allowed = rule_groups.sum(axis=1)
    free = np.flatnonzero(n_allowed == 2)
    if free.size != 1 or np.any(n_allowed < 1):
        return None
    f = int(free[0])
    w = float(rule_work[f])
    if abs(float(current[f].sum()) - w) > 1e-9 * max(abs(w), 1e-300):
        return None
    x = np.zeros(rule_groups.shape)
    pinned = n_allowed == 1
    x[pinned] = np.where(rule_groups[pinned], rule_work[pinned, None], 0.0)
    room = t_star * (1.0 + 1e-9) * group_speed - x.sum(axis=0)
    lo, hi = max(0.0, w - float(room[1])), min(w, float(room[0]))
    if lo > hi:
        return None  # no map meets t_star: the LP says so
    x[f, 0] = min(max(float(current[f, 0]), lo), hi)
    x[f, 1] = w - x[f, 0]
    return x


def group_targets(rule_groups: np.ndarray, rule_work: np.ndarray, group_speed: np.ndarray,
                  current: np.ndarray, t_star: float) -> np.ndarray:
    """Work per (rule, group) that meets ``T*`` and moves as little work as possible.

    With one residency rule the answer is closed-form (work in proportion to
    group speed), and with two groups and one rule free to live in both (the
    others in one group each) too (:func:`_two_group_targets`: HiGHS's call cost
    ~1 ms, a quarter of a 4-rank plan). Otherwise a small LP (HiGHS, variables rule × group):
    ``min Σ moved`` s.t. rule totals are kept, each group fits in ``T*·V_k``,
    ``moved[m,k] ≥ current[m,k] − x[m,k]``.
    """
    M, K = rule_groups.shape
    if M == 1:
        speed = np.where(rule_groups[0], group_speed, 0.0)
        return (rule_work[0] * speed / speed.sum())[None, :]
    two = _two_group_targets(rule_groups, rule_work, group_speed, current, t_star)
    return two if two is not None else _lp_group_targets(rule_groups, rule_work, group_speed, current, t_star)


def _lp_group_targets(rule_groups: np.ndarray, rule_work: np.ndarray, group_speed: np.ndarray,
                      current: np.ndarray, t_star: float) -> np.ndarray:
    """:func:`group_targets` by the LP (HiGHS)."""
    M, K = rule_groups.shape
    m_idx, k_idx = np.nonzero(rule_groups)
    n = m_idx.size
    scale = max(float(rule_work.sum()), 1e-300)
    cur = current[m_idx, k_idx] / scale
    # variables: x[n], moved[n]
    c = np.concatenate([np.zeros(n), np.ones(n)])
    a_eq = np.zeros((M, 2 * n))
    a_eq[m_idx, np.arange(n)] = 1.0
    a_ub = np.zeros((K + n, 2 * n))
    a_ub[k_idx, np.arange(n)] = 1.0
    b_ub = np.empty(K + n)
    b_ub[:K] = t_star * (1.0 + 1e-9) * group_speed / scale
    # -x - moved <= -cur
    a_ub[K + np.arange(n), np.arange(n)] = -1.0
    a_ub[K + np.arange(n), n + np.arange(n)] = -1.0
    b_ub[K:] = -cur
    res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=rule_work / scale,
                  bounds=[(0, None)] * (2 * n), method="highs")
    if res.status != 0:  # feasible by construction when t_star is the bound: a failure is a bug
        raise RuntimeError(f"group-target LP failed at T* = {t_star!r}: {res.message}")
    x = np.zeros((M, K))
    x[m_idx, k_idx] = res.x[:n] * scale
    return x
