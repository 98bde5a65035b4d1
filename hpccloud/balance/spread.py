"""Spread the slow receptions of a plan over the receiving group's ranks.

``topo`` sends surplus work across groups as contiguous runs of shards (halo
neighbours stay together), and the rank step hands each run to the receiving
group's ranks nearest to it in space. A run of *k* shards then lands on one or
two ranks, which receive its *k* messages one after another over the slowest
links of the plan: on ``hpccloud simulate``'s hetero-speed machine (16 regions,
1 ms and 1.25 GB/s between regions, 8 MiB shards) one rank received 19 of them,
0.13 s of a 0.13 s migration — enough that the plan which stays inside the
groups (1.14 × T*) beat the one that crosses them (1.04 × T*) over the horizon.

This pass swaps, keeping every rank's work and every shard's group:

* the rank ``r`` that receives the most slow (cross-group) time gives one of
  its incoming cross-group shards ``f`` to another rank ``q`` of the same group,
  the nearest one (in rank order) that would then still finish its receptions
  earlier than ``r`` does now;
* in exchange ``r`` takes one of ``q``'s staying shards ``g`` of the same work —
  a move inside the group, over a fast link.

A swap is kept only if ``r``, ``q`` and ``q``'s sends all end below ``r``'s old
reception time, so the busiest receiver's time drops with every swap and the
pass ends. Only shards whose halo neighbours all lie in the receiving group
(after the plan) are swapped: the shard at a run's end, next to the group it
came from, stays where it is, so no rank gains a slow halo edge. Within a
group every shard may live on every rank (:attr:`Problem.groups
<hpccloud.balance.problem.Problem.groups>`), so residency holds by construction.

The caller prices the result on the full model (halo included) and keeps it
only if the total over the horizon drops. The model prices each rank pair's
link on its own: spreading assumes that several concurrent streams between two
regions each get their measured rate (true of TCP streams over a long link up
to the link's capacity, which the model does not know).

>>> import numpy as np
>>> from hpccloud.balance.problem import Problem
>>> from hpccloud.measure.levels import LinkTable
>>> region = np.array([0, 1, 1, 1])
>>> links = LinkTable.levels(rank_region=region, rank_node=np.arange(4),
...     region_alpha_s=np.array([[1e-6, 1e-3], [1e-3, 1e-6]]),
...     region_beta_bytes_per_s=np.array([[1e10, 1e8], [1e8, 1e10]]),
...     node_alpha_s=np.full(4, 1e-6), node_beta_bytes_per_s=np.full(4, 1e10))
>>> before = np.array([0] * 6 + [1, 1, 2, 2, 3, 3])
>>> after = np.array([0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 3, 3])  # rank 0 sends three shards to rank 1
>>> p = Problem(work_units=np.ones(12), nbytes=np.full(12, 10**6), owners=before,
...             class_id=np.zeros(12, np.int64), allowed=np.ones((1, 4), bool),
...             edge_u=np.arange(11), edge_v=np.arange(1, 12), edge_bytes=np.full(11, 8.0),
...             speed_units_per_s=np.ones(4), links=links, rank_region=region, region_names=("a", "b"),
...             price_per_core_hour=np.ones(4), egress_per_gb=np.zeros((2, 2)), class_names=("public",))
>>> out = spread_receptions(p, after)  # rank 1 keeps the run's end (shard 3), passes on 4 and 5
>>> out.tolist()
[0, 0, 0, 1, 3, 2, 1, 1, 1, 1, 2, 3]
>>> [int(np.count_nonzero(out[3:6] == r)) for r in (1, 2, 3)]  # one slow reception per rank
[1, 1, 1]
>>> np.bincount(out, minlength=4).tolist() == np.bincount(after, minlength=4).tolist()  # same work
True
"""

from __future__ import annotations

import heapq

import numpy as np

from hpccloud.balance.problem import Problem

#: ranks (in rank order on either side of the busy receiver) tried as its partner
SEARCH_RANKS = 64
#: shards of a partner looked at for the exchange
SEARCH_SHARDS = 64


