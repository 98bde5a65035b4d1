"""The cost model: per-rank load, makespan, migration-schedule time, resource cost.

All formulas are those of the design notes (``docs/architecture.md``, "The models"):

* link (Hockney): ``t_ij(n) = α_ij + n / β_ij``; 0 when ``i == j``; α and β come from
  the problem's level table (:meth:`Problem.link_terms`), never a rank × rank matrix;
* load: ``L_r = Σ_{s on r} w_s / v_r + H_r``, where a cut edge ``e`` between
  shards on ranks ``i`` and ``j`` exchanges ``halo_bytes`` each way per step; the
  two directions run at once (full duplex). A rank posts all its halo messages
  together (``comm.halo``: every ``Irecv``/``Isend`` at once, one ``Waitall``), so
  their latencies overlap and their bytes share the link:
  ``H_r = max_{e∋r} α_e + Σ_{e∋r} n_e / β_e`` with ``α_e = max(α_ij, α_ji)`` and
  ``n_e/β_e = max(n/β_ij, n/β_ji)`` (not ``Σ_e (α_e + n_e/β_e)``, which the runs
  showed to overestimate a rank with many cut edges);
* makespan ``T = max_r L_r``, imbalance ``max_r L_r / mean_r L_r``;
* migration schedule (see :func:`migration_schedule`);
* resource cost over a horizon of ``H`` steps (see :func:`resource_cost`).

Everything is vectorised over shards and edges; the migration schedule sums over
(source, destination) rank *pairs*, not shards.

>>> import numpy as np
>>> from hpccloud.balance.problem import Problem
>>> p = Problem.uniform(work_units=[1.0, 1.0, 2.0], owners=[0, 0, 1], speed_units_per_s=[1.0, 2.0],
...                     alpha_s=0.0, beta_bytes_per_s=8192.0)
>>> loads_s(p, p.owners)          # rank 0: 2 units at 1/s + one cut halo edge of 8 KiB at 8 KiB/s
array([3., 2.])
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hpccloud.balance.problem import Problem


@njit(cache=True, nogil=True)
def _rank_sums(owners, weights, n_ranks):  # pragma: no cover - compiled
    # the loop of np.bincount(owners, weights): the same order, so the same bits,
    # without bincount's per-element overhead (0.37 vs 0.46 ms at 1e5 shards here)
    acc = np.zeros(n_ranks)
    for i in range(owners.size):
        acc[owners[i]] += weights[i]
    return acc


@njit(cache=True, nogil=True)
def _cut_index(owners, u, v):  # pragma: no cover - compiled
    # np.flatnonzero(owners[u] != owners[v]) in one pass (0.16 vs 0.40 ms at 1e5 edges)
    out = np.empty(u.size, np.int64)
    k = 0
    for e in range(u.size):
        if owners[u[e]] != owners[v[e]]:
            out[k] = e
            k += 1
    return out[:k]

GB = 1e9


def compute_s(p: Problem, owners: np.ndarray) -> np.ndarray:
    """Compute time per rank and step, float64 [P]."""
    o = np.ascontiguousarray(owners, dtype=np.int64)
    return _rank_sums(o, p.work_units, p.n_ranks) / p.speed_units_per_s


def cut_edges(p: Problem, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rank_a, rank_b, edge_index)`` of the halo edges whose shards live on different ranks."""
    o = np.ascontiguousarray(owners, dtype=np.int64)
    cut = _cut_index(o, p.edge_u, p.edge_v)
    return o[p.edge_u[cut]], o[p.edge_v[cut]], cut


