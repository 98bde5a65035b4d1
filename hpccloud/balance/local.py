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
  ``a``, ``b`` and every third rank whose cut edges change;
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
            candidates: int = MAX_CANDIDATES) -> np.ndarray:
    """Return a copy of ``owners`` after at most ``max_moves`` makespan-lowering moves.

    Parameters
    ----------
    p : the problem (its residency rules and links; its own ``owners`` are not used).
    owners : int64 [S] the map to improve.
    loads_s : float64 [P] the model's per-rank loads of ``owners`` (``model.loads_s``).
    max_moves : cap on accepted moves.
    candidates : boundary shards of the busiest rank priced per step.
    """
    owners = np.array(owners, dtype=np.int64, copy=True)
    P = p.n_ranks
    if max_moves <= 0 or P < 2 or p.edge_u.size == 0:
        return owners
    indptr, nbr, edge = p.adjacency
    terms = p.links.scalar_terms
    ebytes = p.edge_bytes
    allowed = p.allowed
    cls = p.class_id
    w = p.work_units
    inv_v = (1.0 / p.speed_units_per_s).tolist()
    load = [float(x) for x in loads_s]

    def halo_cost(x: int, y: int, e: int) -> float:
        n = ebytes[e]
        a_xy, i_xy = terms(x, y)
        a_yx, i_yx = terms(y, x)
        return max(a_xy + n * i_xy, a_yx + n * i_yx)

    # boundary shards per rank, from the cut edges (extended as moves create new ones)
    ou, ov = owners[p.edge_u], owners[p.edge_v]
    cut = ou != ov
    ends = np.concatenate([p.edge_u[cut], p.edge_v[cut]])
    end_owner = owners[ends]
    order = np.argsort(end_owner, kind="stable")
    ends, end_owner = ends[order], end_owner[order]
    start = np.searchsorted(end_owner, np.arange(P + 1))
    extra: dict[int, list[int]] = {}

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
        top = load[a]
        limit = top * (1.0 - 1e-12)
        best = None  # (new max over touched ranks, s, b, delta)
        for s in boundary_of(a)[:candidates]:
            lo, hi = indptr[s], indptr[s + 1]
            nb_owner = owners[nbr[lo:hi]].tolist()
            es = edge[lo:hi].tolist()
            ws = w[s]
            for b in set(nb_owner):
                if b == a or not allowed[cls[s], b]:
                    continue
                delta = {a: -ws * inv_v[a], b: ws * inv_v[b]}
                for o, e in zip(nb_owner, es, strict=True):
                    if o != a:  # edge (a, o) was cut: a and o stop paying it
                        c = halo_cost(a, o, e)
                        delta[a] -= c
                        delta[o] = delta.get(o, 0.0) - c
                    if o != b:  # edge (b, o) is cut now
                        c = halo_cost(b, o, e)
                        delta[b] += c
                        delta[o] = delta.get(o, 0.0) + c
                worst = max(load[r] + d for r, d in delta.items())
                if worst < limit and (best is None or worst < best[0]):
                    best = (worst, s, b, delta)
        if best is None:
            break  # no single move from the busiest rank lowers it
        _, s, b, delta = best
        owners[s] = b
        moves += 1
        for r, d in delta.items():
            load[r] += d
            heapq.heappush(heap, (-load[r], r))
        # s's neighbours left on a are now on the boundary of a; s is on b's
        lo, hi = indptr[s], indptr[s + 1]
        extra.setdefault(a, []).extend(int(t) for t in nbr[lo:hi] if owners[t] == a)
        extra.setdefault(b, []).append(int(s))
    return owners
