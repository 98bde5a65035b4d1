"""A bounded, cut-aware local search that lowers the makespan one boundary shard at a time.

``topo``'s bulk step (``planners._rebalance``) hits per-rank *targets*; with whole
shards the busiest ranks end up a shard or so above them, and halo time the
targets could only estimate. This pass finishes the job on the exact model:

* take the most loaded rank ``a`` (a lazy max-heap over rank loads);
* try its **boundary** shards (those with a halo neighbour on another rank) and,
  for each, every rank ``b`` that holds one of its neighbours and may hold its
  data class — moving a shard next to its neighbours never adds a cut edge
  towards ``b``, so halo traffic stays low and blocks stay contiguous;
* price the move exactly: compute on ``a`` and ``b``, and the halo time of
  ``a``, ``b`` and every third rank whose cut edges change — halo as it runs
  (``model.halo_s``: the largest latency of a rank's cut edges plus the sum of
  their transfer times; each rank's latencies are kept as a multiset so the
  new maximum is exact);
* apply the best move if every rank it touches ends below ``a``'s old load,
  else stop: the makespan cannot drop by a single move from the busiest rank.

Every accepted move lowers the sorted load vector lexicographically, so the
search cannot cycle; it is also capped at ``max_moves``. A map the search leaves
alone is one it would leave alone again, which is what makes ``topo``
idempotent on its own output.

>>> import numpy as np
>>> from hpccloud.balance.problem import Problem
>>> from hpccloud.balance.model import loads_s
>>> p = Problem.uniform(work_units=np.ones(6), owners=[0, 0, 0, 0, 1, 1], speed_units_per_s=[1.0, 1.0],
...                     alpha_s=0.0, beta_bytes_per_s=1e12)
>>> owners = improve(p, p.owners, loads_s(p, p.owners), max_moves=10)
>>> owners.tolist()
[0, 0, 0, 1, 1, 1]
"""

from __future__ import annotations

import heapq

import numpy as np

from hpccloud.balance.problem import Problem

#: boundary shards of the busiest rank priced per step (bounds the cost on scattered maps)
MAX_CANDIDATES = 16


