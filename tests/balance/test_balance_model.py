"""The cost model and the lower bound against hand-computed values."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from hpccloud.balance import Problem, lower_bound_s
from hpccloud.balance.bound import lp_bound_s, residency_rules
from hpccloud.balance.model import (
    halo_s,
    loads_s,
    migration_lower_bound_s,
    migration_schedule,
    resource_cost,
)
from hpccloud.errors import InvalidArgument, ResidencyError
from hpccloud.measure.levels import LinkTable


def test_balance_package_never_imports_mpi():
    code = ("import sys, hpccloud.balance, hpccloud.balance.scenarios, hpccloud.balance.profile, "
            "hpccloud.commands.simulate, hpccloud.commands.plan\n"
            "from hpccloud.balance.scenarios import simulate\n"
            "simulate('hetero-speed', 4, 2, 40)\n"
            "assert 'mpi4py' not in sys.modules, sorted(m for m in sys.modules if 'mpi' in m)\n"
            "print('clean')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"


def two_ranks(alpha_ab=1.0, alpha_ba=3.0, beta=100.0):
    alpha = np.array([[np.nan, alpha_ab], [alpha_ba, np.nan]])
    betas = np.array([[np.nan, beta], [beta, np.nan]])
    return Problem(
        work_units=np.array([2.0, 4.0, 6.0]), nbytes=np.array([100, 200, 300]), owners=np.array([0, 0, 1]),
        class_id=np.zeros(3, np.int64), allowed=np.ones((1, 2), bool),
        edge_u=np.array([0, 1]), edge_v=np.array([1, 2]), edge_bytes=np.array([50.0, 100.0]),
        speed_units_per_s=np.array([1.0, 2.0]),
        links=LinkTable.from_dense(alpha, betas, rank_region=[0, 1], provenance="synthetic"),
        rank_region=np.array([0, 1]), region_names=("a", "b"), price_per_core_hour=np.array([3600.0, 7200.0]),
        egress_per_gb=np.array([[0.0, 1e9], [2e9, 0.0]]), class_names=("public",), provenance="synthetic")


def test_loads_compute_plus_halo_on_the_slower_direction():
    p = two_ranks()
    # only edge (1, 2) is cut: 100 bytes; 0->1: 1 + 1 = 2 s, 1->0: 3 + 1 = 4 s, both ranks wait 4 s
    assert np.allclose(halo_s(p, p.owners), [4.0, 4.0])
    assert np.allclose(loads_s(p, p.owners), [6.0 / 1.0 + 4.0, 6.0 / 2.0 + 4.0])
    # everything on rank 1: no cut edge
    assert np.allclose(loads_s(p, np.array([1, 1, 1])), [0.0, 6.0])


def test_halo_messages_posted_together_overlap_their_latencies():
    # rank 0 holds the middle of a star: 4 cut edges to ranks 1..4, α = 1 ms, n/β = 0.1 ms each
    edges = (np.zeros(4, np.int64), np.arange(1, 5), np.full(4, 1e5))
    p = Problem.uniform(work_units=np.zeros(5), owners=np.arange(5), speed_units_per_s=np.ones(5),
                        alpha_s=1e-3, beta_bytes_per_s=1e9, edges=edges)
    h = halo_s(p, p.owners)
    # max α + Σ n/β, not Σ (α + n/β) = 4.4 ms
    assert np.isclose(h[0], 1e-3 + 4 * 1e-4)
    assert np.allclose(h[1:], 1e-3 + 1e-4)


def test_local_search_prices_halo_as_the_model_does():
    from hpccloud.balance.local import improve

    rng = np.random.default_rng(3)
    for seed in range(40):
        S, P = 40, 4
        u = np.arange(S - 1)
        p = Problem.uniform(work_units=rng.uniform(0.5, 2.0, S), owners=rng.integers(0, P, S),
                            speed_units_per_s=rng.uniform(0.5, 2.0, P), alpha_s=0.05, beta_bytes_per_s=1e6,
                            edges=(u, u + 1, rng.uniform(1e3, 1e5, S - 1)))
        before = loads_s(p, p.owners)
        after = loads_s(p, improve(p, p.owners, before, max_moves=1))
        # one accepted move lowers the busiest rank, priced with the overlapped halo; no rank
        # it touched may end above the old maximum
        assert after.max() <= before.max() * (1 + 1e-12), seed


def test_migration_schedule_one_send_and_one_receive_at_a_time():
    p = two_ranks()
    # shards 0 and 1 both go 0 -> 1: one batch, 2 α + 300 bytes / 100 = 2 + 3 = 5 s
    secs, nbytes, moved = migration_schedule(p, p.owners, np.array([1, 1, 1]))
    assert (secs, nbytes, moved.tolist()) == (5.0, 300, [0, 1])
    # a swap runs both directions at once: max(1 + 1, 3 + 3) = 6 s
    secs, _, _ = migration_schedule(p, p.owners, np.array([1, 0, 0]))
    assert secs == pytest.approx(max(1 + 100 / 100 + 0, 3 + 300 / 100))
    assert migration_schedule(p, p.owners, p.owners)[0] == 0.0


def test_migration_schedule_serialises_a_busy_sender_and_parallelises_distinct_pairs():
    P = 4
    p = Problem.uniform(work_units=np.ones(4), owners=[0, 0, 2, 3], speed_units_per_s=np.ones(P),
                        nbytes=[100] * 4, alpha_s=0.0, beta_bytes_per_s=100.0)
    # rank 0 sends to 1 and to 2: one sender -> 2 s; ranks 2 -> 3 and 3 -> 1 run beside them
    after = np.array([1, 2, 3, 1])
    secs, _, _ = migration_schedule(p, p.owners, after)
    assert migration_lower_bound_s(p, p.owners, after) == pytest.approx(2.0)
    assert secs == pytest.approx(2.0)


def test_migration_lasts_as_long_as_its_busiest_rank_not_a_list_schedule():
    """A chain 0->2 x3, 1->2 x2, 1->3 x2: a greedy list schedule (longest job first, each in
    one go) keeps rank 1 idle while 1->2 waits for rank 2 (7 shard-times); the transport posts
    every message at once, and the move lasts as long as rank 2's receptions (5): measured
    0.47 s against 0.5 predicted on a shaped network (benchmarks/netns_migration_schedule.py)."""
    p = Problem.uniform(work_units=np.ones(7), owners=[0, 0, 0, 1, 1, 1, 1], speed_units_per_s=np.ones(4),
                        nbytes=[100] * 7, alpha_s=0.0, beta_bytes_per_s=100.0)
    after = np.array([2, 2, 2, 2, 2, 3, 3])
    secs, nbytes, moved = migration_schedule(p, p.owners, after)
    assert secs == pytest.approx(5.0) and nbytes == 700 and moved.tolist() == list(range(7))
    assert secs == pytest.approx(migration_lower_bound_s(p, p.owners, after))


def test_resource_cost_prices_busy_time_halo_and_migration_egress():
    p = two_ranks()
    loads = loads_s(p, p.owners)
    # compute: 3600/h × 10 s + 7200/h × 7 s = 10 + 14 = 24 per step; halo: 100 B each way across
    # a->b (1e9/GB) and b->a (2e9/GB) = 100 + 200 = 300 per step
    assert resource_cost(p, p.owners, loads, 1) == pytest.approx(24.0 + 300.0)
    assert resource_cost(p, p.owners, loads, 2) == pytest.approx(2 * 324.0)
    # migrating shard 2 (300 B) from b to a costs 300 × 2e9 / 1e9 = 600 on top
    after = np.array([0, 0, 0])
    l2 = loads_s(p, after)
    assert resource_cost(p, after, l2, 1, p.owners) == pytest.approx(12.0 / 1.0 + 0 + 600.0)


def test_lower_bound_without_residency_is_total_work_over_total_speed():
    rng = np.random.default_rng(3)
    w = rng.uniform(1, 2, 500)
    v = rng.uniform(1, 4, 16)
    p = Problem.uniform(work_units=w, owners=np.zeros(500, int), speed_units_per_s=v)
    assert lower_bound_s(p) == pytest.approx(w.sum() / v.sum())
    # one huge shard: it cannot split, so the bound is that shard on the fastest rank
    w2 = np.concatenate([w, [1e6]])
    p2 = Problem.uniform(work_units=w2, owners=np.zeros(501, int), speed_units_per_s=v)
    assert lower_bound_s(p2) == pytest.approx(1e6 / v.max())


def test_lower_bound_under_residency_matches_highs_and_hand_value():
    # class 0 (10 units) only on rank 0 (speed 1); class 1 (2 units) anywhere; rank 1 speed 1
    p = Problem.uniform(work_units=[10.0, 2.0], owners=[0, 1], speed_units_per_s=[1.0, 1.0])
    p = Problem(**{**{f: getattr(p, f) for f in p.__dataclass_fields__},
                   "class_id": np.array([0, 1]), "allowed": np.array([[True, False], [True, True]]),
                   "class_names": ("home", "public")})
    assert lower_bound_s(p) == pytest.approx(10.0)   # Σw/Σv would say 6
    _, groups, work, speed, _ = residency_rules(p)
    assert lp_bound_s(groups, work, speed) == pytest.approx(10.0)


def test_bad_problems_are_refused_with_the_reason():
    with pytest.raises(InvalidArgument, match="owners must be ranks"):
        Problem.uniform(work_units=[1.0], owners=[5], speed_units_per_s=[1.0])
    with pytest.raises(InvalidArgument, match="speed_units_per_s"):
        Problem.uniform(work_units=[1.0], owners=[0], speed_units_per_s=[0.0])
    p = Problem.uniform(work_units=[1.0, 1.0], owners=[0, 1], speed_units_per_s=[1.0, 1.0])
    # a level without any measured pair (here: the only inter-node pair of region 0, both ways)
    alpha = np.array([[np.nan, np.nan], [np.nan, np.nan]])
    unmeasured = LinkTable.from_dense(alpha, alpha, provenance="synthetic")
    with pytest.raises(InvalidArgument, match="no link of that level was measured"):
        Problem(**{**{f: getattr(p, f) for f in p.__dataclass_fields__}, "links": unmeasured})
    with pytest.raises(ResidencyError, match="may live on none"):
        Problem(**{**{f: getattr(p, f) for f in p.__dataclass_fields__},
                   "allowed": np.zeros((1, 2), bool)})
    with pytest.raises(ResidencyError, match="shard 1 of data class 'public'"):
        Problem(**{**{f: getattr(p, f) for f in p.__dataclass_fields__},
                   "allowed": np.array([[True, False]])}).check_residency(np.array([0, 1]))


def _dense_reference(p, alpha, beta, owners_after):
    """The pre-levels model on (P, P) matrices: per-rank loads and the migration's busiest rank."""
    inv = 1.0 / beta
    np.fill_diagonal(alpha, 0.0)
    np.fill_diagonal(inv, 0.0)
    o = p.owners
    loads = np.bincount(o, p.work_units, p.n_ranks) / p.speed_units_per_s
    cut = np.flatnonzero(o[p.edge_u] != o[p.edge_v])
    a, b, n = o[p.edge_u[cut]], o[p.edge_v[cut]], p.edge_bytes[cut]
    # halo as it runs: per rank, the largest latency of its cut edges + the sum of their transfers
    lat = np.maximum(alpha[a, b], alpha[b, a])
    xfer = n * np.maximum(inv[a, b], inv[b, a])
    for r in range(p.n_ranks):
        mine = (a == r) | (b == r)
        if mine.any():
            loads[r] += lat[mine].max() + xfer[mine].sum()
    moved = np.flatnonzero(o != owners_after)
    pair, k = np.unique(o[moved] * p.n_ranks + owners_after[moved], return_inverse=True)
    s, d = np.divmod(pair, p.n_ranks)
    dur = np.bincount(k, minlength=pair.size) * alpha[s, d] + np.bincount(
        k, p.nbytes[moved].astype(float), pair.size) * inv[s, d]
    send, recv = [0.0] * p.n_ranks, [0.0] * p.n_ranks
    for i in range(dur.size):  # the busiest rank's sends or receives
        send[s[i]] += dur[i]
        recv[d[i]] += dur[i]
    return loads, max(send + recv)


