"""Contiguous (chains-on-chains) partitions: whole shards, in space order, onto ranks in a fixed order.

``topo``'s rank step meets fractional per-rank targets and rounds at shard
boundaries; with a few shards per rank that rounding alone can cost 10–25 % of
the makespan. This module finds the *optimal* contiguous split instead: shards
in their spatial order (shard id), ranks in the order of their current blocks,
each rank taking the next run of shards; the smallest ``T`` such that every rank
``r`` finishes its run within ``T`` (``Σ w / v_r <= T``) is found by bisection,
each probe a greedy pass (a rank takes shards while they fit) — the classic
chains-on-chains partitioning, exact up to the bisection's tolerance.

Contiguous runs keep halo neighbours together, and ranks in the order of their
current blocks keep most shards where they are. Residency: the split is made
per rank group (:attr:`Problem.groups`) over the shards already assigned to
that group, so no shard leaves the group it was given.

>>> import numpy as np
>>> from hpccloud.balance.problem import Problem
>>> p = Problem.uniform(work_units=np.ones(9), owners=np.repeat([0, 1, 2], 3), speed_units_per_s=[1.0, 2.0, 1.0])
>>> chain_owners(p, p.owners).tolist()   # T = 2.5 s: runs of 2, 5 and 2 shards (T = 2.25 fits only 8)
[0, 0, 1, 1, 1, 1, 1, 2, 2]
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hpccloud.balance.problem import Problem

#: bisection steps at most (they stop at a relative width of 1e-9)
BISECTIONS = 60


@njit(cache=True, nogil=True)
def _greedy_ends(prefix, cap, T, ends):  # pragma: no cover - compiled
    # one greedy pass at time T: each rank takes the longest run that fits; True if all fit
    n = prefix.size - 1
    start = 0
    for i in range(cap.size):
        limit = prefix[start] + T * cap[i] * (1 + 1e-12)
        end = np.searchsorted(prefix, limit, side="right") - 1
        if end > start:
            start = end
        ends[i] = start
    return start >= n


@njit(cache=True, nogil=True)
def _bisect(prefix, cap, lo, hi, steps, ends):  # pragma: no cover - compiled
    best = ends.copy()
    _greedy_ends(prefix, cap, hi, best)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if _greedy_ends(prefix, cap, mid, ends):
            hi = mid
            best[:] = ends
        else:
            lo = mid
        if hi - lo <= 1e-9 * hi:
            break
    return best


def chain_split(work_units: np.ndarray, speed_units_per_s: np.ndarray) -> np.ndarray:
    """Index of the rank (0..k-1, in the given order) of every shard: the optimal contiguous split."""
    n, k = work_units.size, speed_units_per_s.size
    if n == 0 or k == 1:
        return np.zeros(n, np.int64)
    prefix = np.concatenate([[0.0], np.cumsum(work_units, dtype=np.float64)])
    v = np.ascontiguousarray(speed_units_per_s, dtype=np.float64)
    lo = max(float(prefix[-1] / v.sum()), float(work_units.max() / v.max()))
    # the fastest rank alone could not take everything if it sat in the middle: a safe upper end
    hi = float(prefix[-1] / v.min()) * (1 + 1e-9) + 1e-300
    best = _bisect(prefix, v, lo, hi, BISECTIONS, np.zeros(k, np.int64))
    starts = np.concatenate([[0], best[:-1]])
    return np.repeat(np.arange(k), best - starts)


def chain_owners(p: Problem, owners: np.ndarray) -> np.ndarray:
    """New owners: in every rank group, its shards (by ``owners``' groups) split optimally into runs.

    Ranks take runs in the order of the mean position of the shards they hold now
    (ranks holding none go last, by speed), so boundaries shift rather than jump.
    """
    group_of_rank, _ = p.groups
    S, P = p.n_shards, p.n_ranks
    pos = np.arange(S, dtype=np.float64)
    count = np.bincount(owners, minlength=P)
    centre = np.where(count > 0, np.bincount(owners, weights=pos, minlength=P) / np.maximum(count, 1), np.inf)
    shard_group = group_of_rank[owners]
    out = np.array(owners, dtype=np.int64, copy=True)
    for g in np.unique(shard_group).tolist():
        ranks = np.flatnonzero(group_of_rank == g)
        ranks = ranks[np.lexsort((-p.speed_units_per_s[ranks], centre[ranks]))]
        shards = np.flatnonzero(shard_group == g)  # already in space order
        out[shards] = ranks[chain_split(p.work_units[shards], p.speed_units_per_s[ranks])]
    return out
