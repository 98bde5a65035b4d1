"""Shared builders for the balancer tests: random small problems as hypothesis strategies.

A plain module, not a conftest: with several conftest.py files in the suite, `from conftest
import ...` picks whichever was imported last."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from hpccloud.balance.problem import Problem
from hpccloud.measure.levels import LinkTable


def random_problem(seed: int, n_shards: int, n_ranks: int, n_regions: int, n_classes: int,
                   slow_factor: float = 100.0) -> Problem:
    """A random valid problem: residency by region, owners that respect it, chain halo edges."""
    rng = np.random.default_rng(seed)
    n_regions = min(n_regions, n_ranks)
    region = np.sort(np.concatenate([np.arange(n_regions), rng.integers(0, n_regions, n_ranks - n_regions)]))
    allowed_regions = rng.random((n_classes, n_regions)) < 0.6
    allowed_regions[np.arange(n_classes), rng.integers(0, n_regions, n_classes)] = True
    allowed = allowed_regions[:, region]
    class_id = rng.integers(0, n_classes, n_shards)
    owners = np.empty(n_shards, np.int64)
    for s in range(n_shards):
        owners[s] = rng.choice(np.flatnonzero(allowed[class_id[s]]))
    same = region[:, None] == region[None, :]
    alpha = np.where(same, 1e-5, 1e-5 * slow_factor) * rng.uniform(0.5, 2.0, (n_ranks, n_ranks))
    beta = np.where(same, 1e9, 1e9 / slow_factor) * rng.uniform(0.5, 2.0, (n_ranks, n_ranks))
    np.fill_diagonal(alpha, np.nan)
    np.fill_diagonal(beta, np.nan)
    u = np.arange(max(n_shards - 1, 0), dtype=np.int64)
    keep = rng.random(u.size) < 0.8
    return Problem(
        work_units=rng.uniform(0.1, 10.0, n_shards) * (rng.random(n_shards) < 0.95),
        nbytes=rng.integers(1, 1 << 22, n_shards), owners=owners, class_id=class_id, allowed=allowed,
        edge_u=u[keep], edge_v=u[keep] + 1, edge_bytes=rng.uniform(0, 1e5, int(keep.sum())),
        speed_units_per_s=rng.uniform(0.5, 5.0, n_ranks),
        links=LinkTable.from_dense(alpha, beta, rank_region=region, n_regions=n_regions, provenance="synthetic"),
        rank_region=region, region_names=tuple(f"g{i}" for i in range(n_regions)),
        price_per_core_hour=rng.uniform(0.01, 0.1, n_ranks),
        egress_per_gb=np.where(np.eye(n_regions, dtype=bool), 0.0, 0.05),
        class_names=tuple(f"c{i}" for i in range(n_classes)), provenance="synthetic")


problems = st.builds(
    random_problem,
    seed=st.integers(0, 2**32 - 1),
    n_shards=st.integers(1, 80),
    n_ranks=st.integers(1, 9),
    n_regions=st.integers(1, 3),
    n_classes=st.integers(1, 3),
    slow_factor=st.sampled_from([1.0, 100.0, 1e4]),
)


def assert_moves_are_the_owner_changes(p, mp) -> None:
    """``mp.moves`` replayed on ``p.owners`` give ``mp.owners_after``: each shard once, from
    where it was to where it may live."""
    after = mp.owners_after
    assert np.all(p.allowed[p.class_id, after])
    replay = p.owners.copy()
    for s, src, dst in mp.moves:
        assert replay[s] == src and src != dst
        replay[s] = dst
    assert np.array_equal(replay, after)