def halo_s(p: Problem, owners: np.ndarray,
           cut: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Halo-exchange time per rank and step, float64 [P] (see the module notes)."""
    a, b, edges = cut_edges(p, owners) if cut is None else cut
    if edges.size == 0:
        return np.zeros(p.n_ranks)
    lat, xfer = edge_halo_terms(p, a, b, edges)
    return _overlapped(a, b, lat, xfer, p.n_ranks)


def edge_halo_terms(p: Problem, a: np.ndarray, b: np.ndarray, cut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cut edge: ``(α_e, n_e/β_e)``, each the slower of the two directions (see the module notes)."""
    n = p.edge_bytes[cut]
    alpha_ab, inv_ab = p.link_terms(a, b)
    alpha_ba, inv_ba = p.link_terms(b, a)
    return np.maximum(alpha_ab, alpha_ba), n * np.maximum(inv_ab, inv_ba)


@njit(cache=True, nogil=True)
def _overlapped(a, b, lat, xfer, n_ranks):  # pragma: no cover - compiled
    # H_r = max α + Σ n/β over the cut edges of r (messages posted together)
    top = np.zeros(n_ranks)
    acc = np.zeros(n_ranks)
    for e in range(a.size):
        for r in (a[e], b[e]):
            acc[r] += xfer[e]
            if lat[e] > top[r]:
                top[r] = lat[e]
    return top + acc


def edge_time_s(p: Problem, a: np.ndarray, b: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
    """Seconds of a halo exchange of ``nbytes`` each way between ranks ``a`` and ``b`` (full duplex)."""
    alpha_ab, inv_ab = p.link_terms(a, b)
    alpha_ba, inv_ba = p.link_terms(b, a)
    return np.maximum(alpha_ab + nbytes * inv_ab, alpha_ba + nbytes * inv_ba)


def loads_s(p: Problem, owners: np.ndarray) -> np.ndarray:
    """Predicted time per step of every rank, float64 [P]."""
    return compute_s(p, owners) + halo_s(p, owners)


def imbalance(loads: np.ndarray) -> float:
    """max / mean of the per-rank loads (1.0 is perfect; 1.0 for an idle machine)."""
    mean = float(loads.mean()) if loads.size else 0.0
    return float(loads.max()) / mean if mean > 0 else 1.0


def migration_schedule(p: Problem, owners_before: np.ndarray, owners_after: np.ndarray,
                       pair_s=None) -> tuple[float, int, np.ndarray]:
    """Predicted wall time of moving shards from ``owners_before`` to ``owners_after``.

    Returns ``(seconds, bytes_moved, moved_shard_ids)``.

    The schedule: every shard going from rank ``i`` to rank ``j`` is batched into
    one (i, j) job lasting ``k·α_ij + bytes/β_ij`` (its ``k`` shards). Jobs run
    concurrently, but a rank sends one message and receives one message at a time
    (it may send and receive at once). The transport posts every message at once
    and moves them in pieces, so a job need not run in one go: the shortest such
    schedule (an open shop with preemption) lasts as long as its busiest rank,
    ``max_r max(Σ send time of r, Σ receive time of r)``, and that is the answer.

    It used to be a greedy list schedule (longest job first, each job in one go,
    starting when both its ranks were free), which leaves a rank idle while a
    job it could serve waits for its partner. On a shaped network
    (:class:`~hpccloud.testing.netns.RegionalNet`, 2+2 ranks, 100 Mbit/s and
    5 ms between regions, 1.25 and 2.5 MB shards, ``benchmarks/netns_migration_schedule.py``:
    a chain 0→2 ×3, 1→2 ×2, 1→3 ×2 and a fan-out 0→{2,3}, 1→{2,3}) the moves
    took 0.46-0.47 s and 0.89-0.91 s (medians of 3, two sessions); the list
    schedule said 0.7 and 1.4 s (+50 %), the busiest rank 0.5 / 0.4 and
    1.0 / 0.8 s; two disjoint pairs, where both models agree (0.4, 0.8 s), took
    0.45 and 0.87-0.88 s.

    ``pair_s(src, dst, calls, bytes)`` (arrays over the (i, j) jobs) replaces the
    Hockney duration, e.g. :meth:`Calibration.pair_s
    <hpccloud.balance.calibration.Calibration.pair_s>` with the transport's
    achieved throughput per route.
    """
    moved = np.flatnonzero(owners_before != owners_after)
    if moved.size == 0:
        return 0.0, 0, moved
    P = p.n_ranks
    # moved shards come in runs with one (src, dst) (blocks move together): the unique pairs
    # of the runs, not of every shard. Byte counts are integers, so the sums are exact in any order.
    run_pair, run_count, run_bytes = _pair_runs(moved, np.ascontiguousarray(owners_before, dtype=np.int64),
                                                np.ascontiguousarray(owners_after, dtype=np.int64),
                                                p.nbytes_f64, P)
    pair, inv = np.unique(run_pair, return_inverse=True)
    count = np.bincount(inv, weights=run_count, minlength=pair.size).astype(np.int64)
    pair_bytes = np.bincount(inv, weights=run_bytes, minlength=pair.size)
    s, d = np.divmod(pair, P)
    if pair_s is None:
        alpha, inv_beta = p.link_terms(s, d)
        dur = count * alpha + pair_bytes * inv_beta
    else:
        dur = np.asarray(pair_s(s, d, count, pair_bytes), dtype=np.float64)
    end = float(max(np.bincount(s, weights=dur, minlength=P).max(),
                    np.bincount(d, weights=dur, minlength=P).max()))
    return end, int(p.nbytes[moved].sum()), moved


@njit(cache=True, nogil=True)
def _pair_runs(moved, before, after, nbytes, n_ranks):  # pragma: no cover - compiled
    # runs of consecutive moved shards with the same src * P + dst: (key, shards, bytes) per run
    n = moved.size
    key = np.empty(n, np.int64)
    count = np.zeros(n)
    total = np.zeros(n)
    k = -1
    for i in range(n):
        s = moved[i]
        pk = before[s] * n_ranks + after[s]
        if k < 0 or pk != key[k]:
            k += 1
            key[k] = pk
        count[k] += 1.0
        total[k] += nbytes[s]
    return key[:k + 1], count[:k + 1], total[:k + 1]


def migration_lower_bound_s(p: Problem, owners_before: np.ndarray, owners_after: np.ndarray) -> float:
    """``max_r max(Σ send time, Σ receive time)``: no one-message-at-a-time schedule is shorter.

    On the links' Hockney figures this is :func:`migration_schedule` itself (its
    busiest rank); the name stays for callers that want the bound.
    """
    return migration_schedule(p, owners_before, owners_after)[0]


def resource_cost(p: Problem, owners: np.ndarray, loads: np.ndarray, horizon_steps: int,
                  owners_before: np.ndarray | None = None, moved: np.ndarray | None = None,
                  cut: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> float:
    """Money spent over ``horizon_steps`` steps (currency units of the topology's prices).

    ``Σ_r price(region(r)) × busy_r`` with ``busy_r = L_r × H`` in hours (one core
    per rank), plus egress for the halo bytes that cross regions each step, plus
    egress for the migration from ``owners_before`` (if given):
    ``Σ egress(src region → dst region) × GB``.
    Sums are ``(a * b).sum()``, not ``np.dot``: a BLAS dot may wake a thread pool that
    spins on a busy machine (16 ms for 3·10^4 elements here, against 0.05 ms).
    """
    compute = float((p.price_per_core_hour * loads).sum()) * horizon_steps / 3600.0
    egress = p.egress_per_gb
    a, b, edges = cut_edges(p, owners) if cut is None else cut
    halo = 0.0
    if edges.size:
        ga, gb = p.rank_region[a], p.rank_region[b]
        n = p.edge_bytes[edges]
        halo = float((n * (egress[ga, gb] + egress[gb, ga])).sum()) / GB * horizon_steps
    move = 0.0
    if owners_before is not None:
        if moved is None:
            moved = np.flatnonzero(owners_before != owners)
        if moved.size:
            gs, gd = p.rank_region[owners_before[moved]], p.rank_region[owners[moved]]
            move = float((p.nbytes_f64[moved] * egress[gs, gd]).sum()) / GB
    return compute + halo + move