def spread_receptions(p: Problem, after: np.ndarray, *, pair_s=None, max_swaps: int | None = None) -> np.ndarray:
    """Return a copy of ``after`` (a plan from ``p.owners``) with cross-group receptions spread.

    ``pair_s(src, dst, calls, nbytes)`` prices one message per (src, dst) pair
    (e.g. :meth:`Calibration.pair_s <hpccloud.balance.calibration.Calibration.pair_s>`
    bound to ``p``); the links' Hockney figures without it. ``max_swaps``
    defaults to twice the number of cross-group shards.
    """
    after = np.array(after, dtype=np.int64, copy=True)
    before = p.owners
    group_of_rank, _ = p.groups
    moved = np.flatnonzero(before != after)
    cross = moved[group_of_rank[before[moved]] != group_of_rank[after[moved]]]
    if cross.size == 0:
        return after
    P = p.n_ranks
    nbytes = p.nbytes_f64

    def dur(src: np.ndarray, dst: np.ndarray, nb: np.ndarray) -> np.ndarray:
        if pair_s is None:
            alpha, inv_beta = p.link_terms(src, dst)
            return alpha + nb * inv_beta
        return np.asarray(pair_s(src, dst, np.ones(src.size), nb), dtype=np.float64)

    if pair_s is None:  # one pair at a time in the loop below: the links' scalar path
        terms = p.links.scalar_terms

        def one(src: int, dst: int, nb: float) -> float:
            alpha, inv_beta = terms(src, dst)
            return alpha + nb * inv_beta
    else:
        def one(src: int, dst: int, nb: float) -> float:
            return float(dur(np.array([src]), np.array([dst]), np.array([nb]))[0])

    d_moved = dur(before[moved], after[moved], nbytes[moved])
    recv = np.bincount(after[moved], weights=d_moved, minlength=P)
    send = np.bincount(before[moved], weights=d_moved, minlength=P)
    d_of = dict(zip(cross.tolist(), d_moved[np.searchsorted(moved, cross)].tolist(), strict=True))
    slow_in: dict[int, list[int]] = {}
    for s in cross.tolist():
        slow_in.setdefault(int(after[s]), []).append(s)

    indptr, nbr, _ = p.adjacency
    w = p.work_units
    # the candidates for g are shards that stay put: found by their owner before the plan
    # (nearly sorted: rank blocks), those whose owner is unchanged
    by_owner = np.argsort(before, kind="stable")
    start = np.searchsorted(before[by_owner], np.arange(P + 1))
    stays = before == after

    def interior(s: int, g: int) -> bool:
        # every halo neighbour of s lies in group g (after the plan)
        return bool(np.all(group_of_rank[after[nbr[indptr[s]:indptr[s + 1]]]] == g))

    limit = 2 * cross.size if max_swaps is None else max_swaps
    heap = [(-recv[r], r) for r in slow_in]
    heapq.heapify(heap)
    swaps = 0
    while heap and swaps < limit:
        neg, r = heapq.heappop(heap)
        if -neg != recv[r]:
            continue
        g_r = int(group_of_rank[r])
        t_r = float(recv[r])
        done = False
        # the slowest receptions first
        for f in sorted(slow_in.get(r, ()), key=lambda s: -d_of[s]):
            if not interior(f, g_r):
                continue
            d_f = d_of[f]
            src_f = int(before[f])
            for q in _near(r, P, SEARCH_RANKS):
                if group_of_rank[q] != g_r or recv[q] + d_f >= t_r:
                    continue
                cand = by_owner[start[q]:start[q + 1]]
                cand = cand[stays[cand] & (np.abs(w[cand] - w[f]) <= 1e-9 * abs(w[f]))][:SEARCH_SHARDS]
                if cand.size == 0:
                    continue
                # the staying shard nearest f in shard order (in space, for the usual
                # row-major shard numbering) whose neighbours all lie in the group
                g = -1
                for k in np.argsort(np.abs(cand - f), kind="stable")[:4].tolist():
                    if interior(int(cand[k]), g_r):
                        g = int(cand[k])
                        break
                if g < 0:
                    continue
                d_fq, d_g = one(src_f, q, float(nbytes[f])), one(q, r, float(nbytes[g]))
                if max(t_r - d_f + d_g, recv[q] + d_fq, send[q] + d_g) >= t_r:
                    continue
                after[f], after[g] = q, r
                stays[g] = False
                recv[r] += d_g - d_f
                recv[q] += d_fq
                send[q] += d_g
                send[src_f] += d_fq - d_f
                slow_in[r].remove(f)
                slow_in.setdefault(q, []).append(f)
                d_of[f], d_of[g] = d_fq, d_g
                swaps += 1
                done = True
                break
            if done:
                break
        if not done:
            break  # the busiest receiver keeps its time: no swap lowers the migration's bottleneck
        heapq.heappush(heap, (-recv[r], r))
        heapq.heappush(heap, (-recv[q], q))
    return after


def _near(r: int, n: int, k: int):
    """Ranks r-1, r+1, r-2, r+2, ... (up to k on each side, inside [0, n))."""
    for d in range(1, k + 1):
        if r - d >= 0:
            yield r - d
        if r + d < n:
            yield r + d