def improve(p: Problem, owners: np.ndarray, loads_s: np.ndarray, *, max_moves: int,
            candidates: int = MAX_CANDIDATES, compute_scale: float = 1.0, halo_scale: float = 1.0,
            per_shard_s: float = 0.0,
            cut: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Return a copy of ``owners`` after at most ``max_moves`` makespan-lowering moves.

    Parameters
    ----------
    p : the problem (its residency rules and links; its own ``owners`` are not used).
    owners : int64 [S] the map to improve.
    loads_s : float64 [P] the model's per-rank loads of ``owners`` (``model.loads_s``).
    max_moves : cap on accepted moves.
    candidates : boundary shards of the busiest rank priced per step.
    compute_scale, halo_scale, per_shard_s : the calibrated step terms
        (:class:`~hpccloud.balance.calibration.Calibration`); ``loads_s`` must be priced the same way.
    cut : ``model.cut_edges(p, owners)`` if the caller has it already (saves a pass over the edges).

    The search touches a few hundred ranks even at 10^5 ranks, so the per-rank state
    (latency multisets, the max-heap of loads) is built only for the ranks it reaches:
    O(E) numpy work up front, no Python work per rank.
    """
    owners = np.array(owners, dtype=np.int64, copy=True)
    P = p.n_ranks
    if max_moves <= 0 or P < 2 or p.edge_u.size == 0:
        return owners
    indptr, nbr, edge = p.adjacency
    ebytes = p.edge_bytes
    allowed = p.allowed
    cls = p.class_id
    w = p.work_units
    inv_v = (compute_scale / p.speed_units_per_s).tolist()
    neg_load = -np.asarray(loads_s, dtype=np.float64)
    load = (-neg_load).tolist()

    pair_terms = p.links.scalar_terms
    pair_cache: dict[tuple[int, int], tuple[float, float]] = {}

    def terms(x: int, y: int, nbytes: float) -> tuple[float, float]:
        # (latency, transfer) of a cut edge, as in model.edge_halo_terms, scaled; the link
        # figures of each rank pair looked up once
        xy = pair_cache.get((x, y))
        if xy is None:
            a_xy, i_xy = pair_terms(x, y)
            a_yx, i_yx = pair_terms(y, x)
            xy = pair_cache[(x, y)] = (halo_scale * max(a_xy, a_yx), max(i_xy, i_yx))
        return xy[0], halo_scale * nbytes * xy[1]

    # the cut edges' ends grouped by rank: boundary shards per rank (extended as moves
    # create new ones) and the latency of each end's edge
    if cut is None:
        cut_idx = np.flatnonzero(owners[p.edge_u] != owners[p.edge_v])
        xs, ys = owners[p.edge_u[cut_idx]], owners[p.edge_v[cut_idx]]
    else:
        xs, ys, cut_idx = cut
    ends = np.concatenate([p.edge_u[cut_idx], p.edge_v[cut_idx]])
    end_owner = np.concatenate([xs, ys])
    a_xy, _ = p.link_terms(xs, ys)
    a_yx, _ = p.link_terms(ys, xs)
    lat = halo_scale * np.maximum(a_xy, a_yx)
    order = np.argsort(end_owner, kind="stable")
    ends = ends[order]
    end_lat = np.concatenate([lat, lat])[order].tolist()
    start = np.searchsorted(end_owner[order], np.arange(P + 1)).tolist()
    extra: dict[int, list[int]] = {}
    # halo as it runs: H_r = max latency + Σ transfer; the latencies of a rank's cut edges
    # as a multiset, so a move can price the new maximum exactly (made on a rank's first touch)
    lat_count: dict[int, dict[float, int]] = {}
    top: dict[int, float] = {}

    def counts_of(r: int) -> dict[float, int]:
        counts = lat_count.get(r)
        if counts is None:
            counts = lat_count[r] = {}
            for lt in end_lat[start[r]:start[r + 1]]:
                counts[lt] = counts.get(lt, 0) + 1
            top[r] = max(counts) if counts else 0.0
        return counts

    def new_top(r: int, gone: list[float], added: list[float]) -> float:
        counts = counts_of(r)
        t = top[r]
        if gone and t in gone and gone.count(t) >= counts.get(t, 0):
            left = [k for k, c in counts.items() if c - gone.count(k) > 0]
            t = max(left) if left else 0.0
        return max(t, max(added)) if added else t

    allowed_rows: dict[int, list[bool]] = {}

    def allowed_of(c: int) -> list[bool]:
        row = allowed_rows.get(c)
        if row is None:
            row = allowed_rows[c] = allowed[c].tolist()
        return row

    def boundary_of(a: int) -> list[int]:
        seen = dict.fromkeys(ends[start[a]:start[a + 1]].tolist())
        seen.update(dict.fromkeys(extra.get(a, ())))
        return [s for s in seen if owners[s] == a]

    # a max-heap of (-load, rank): the ranks in initial load order (a sorted list is a
    # heap already consumed in order) merged with a heap of the loads moves change
    by_load = np.argsort(neg_load, kind="stable")  # ties: lower rank first, as (-load, rank) tuples
    init_neg, init_rank = neg_load[by_load].tolist(), by_load.tolist()
    nxt = 0
    heap: list[tuple[float, int]] = []
    moves = 0
    while moves < max_moves and (heap or nxt < P):
        if nxt < P and (not heap or (init_neg[nxt], init_rank[nxt]) < heap[0]):
            neg, a = init_neg[nxt], init_rank[nxt]
            from_init = True
        else:
            neg, a = heap[0]
            from_init = False
        if -neg != load[a]:  # stale entry
            if from_init:
                nxt += 1
            else:
                heapq.heappop(heap)
            continue
        top_load = load[a]
        limit = top_load * (1.0 - 1e-12)
        best = None  # (new max over touched ranks, s, b, delta, latency changes)
        for s in boundary_of(a)[:candidates]:
            lo, hi = indptr[s], indptr[s + 1]
            nb_owner = owners[nbr[lo:hi]].tolist()
            eb = ebytes[edge[lo:hi]].tolist()
            ws = float(w[s])  # Python floats: the same doubles, faster arithmetic than numpy scalars
            ok = allowed_of(int(cls[s]))
            for b in set(nb_owner):
                if b == a or not ok[b]:
                    continue
                delta = {a: -ws * inv_v[a] - per_shard_s, b: ws * inv_v[b] + per_shard_s}
                gone: dict[int, list[float]] = {}
                added: dict[int, list[float]] = {}
                for o, n_e in zip(nb_owner, eb, strict=True):
                    if o != a:  # edge (a, o) was cut: a and o stop paying it
                        lt, xf = terms(a, o, n_e)
                        delta[a] -= xf
                        delta[o] = delta.get(o, 0.0) - xf
                        gone.setdefault(a, []).append(lt)
                        gone.setdefault(o, []).append(lt)
                    if o != b:  # edge (b, o) is cut now
                        lt, xf = terms(b, o, n_e)
                        delta[b] += xf
                        delta[o] = delta.get(o, 0.0) + xf
                        added.setdefault(b, []).append(lt)
                        added.setdefault(o, []).append(lt)
                for r in set(gone) | set(added):
                    delta[r] = delta.get(r, 0.0) + new_top(r, gone.get(r, []), added.get(r, [])) - top[r]
                worst = max(load[r] + d for r, d in delta.items())
                if worst < limit and (best is None or worst < best[0]):
                    best = (worst, s, b, delta, gone, added)
        if best is None:
            break  # no single move from the busiest rank lowers it
        _, s, b, delta, gone, added = best
        owners[s] = b
        moves += 1
        for r in set(gone) | set(added):
            counts = counts_of(r)
            for lt in gone.get(r, ()):
                counts[lt] -= 1
                if counts[lt] == 0:
                    del counts[lt]
            for lt in added.get(r, ()):
                counts[lt] = counts.get(lt, 0) + 1
            top[r] = max(counts) if counts else 0.0
        for r, d in delta.items():
            load[r] += d
            heapq.heappush(heap, (-load[r], r))
        # s's neighbours left on a are now on the boundary of a; s is on b's
        lo, hi = indptr[s], indptr[s + 1]
        extra.setdefault(a, []).extend(int(t) for t in nbr[lo:hi] if owners[t] == a)
        extra.setdefault(b, []).append(int(s))
    return owners
