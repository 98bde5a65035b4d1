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
            per_shard_s: float = 0.0) -> np.ndarray:
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
    load = [float(x) for x in loads_s]

    pair_terms = p.links.scalar_terms

    def terms(x: int, y: int, e: int) -> tuple[float, float]:
        # (latency, transfer) of a cut edge, as in model.edge_halo_terms, scaled
        a_xy, i_xy = pair_terms(x, y)
        a_yx, i_yx = pair_terms(y, x)
        return (halo_scale * max(a_xy, a_yx), halo_scale * ebytes[e] * max(i_xy, i_yx))

    # boundary shards per rank, from the cut edges (extended as moves create new ones)
    ou, ov = owners[p.edge_u], owners[p.edge_v]
    cut = ou != ov
    ends = np.concatenate([p.edge_u[cut], p.edge_v[cut]])
    end_owner = owners[ends]
    order = np.argsort(end_owner, kind="stable")
    ends, end_owner = ends[order], end_owner[order]
    start = np.searchsorted(end_owner, np.arange(P + 1))
    extra: dict[int, list[int]] = {}
    # halo as it runs: H_r = max latency + Σ transfer; the latencies of each rank's cut
    # edges as a multiset, so a move can price the new maximum exactly
    # (built vectorised: at 10^5 ranks there are ~3·10^5 cut edges, ~7 s as a Python loop)
    lat_count: list[dict[float, int]] = [{} for _ in range(P)]
    xs, ys = ou[cut], ov[cut]
    a_xy, _ = p.link_terms(xs, ys)
    a_yx, _ = p.link_terms(ys, xs)
    lat = halo_scale * np.maximum(a_xy, a_yx)
    end_rank = np.concatenate([xs, ys])
    end_lat = np.concatenate([lat, lat])
    if end_rank.size:
        order_rl = np.lexsort((end_lat, end_rank))
        rk, lv = end_rank[order_rl], end_lat[order_rl]
        first = np.flatnonzero(np.concatenate([[True], (rk[1:] != rk[:-1]) | (lv[1:] != lv[:-1])]))
        runs = np.diff(np.concatenate([first, [rk.size]]))
        for r, lt, c in zip(rk[first].tolist(), lv[first].tolist(), runs.tolist(), strict=True):
            lat_count[r][lt] = c
    top_arr = np.zeros(P)
    np.maximum.at(top_arr, end_rank, end_lat)
    top = top_arr.tolist()

    def new_top(r: int, gone: list[float], added: list[float]) -> float:
        t = top[r]
        counts = lat_count[r]
        if gone and t in gone and gone.count(t) >= counts.get(t, 0):
            left = [k for k, c in counts.items() if c - gone.count(k) > 0]
            t = max(left) if left else 0.0
        return max(t, max(added)) if added else t

    def boundary_of(a: int) -> list[int]:
        seen = dict.fromkeys(ends[start[a]:start[a + 1]].tolist())
        seen.update(dict.fromkeys(extra.get(a, ())))
        return [s for s in seen if owners[s] == a]

    heap = [(-x, r) for r, x in enumerate(load)]
    heapq.heapify(heap)
    moves = 0
    while moves < max_moves and heap:
        neg, a = heap[0]
        if -neg != load[a]:  # stale entry
            heapq.heappop(heap)
            continue
        top_load = load[a]
        limit = top_load * (1.0 - 1e-12)
        best = None  # (new max over touched ranks, s, b, delta, latency changes)
        for s in boundary_of(a)[:candidates]:
            lo, hi = indptr[s], indptr[s + 1]
            nb_owner = owners[nbr[lo:hi]].tolist()
            es = edge[lo:hi].tolist()
            ws = w[s]
            for b in set(nb_owner):
                if b == a or not allowed[cls[s], b]:
                    continue
                delta = {a: -ws * inv_v[a] - per_shard_s, b: ws * inv_v[b] + per_shard_s}
                gone: dict[int, list[float]] = {}
                added: dict[int, list[float]] = {}
                for o, e in zip(nb_owner, es, strict=True):
                    if o != a:  # edge (a, o) was cut: a and o stop paying it
                        lt, xf = terms(a, o, e)
                        delta[a] -= xf
                        delta[o] = delta.get(o, 0.0) - xf
                        gone.setdefault(a, []).append(lt)
                        gone.setdefault(o, []).append(lt)
                    if o != b:  # edge (b, o) is cut now
                        lt, xf = terms(b, o, e)
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
            counts = lat_count[r]
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
