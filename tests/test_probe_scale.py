"""The sampled link probe: its schedule's cost model at 10^3-10^5 ranks (pure), and its messages under mpiexec."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hpccloud.measure.levels import level_counts
from hpccloud.measure.probe import (
    circle_round,
    link_probe_schedule,
    messages_per_pair,
    probe_links,
    repeats_for,
    round_robin_rounds,
)


@pytest.mark.parametrize("n", range(1, 12))
def test_circle_rounds_cover_every_pair_once(n):
    rounds = [circle_round(n, r) for r in range(n - 1 if n % 2 == 0 else n)]
    seen = [p for rnd in rounds for p in rnd]
    assert sorted(seen) == sorted(itertools.combinations(range(n), 2))
    for rnd in rounds:
        ranks = [r for p in rnd for r in p]
        assert len(ranks) == len(set(ranks))


def _machine(P, per_node, G):
    region = (np.arange(P) * G) // P
    first = np.searchsorted(region, region)
    node_local = (np.arange(P) - first) // per_node
    node = np.cumsum(np.concatenate([[True], (node_local[1:] != node_local[:-1]) | (region[1:] != region[:-1])])) - 1
    return region, node


@pytest.mark.parametrize("P, per_node, G", [(1000, 32, 4), (10_000, 32, 8), (100_000, 32, 16), (100_000, 1, 5),
                                            (7, 2, 3), (2, 1, 1)])
def test_sampled_schedule_cost_model_and_coverage(P, per_node, G):
    k = 2
    region, node = _machine(P, per_node, G)
    s = link_probe_schedule(region, node, pairs_per_level=k)
    N = int(node.max()) + 1
    R = G - 1 if G % 2 == 0 else G
    # the stated cost model: rounds k_on + k_node + k_region R(G); pairs <= k N + k N / 2 + k G (G - 1) / 2
    assert len(s.rounds) <= 2 * k + k * R
    assert s.n_pairs <= k * N + k * N // 2 + k * G * (G - 1) // 2
    assert s.messages((8, 4096)) == s.n_pairs * messages_per_pair((8, 4096))
    pairs = np.array([p for rnd in s.rounds for p in rnd]).reshape(-1, 2)
    for rnd in s.rounds:  # no rank twice in a round
        ranks = [r for p in rnd for r in p]
        assert len(ranks) == len(set(ranks))
    a, b = pairs[:, 0], pairs[:, 1]
    # coverage: every node with >= 2 ranks, every region with >= 2 nodes, every region pair
    same_node = node[a] == node[b]
    assert set(node[a[same_node]]) == set(np.flatnonzero(np.bincount(node) >= 2))
    in_region = ~same_node & (region[a] == region[b])
    nodes_per_region = np.array([np.unique(node[region == g]).size for g in range(G)])
    assert set(region[a[in_region]]) == set(np.flatnonzero(nodes_per_region >= 2))
    cross = region[a] != region[b]
    assert {(int(x), int(y)) for x, y in zip(region[a[cross]], region[b[cross]], strict=True)} == \
        {(x, y) for x in range(G) for y in range(G) if x < y}
    doc = s.to_json()
    total = level_counts(region, node)
    for lvl in total:
        assert doc["measured_ordered_pairs_by_level"][lvl] + doc["inferred_ordered_pairs_by_level"][lvl] == total[lvl]


def test_full_schedule_is_every_pair():
    s = link_probe_schedule([0, 0, 1, 1, 1], [0, 0, 1, 1, 2], full=True)
    assert s.rounds == tuple(tuple(r) for r in round_robin_rounds(5))
    assert s.level[(0, 1)] == "on-node" and s.level[(2, 4)] == "node-to-node" and s.level[(1, 3)] == "region-to-region"


class CountingComm:
    """COMM_WORLD with its point-to-point sends counted (everything else passes through)."""

    def __init__(self, comm):
        self._comm = comm
        self.sends = 0

    def Send(self, *args, **kwargs):  # noqa: N802 - mpi4py's name
        self.sends += 1
        return self._comm.Send(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._comm, name)


@pytest.mark.hpccloud_mpi(ranks=[2, 3, 4], timeout=180)
def test_sampled_probe_sends_what_its_schedule_says(comm):
    size = comm.Get_size()
    region = [0] * (size // 2) + [1] * (size - size // 2)
    counting = CountingComm(comm)
    sizes = (8, 4096, 65536)
    res = probe_links(counting, sizes=sizes, rank_region=region, hosts=["node"] * size, pairs_per_level=1)
    total = comm.allreduce(counting.sends)
    assert total == res.schedule.messages(sizes, 3, repeats_for) == \
        res.schedule.n_pairs * messages_per_pair(sizes, 3, repeats_for)
    measured = {(a, b) for rnd in res.schedule.rounds for p in rnd for a, b in (p, p[::-1])}
    assert set(res.one_way_s) == measured
    if size > 2:
        assert len(measured) < size * (size - 1)  # a sample, not every pair
    # every ordered pair still has a usable figure: measured or its level's median
    alpha, beta = res.model.table().dense()
    off = ~np.eye(size, dtype=bool)
    assert np.isfinite(alpha[off]).all() and (beta[off] > 0).all()
    mats = comm.allgather((alpha.tobytes(), beta.tobytes()))
    assert all(m == mats[0] for m in mats)


def test_regions_are_discovered_from_the_sampled_pairs_alone():
    from hpccloud.measure.discover import compare_regions, discover_from_pairs, pair_cost_s

    region, node = _machine(4096, 32, 8)
    s = link_probe_schedule(region, node)
    pairs = np.array([p for rnd in s.rounds for p in rnd])
    src = np.concatenate([pairs[:, 0], pairs[:, 1]])
    dst = np.concatenate([pairs[:, 1], pairs[:, 0]])
    rng = np.random.default_rng(3)
    level = np.where(node[src] == node[dst], 0, np.where(region[src] == region[dst], 1, 2))
    alpha = np.array([1e-6, 3e-6, 1e-3])[level] * rng.lognormal(0, 0.3, src.size)
    beta = np.array([1e10, 5e9, 1e9])[level] * rng.lognormal(0, 0.3, src.size)
    found = discover_from_pairs(region.size, *pair_cost_s(src, dst, alpha, beta), rank_node=node)
    assert found.conclusive and found.n_regions == 8
    assert compare_regions(found.rank_region, [f"g{g}" for g in region]).agree
