"""Region discovery from link matrices (pure, no MPI): synthetic matrices with noise."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import hpccloud.measure.discover as discover_mod
from hpccloud.measure.discover import compare_regions, discover_regions, link_cost_s


def synthetic_links(rank_region, intra=(20e-6, 5e9), inter=(5e-3, 12e6), noise=0.3, seed=0,
                    pair_inter=None):
    """α, β matrices for ranks in regions; lognormal noise of relative width ``noise`` per entry."""
    rng = np.random.default_rng(seed)
    p = len(rank_region)
    alpha = np.empty((p, p))
    beta = np.empty((p, p))
    for i in range(p):
        for j in range(p):
            a, b = intra
            if rank_region[i] != rank_region[j]:
                key = tuple(sorted((rank_region[i], rank_region[j])))
                a, b = (pair_inter or {}).get(key, inter)
            alpha[i, j] = a * rng.lognormal(0.0, noise)
            beta[i, j] = b * rng.lognormal(0.0, noise)
    np.fill_diagonal(alpha, np.nan)
    np.fill_diagonal(beta, np.nan)
    return alpha, beta


def test_module_doctests():
    assert doctest.testmod(discover_mod).failed == 0


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("layout", [(0, 0, 1, 1), (0, 1, 0, 1), (0, 0, 0, 1, 1, 2, 2, 2),
                                    (0, 0, 1, 2, 2), (0, 0, 1)])
def test_recovers_shaped_regions_under_noise(layout, seed):
    alpha, beta = synthetic_links(layout, noise=0.4, seed=seed)
    found = discover_regions(alpha, beta)
    assert compare_regions(found.rank_region, tuple(f"r{x}" for x in layout)).agree, found
    assert found.separation > 1.0
    assert found.conclusive


def test_all_ranks_apart_equally_is_one_region():
    # every rank its own region, all links alike: nothing to contrast, so one region
    alpha, beta = synthetic_links((0, 1, 2, 3), noise=0.2)
    assert discover_regions(alpha, beta).n_regions == 1


def test_regions_numbered_by_lowest_rank():
    alpha, beta = synthetic_links((1, 0, 1, 0), seed=3)
    assert discover_regions(alpha, beta).rank_region == (0, 1, 0, 1)


def test_bandwidth_only_and_latency_only_boundaries():
    # same latency everywhere, 100x less bandwidth across: still two regions
    a, b = synthetic_links((0, 0, 1, 1), intra=(30e-6, 5e9), inter=(30e-6, 12e6), noise=0.2)
    assert discover_regions(a, b).rank_region == (0, 0, 1, 1)
    # same bandwidth everywhere, 250x the latency across
    a, b = synthetic_links((0, 0, 1, 1), intra=(20e-6, 5e9), inter=(5e-3, 5e9), noise=0.2)
    assert discover_regions(a, b).rank_region == (0, 0, 1, 1)


def test_single_rank_and_all_equal_are_one_region():
    one = discover_regions([[None]], [[None]])
    assert one.rank_region == (0,) and not one.conclusive
    a = np.full((5, 5), 2e-6)
    b = np.full((5, 5), 8e9)
    np.fill_diagonal(a, np.nan)
    found = discover_regions(a, b)
    assert found.rank_region == (0,) * 5 and found.gap_factor == pytest.approx(1.0)
    assert found.conclusive and np.isnan(found.threshold_s)


def test_uniform_noise_alone_is_not_a_boundary():
    # one machine, shared memory everywhere, noisy (oversubscribed) timings: one region
    for seed in range(30):
        a, b = synthetic_links((0,) * 4, intra=(5e-6, 6e9), noise=0.35, seed=seed)
        assert discover_regions(a, b).n_regions == 1, seed


def test_two_ranks_are_inconclusive():
    a, b = synthetic_links((0, 1))
    found = discover_regions(a, b)
    assert found.n_regions == 1 and not found.conclusive


def test_one_disturbed_direction_does_not_split_a_region():
    # rank 3 was descheduled while timing 3 -> 2: that direction reads 10 ms, slower than
    # the links across; the other direction still shows the link is fast
    a, b = synthetic_links((0, 0, 1, 1), noise=0.3, seed=11)
    a[3, 2] = 10e-3
    assert discover_regions(a, b).rank_region == (0, 0, 1, 1)


def test_implausibly_fast_artefacts_are_ignored():
    # seen on a loaded node: the probe clamped a one-way time to 1 ns, so the fit gave
    # alpha ~1e-9 and a huge beta for one direction of an intra pair; that single value
    # must not become "the largest gap" (it would split every other pair apart)
    a, b = synthetic_links((0, 0, 1, 1), noise=0.3, seed=2)
    a[0, 1], b[0, 1] = 1e-9, 1e15
    a[3, 2], b[3, 2] = 0.0, np.inf
    found = discover_regions(a, b)
    assert found.rank_region == (0, 0, 1, 1), found


def test_unmeasured_pairs_are_skipped_and_one_direction_suffices():
    a, b = synthetic_links((0, 0, 1, 1), seed=5)
    a[0, 1] = np.nan  # 0 -> 1 unmeasured, 1 -> 0 still tells
    b[0, 1] = np.nan
    a[2, :] = np.nan  # rank 2 never sent; others' sends to it still tell
    assert discover_regions(a, b).rank_region == (0, 0, 1, 1)


def test_three_tiers_cut_at_largest_step():
    # intra 20 us; 0-1 across 2 ms; 0-2 and 1-2 across 50 ms: the 20us -> 2ms step is larger
    tiers = {(0, 1): (2e-3, 50e6), (0, 2): (50e-3, 5e6), (1, 2): (50e-3, 5e6)}
    a, b = synthetic_links((0, 0, 1, 1, 2, 2), pair_inter=tiers, noise=0.1)
    assert discover_regions(a, b).rank_region == (0, 0, 1, 1, 2, 2)


def test_link_cost_merges_directions_and_rejects_bad_shapes():
    cost = link_cost_s([[np.nan, 1e-3], [4e-3, np.nan]], [[np.nan, np.inf], [np.inf, np.nan]])
    assert cost[0, 1] == pytest.approx(1e-3) and cost[1, 0] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="P×P"):
        link_cost_s(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="min_gap_factor"):
        discover_regions([[None]], [[None]], min_gap_factor=1.0)


def test_compare_reports_split_and_merged_regions_by_partition():
    same = compare_regions((5, 5, 9, 9), ("eu", "eu", "us", "us"))
    assert same.agree and same.disagreements == () and same.names == ("eu", "us")
    split = compare_regions((0, 1, 2, 2), ("eu", "eu", "us", "us"))
    assert not split.agree
    assert split.disagreements == ("declared region 'eu' (ranks 0-1) measures as 2 regions: 0 | 1",)
    assert split.names == ("measured-0", "measured-1", "us")
    crossed = compare_regions((0, 1, 0, 1), ("eu", "eu", "us", "us"))
    assert not crossed.agree and len(crossed.disagreements) == 4
    with pytest.raises(ValueError):
        compare_regions((0, 1), ("eu",))
