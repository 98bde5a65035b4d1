"""``metis``: a graph-partitioner baseline (METIS k-way with speed targets, then scratch-remap).

The baseline that graph partitioners offer for adaptive load balancing, as in
ParMETIS's adaptive repartitioning (``ParMETIS_V3_AdaptiveRepart``) with the
*scratch-remap* scheme:

0. **residency first** — classes allowed in the same groups form a rule; the
   lower bound's transportation LP says how much of each rule's work each group
   takes (meeting T*), split over the group's ranks by measured speed; each
   rule is partitioned alone over the ranks it may use, so residency holds by
   construction (with no limits: one partition over all ranks);
1. **partition from scratch** — METIS k-way (via ``pymetis``) on the halo graph:
   vertex weights = measured work units, edge weights = halo bytes per step,
   target part weights = those per-rank capacities (∝ measured speed);
2. **remap** — match the new parts to ranks so that as little data as possible
   moves: one assignment problem (``scipy.optimize.linear_sum_assignment``) whose
   cost of giving part ``k`` to rank ``r`` is the bytes of ``k`` not already on
   ``r`` (at the median link's rate), plus the horizon's worth of the time by
   which ``k``'s work exceeds ``r``'s capacity (a part sized for a fast rank
   does not go to a slow one).

It knows speeds, work and halo traffic, but neither link speeds nor the cost of
moving (beyond the remap), and it repartitions from scratch every time: the
reference that ``topo`` must beat.

>>> import numpy as np
>>> from hpccloud.balance.problem import Problem
>>> p = Problem.uniform(work_units=np.ones(8), owners=np.zeros(8, int), speed_units_per_s=[1.0, 1.0])
>>> owners = metis_owners(p, horizon_steps=10)
>>> sorted(np.bincount(owners, minlength=2).tolist())
[4, 4]
"""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy.optimize import linear_sum_assignment

from hpccloud.balance.bound import fractional_bound_s, group_targets, residency_rules
from hpccloud.balance.problem import Problem

#: integer scale of METIS's vertex and edge weights (METIS takes integers)
WEIGHT_SCALE = 1000
#: up to this many parts the remap is the exact assignment (k × k costs, O(k³)); above, a greedy
#: on the parts' shared bytes (a 131 072² cost matrix would be 137 GB)
EXACT_REMAP_MAX_PARTS = 2048
#: a part whose target is below this many average vertices is left empty: METIS's recursive
#: bisection (on the coarsened graph) cannot fill it and prints "Cannot bisect a graph with 0
#: vertices" / "too many parts" on the job's stdout (a rank at 2 % of the speed, 48 shards)
MIN_PART_VERTICES = 2.0


def _int_weights(x: np.ndarray) -> np.ndarray:
    """Scale non-negative floats to integers in ``1..WEIGHT_SCALE`` (METIS wants ints; 0 confuses it)."""
    top = float(x.max()) if x.size else 0.0
    if top <= 0:
        return np.ones(x.shape, np.int64)
    return np.maximum(np.rint(x / top * WEIGHT_SCALE), 1).astype(np.int64)


def _csr(n: int, u: np.ndarray, v: np.ndarray, weight: np.ndarray):
    """Both directions of undirected edges ``(u, v)`` as CSR: ``(indptr, neighbour, weight)``."""
    src = np.concatenate([u, v])
    order = np.argsort(src, kind="stable")
    nbr = np.concatenate([v, u])[order]
    w = np.concatenate([weight, weight])[order]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n))])
    return indptr.astype(np.int64), nbr.astype(np.int64), w