@pytest.mark.parametrize("seed", range(6))
def test_level_table_prices_plans_like_the_dense_model(seed):
    from balance_testutil import random_problem

    p = random_problem(seed, n_shards=60, n_ranks=7, n_regions=3, n_classes=1)
    alpha, beta = p.links.dense()
    after = np.random.default_rng(seed).integers(0, p.n_ranks, p.n_shards)
    loads, mig = _dense_reference(p, alpha.copy(), beta.copy(), after)
    np.testing.assert_allclose(loads_s(p, p.owners), loads, rtol=1e-12)
    assert migration_schedule(p, p.owners, after)[0] == pytest.approx(mig, rel=1e-12)


def test_metis_remap_above_the_exact_size_is_a_bijection_that_keeps_data():
    from hpccloud.balance import metis

    rng = np.random.default_rng(0)
    k, S = 3000, 30_000  # above EXACT_REMAP_MAX_PARTS: no k × k cost matrix
    owners = np.repeat(np.arange(k), S // k)
    perm = rng.permutation(k)
    parts = perm[owners]
    noise = rng.random(S) < 0.05
    parts[noise] = rng.integers(0, k, int(noise.sum()))
    args = (np.full(k, S / k * 1.1), np.ones(S), np.full(S, 100), np.ones(k), 1e-9, 10)
    got = metis.remap(parts, owners, np.arange(k), *args)
    assert k > metis.EXACT_REMAP_MAX_PARTS and sorted(got.tolist()) == list(range(k))
    assert np.array_equal(got[perm], np.arange(k))  # every block goes back to where its data is


@pytest.mark.parametrize("cap", [0, 1 << 20])
def test_link_terms_from_the_dense_pair_table_equal_the_level_lookup(cap, monkeypatch):
    """Below ``PAIR_TABLE_MAX_RANKS`` a problem reads its link terms from a P x P table built
    once (planning speed); above it, from the links' lookup: both give the same figures, for
    scalars and arrays, and a problem made by ``with_owners`` keeps the table."""
    from balance_testutil import random_problem

    import hpccloud.balance.problem as problem_mod

    monkeypatch.setattr(problem_mod, "PAIR_TABLE_MAX_RANKS", cap)
    p = random_problem(3, n_shards=40, n_ranks=9, n_regions=3, n_classes=2)
    rng = np.random.default_rng(1)
    src, dst = rng.integers(0, 9, 200), rng.integers(0, 9, 200)
    alpha, inv = p.link_terms(src, dst)
    ref_alpha, ref_inv = p.links.terms(src, dst)
    np.testing.assert_array_equal(alpha, ref_alpha)
    np.testing.assert_array_equal(inv, ref_inv)
    assert np.all(alpha[src == dst] == 0.0) and np.any(alpha[src != dst] > 0.0)
    for got, ref in zip(p.link_terms(2, 7), p.links.terms(2, 7), strict=True):
        assert got.shape == ref.shape and got.tolist() == ref.tolist()
    assert (p._pair_table is None) == (cap == 0)
    if cap:
        assert p.with_owners(p.owners[::-1].copy()).__dict__["_pair_table"] is p._pair_table


@pytest.mark.parametrize("seed", range(40))
def test_count_bound_is_the_first_slot_where_every_shard_fits(seed):
    """``count_bound_s`` against brute force: every slot ``k · cost_r`` (k shards of the
    smallest work on rank r) enumerated and sorted; the bound is the first at which the
    ranks hold every shard (or the fractional value n / Σ 1/cost_r when that already does)."""
    from hpccloud.balance.bound import count_bound_s

    rng = np.random.default_rng(seed)
    n, P = int(rng.integers(1, 40)), int(rng.integers(1, 7))
    w = rng.integers(1, 4, n).astype(float) if seed % 2 else rng.uniform(0.5, 3.0, n)
    v = rng.integers(1, 5, P).astype(float) if seed % 3 else rng.uniform(0.2, 4.0, P)
    per_shard = [0.0, 0.05][seed % 2]
    cost = per_shard + w.min() / v
    slots = np.sort((np.arange(1, n + 1)[None, :] * cost[:, None]).ravel())
    held = np.floor(slots[:, None] / cost[None, :] * (1 + 1e-12)).sum(axis=1)
    expect = max(n / (1.0 / cost).sum(), slots[np.argmax(held >= n)])
    assert count_bound_s(w, v, per_shard_s=per_shard) == pytest.approx(expect, rel=1e-9)