def partition(work_units: np.ndarray, edges: tuple[np.ndarray, np.ndarray, np.ndarray],
              part_fraction: np.ndarray) -> np.ndarray:
    """METIS k-way parts (int64 [n]) of a graph: vertex weights ``work_units``, edges ``(u, v, bytes)``.

    ``part_fraction`` [k] is each part's target share of the total work.
    """
    import pymetis  # a planner dependency only: imported where used

    n = int(work_units.shape[0])
    k = int(part_fraction.shape[0])
    if k <= 1 or n == 0:
        return np.zeros(n, np.int64)
    if n <= k:
        # no more vertices than parts: one each, the largest targets first
        return np.argsort(-part_fraction, kind="stable")[:n].astype(np.int64)
    frac = part_fraction / part_fraction.sum()
    keep = np.flatnonzero(frac * n >= MIN_PART_VERTICES)
    if keep.size == 0:
        # every part is below the floor (fewer than 2 vertices per part: 7 shards on 4 equal
        # ranks): as many parts as the vertices fill, largest targets first. Keeping only the
        # largest, as before, put all 7 shards on one rank (makespan 7 where 2 was possible)
        keep = np.sort(np.argsort(-frac, kind="stable")[:max(1, int(n // MIN_PART_VERTICES))])
    if keep.size < k:  # parts too small to fill stay empty; the others share their targets
        return keep[partition(work_units, edges, frac[keep])]
    u, v, nbytes = edges
    indptr, nbr, w = _csr(n, u, v, nbytes)
    tp = frac.tolist()
    tp[-1] = max(0.0, 1.0 - sum(tp[:-1]))  # pymetis wants a sum of exactly 1 (to 1e-12)
    _, parts = pymetis.part_graph(
        k, pymetis.CSRAdjacency(indptr, nbr), vweights=_int_weights(work_units),
        eweights=_int_weights(w) if w.size else None, tpwgts=tp, options=pymetis.Options(seed=0))
    return np.asarray(parts, dtype=np.int64)


def remap(parts: np.ndarray, owners: np.ndarray, ranks: np.ndarray, capacity_units: np.ndarray,
          work_units: np.ndarray, nbytes: np.ndarray, speed_units_per_s: np.ndarray,
          inv_beta_s_per_byte: float, horizon_steps: int) -> np.ndarray:
    """Rank of every part (int64 [k]): the scratch-remap assignment (see the module notes).

    Part ``j`` was sized for ``ranks[j]``'s ``capacity_units``; giving part ``i`` to
    ``ranks[j]`` costs the bytes of ``i`` not already there (at ``inv_beta_s_per_byte``)
    and, over the horizon, the time by which ``i``'s work exceeds ``ranks[j]``'s capacity.
    """
    k = ranks.size
    local = np.full(int(max(owners.max(initial=0), ranks.max(initial=0))) + 1, k, np.int64)
    local[ranks] = np.arange(k)
    at = local[owners]  # k = "a rank outside this set"
    if k > EXACT_REMAP_MAX_PARTS:
        return ranks[_greedy_remap(parts, at, k, capacity_units, work_units, nbytes)]
    overlap = np.bincount(parts * (k + 1) + at, weights=nbytes, minlength=k * (k + 1)).reshape(k, k + 1)
    part_bytes = overlap.sum(axis=1)
    move_s = (part_bytes[:, None] - overlap[:, :k]) * inv_beta_s_per_byte
    part_work = np.bincount(parts, weights=work_units, minlength=k)
    over_s = (np.maximum(part_work[:, None] - capacity_units[None, :], 0.0)
              / speed_units_per_s[ranks][None, :] * horizon_steps)
    rows, cols = linear_sum_assignment(move_s + over_s)
    rank_of_part = np.empty(k, np.int64)
    rank_of_part[rows] = ranks[cols]
    return rank_of_part


def _greedy_remap(parts: np.ndarray, at: np.ndarray, k: int, capacity_units: np.ndarray,
                  work_units: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
    """Local index of the rank of every part, without a k × k matrix (issue 16: k up to 1.3·10^5).

    The (part, rank) pairs that share data, largest shared bytes first, each
    taken when both are still free and the rank has at least 95 % of the
    capacity the part was sized for; the parts left go to the ranks left,
    largest work to largest capacity. O(S log S) time, O(S + k) memory.
    """
    key = parts * (k + 1) + at
    uniq, inv = np.unique(key, return_inverse=True)
    shared = np.bincount(inv.reshape(-1), weights=nbytes.astype(np.float64), minlength=uniq.size)
    part_of, rank_of = np.divmod(uniq, k + 1)
    keep = rank_of < k
    part_of, rank_of, shared = part_of[keep], rank_of[keep], shared[keep]
    order = np.argsort(-shared, kind="stable")
    part_work = np.bincount(parts, weights=work_units, minlength=k)
    return _greedy_assign(part_of[order], rank_of[order], part_work, np.asarray(capacity_units, np.float64), k)


@njit(cache=True, nogil=True)
def _greedy_assign(pair_part, pair_rank, part_work, capacity, k):  # pragma: no cover - compiled
    out = np.full(k, -1, np.int64)
    taken = np.zeros(k, np.bool_)
    for q in range(pair_part.size):
        i = pair_part[q]
        j = pair_rank[q]
        # part i was sized for rank i's capacity: keep it off ranks clearly slower than that
        if out[i] < 0 and not taken[j] and capacity[j] >= 0.95 * capacity[i]:
            out[i] = j
            taken[j] = True
    free_parts = np.flatnonzero(out < 0)
    free_ranks = np.flatnonzero(~taken)
    fp = free_parts[np.argsort(-part_work[free_parts], kind="mergesort")]
    fr = free_ranks[np.argsort(-capacity[free_ranks], kind="mergesort")]
    for q in range(fp.size):
        out[fp[q]] = fr[q]
    return out


def repair_residency(p: Problem, owners: np.ndarray) -> np.ndarray:
    """Move every shard placed where its class may not live to an allowed rank (a copy).

    Each goes to the least-loaded allowed rank among its halo neighbours' ranks,
    or, if none is allowed, among all allowed ranks (loads in seconds of compute).
    """
    owners = np.array(owners, dtype=np.int64, copy=True)
    bad = np.flatnonzero(~p.allowed[p.class_id, owners])
    if bad.size == 0:
        return owners
    v = p.speed_units_per_s
    load = np.bincount(owners, weights=p.work_units, minlength=p.n_ranks) / v
    indptr, nbr, _ = p.adjacency
    for s in bad.tolist():
        ok = p.allowed[p.class_id[s]]
        near = np.unique(owners[nbr[indptr[s]:indptr[s + 1]]])
        near = near[ok[near]]
        pool = near if near.size else np.flatnonzero(ok)
        r = int(pool[np.argmin(load[pool])])
        w = p.work_units[s]
        load[owners[s]] -= w / v[owners[s]]
        load[r] += w / v[r]
        owners[s] = r
    return owners


def rule_capacities(p: Problem) -> tuple[np.ndarray, np.ndarray]:
    """``(rule_of_shard [S], capacity [M, P])``: the work units of each residency rule per rank.

    The rule × group work comes from the lower bound's transportation LP
    (:func:`~hpccloud.balance.bound.group_targets`: meets T* and moves the least
    work); inside a group a rule's share splits in proportion to measured speed.
    Residency holds by construction: a rule only gets capacity in groups it may use.
    """
    rule_of_class, rule_groups, rule_work, group_speed, group_of_rank = residency_rules(p)
    M, K = rule_groups.shape
    rule_of_shard = rule_of_class[p.class_id]
    if M == 1:
        target = np.where(rule_groups, group_speed, 0.0)
        target = rule_work[:, None] * target / target.sum()
    else:
        current = np.bincount(rule_of_shard * K + group_of_rank[p.owners], weights=p.work_units,
                              minlength=M * K).reshape(M, K)
        t_star = fractional_bound_s(rule_groups, rule_work, group_speed)
        target = group_targets(rule_groups, rule_work, group_speed, current, t_star)
    v = p.speed_units_per_s
    capacity = target[:, group_of_rank] * (v / group_speed[group_of_rank])[None, :]
    return rule_of_shard, capacity


def _median_inv_beta(p: Problem) -> float:
    """Median 1/β over ordered rank pairs (every pair up to 64 ranks, else a fixed sample)."""
    P = p.n_ranks
    if P <= 64:
        src, dst = np.nonzero(~np.eye(P, dtype=bool))
    else:
        rng = np.random.default_rng(0)
        src = rng.integers(0, P, 4096)
        dst = (src + rng.integers(1, P, 4096)) % P
    return float(np.median(p.link_terms(src, dst)[1]))


def metis_owners(p: Problem, *, horizon_steps: int) -> np.ndarray:
    """New owners of ``p``'s shards by the scratch-remap scheme (int64 [S]; residency kept).

    Shards of one residency rule (classes allowed in the same groups) are
    partitioned together over the ranks that rule may use, with targets from
    :func:`rule_capacities`; with no residency limits that is one METIS call over all ranks.
    """
    P = p.n_ranks
    owners = np.array(p.owners, dtype=np.int64, copy=True)
    if P == 1 or p.n_shards == 0:
        return owners
    inv_beta = _median_inv_beta(p)
    rule_of_shard, capacity = rule_capacities(p)
    for m in range(capacity.shape[0]):
        idx = np.flatnonzero(rule_of_shard == m)
        ranks = np.flatnonzero(capacity[m] > 1e-12 * max(float(capacity[m].max()), 1e-300))
        if idx.size == 0 or ranks.size == 0:
            continue
        local = np.full(p.n_shards, -1, np.int64)
        local[idx] = np.arange(idx.size)
        lu, lv = local[p.edge_u], local[p.edge_v]
        inside = (lu >= 0) & (lv >= 0)
        edges = (lu[inside], lv[inside], p.edge_bytes[inside])
        cap = capacity[m, ranks]
        parts = partition(p.work_units[idx], edges, cap / cap.sum())
        rank_of_part = remap(parts, p.owners[idx], ranks, cap, p.work_units[idx], p.nbytes_f64[idx],
                             p.speed_units_per_s, inv_beta, horizon_steps)
        owners[idx] = rank_of_part[parts]
    return repair_residency(p, owners)  # a no-op unless a rule got no capacity (all-zero work)
