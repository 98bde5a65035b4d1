"""The Hockney link model: fitting, aggregation by region, JSON round trip."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpccloud.errors import ConfigError
from hpccloud.measure.levels import LinkTable, level_counts, node_index
from hpccloud.measure.links import LinkModel, hockney_fit
from hpccloud.topology import topology_from_text

SIZES = np.array([8, 64, 512, 4096, 32768, 262144, 1 << 20, 4 << 20], dtype=float)


@settings(max_examples=60, deadline=None)
@given(alpha=st.floats(1e-7, 1e-2), beta=st.floats(1e6, 5e10), noise=st.floats(0.0, 0.05),
       seed=st.integers(0, 2**32 - 1))
def test_fit_recovers_alpha_beta_under_noise(alpha, beta, noise, seed):
    rng = np.random.default_rng(seed)
    # three repeats per size with multiplicative noise, as medians of repeats would be
    n = np.repeat(SIZES, 3)
    t = (alpha + n / beta) * (1.0 + noise * rng.uniform(-1, 1, n.size))
    a_fit, b_fit = hockney_fit(n, t)
    # β is pinned by the largest messages whenever they are bandwidth-bound
    if SIZES[-1] / beta > 5 * alpha:
        assert b_fit == pytest.approx(beta, rel=3 * noise + 1e-6)
    # α is pinned by the smallest messages whenever they are latency-bound
    if SIZES[0] / beta < 0.2 * alpha:
        assert a_fit == pytest.approx(alpha, rel=4 * noise + 0.3)


def test_fit_exact_and_degenerate():
    a, b = hockney_fit(SIZES, 2e-6 + SIZES / 8e9)
    assert a == pytest.approx(2e-6, rel=1e-6) and b == pytest.approx(8e9, rel=1e-6)
    # one size only: no α to separate, β = n / t
    a, b = hockney_fit([1 << 20] * 3, [1e-4] * 3)
    assert a == 0.0 and b == pytest.approx((1 << 20) / 1e-4)
    # no samples
    a, b = hockney_fit([], [])
    assert np.isnan(a) and np.isnan(b)


def test_model_from_samples_and_transfers():
    m = LinkModel(3)
    for n in SIZES:
        m.add_sample(0, 1, n, 5e-6 + n / 1e9, source="probe")
        m.add_sample(1, 0, n, 5e-6 + n / 2e9, source="probe")
    m.refit()
    assert m.beta_bytes_per_s[0, 1] == pytest.approx(1e9, rel=1e-6)
    assert m.beta_bytes_per_s[1, 0] == pytest.approx(2e9, rel=1e-6)
    assert np.isnan(m.alpha_s[0, 0])
    # 0 -> 2 was never measured: it takes its level's figure (the median of the measured pairs)
    assert (0, 2) not in set(zip(*m.measured_pairs()[:2], strict=True))
    assert m.beta_bytes_per_s[0, 2] == pytest.approx(1.5e9, rel=1e-6)
    assert m.time_s(0, 0, 1e9) == 0.0
    assert m.time_s(0, 1, 1e6) == pytest.approx(5e-6 + 1e-3, rel=1e-6)
    # a real transfer that ran slower pulls the fit down
    for _ in range(40):
        m.add_sample(0, 1, 64 << 20, (64 << 20) / 0.5e9, refit=True)
    assert m.beta_bytes_per_s[0, 1] < 0.8e9
    assert m.n_transfer_samples == 40
    # a migration refits only the pairs it moved over (a pair never sampled is skipped)
    for _ in range(40):
        m.add_sample(1, 0, 64 << 20, (64 << 20) / 0.25e9)
        m.add_sample(0, 1, 64 << 20, (64 << 20) / 4e9)
    before_01 = m.beta_bytes_per_s[0, 1]
    m.refit([(1, 0), (2, 1)])
    assert m.beta_bytes_per_s[1, 0] < 0.5e9  # refitted on the slow transfers
    assert m.beta_bytes_per_s[0, 1] == before_01  # not refitted: its new samples wait
    m.refit()
    assert m.beta_bytes_per_s[0, 1] > before_01


def test_refit_is_computed_when_the_fits_are_read():
    # a migration refits on every rank, only the planning rank reads the fits: the work waits
    # for the first read, and what it reads is what an eager fit of the same samples gives
    m = LinkModel(2)
    sizes = np.array(SIZES, dtype=np.float64)
    for n in sizes:
        m.add_sample(0, 1, n, 3e-6 + n / 4e9)
    m.refit([(0, 1)])
    assert m._stale == {(0, 1)}
    table = m.table()  # the read fits the stale pair once
    assert not m._stale and m.table() is table
    alpha, beta = hockney_fit(sizes, 3e-6 + sizes / 4e9)
    assert m.alpha_s[0, 1] == alpha and m.beta_bytes_per_s[0, 1] == beta
    # a stored fit given after the refit was asked for is the one that stays
    m.add_sample(0, 1, 1e6, 1.0)
    m.refit()
    m.set_pairs([0], [1], [1e-5], [1e9])
    assert m.to_json()["pairs"] == [[0, 1, 1e-5, 1e9]]


def test_region_matrix_and_json_round_trip():
    text = """
    [[regions]]
    name = "a"
    jurisdiction = "EU"
    price_per_core_hour = 1
    ranks = [0, 1]
    [[regions]]
    name = "b"
    jurisdiction = "US"
    price_per_core_hour = 1
    ranks = [2, 3]
    """
    topo = topology_from_text(text, "t.toml", 4)
    region = np.array([0, 0, 1, 1])
    alpha = np.where(region[:, None] == region[None, :], 2e-6, 5e-3)
    beta = np.where(region[:, None] == region[None, :], 10e9, 12.5e6)
    m = LinkModel.synthetic(alpha, beta)
    assert m.provenance == "synthetic"
    ra, rb = m.region_matrix(topo)
    assert ra[0, 0] == pytest.approx(2e-6) and ra[0, 1] == pytest.approx(5e-3)
    assert rb[1, 0] == pytest.approx(12.5e6)
    back = LinkModel.from_json(m.to_json())
    np.testing.assert_array_equal(np.isnan(back.alpha_s), np.isnan(m.alpha_s))
    np.testing.assert_allclose(back.beta_bytes_per_s[~np.isnan(m.beta_bytes_per_s)],
                               m.beta_bytes_per_s[~np.isnan(m.beta_bytes_per_s)])
    assert back.provenance == "synthetic"


def test_bad_profile_is_a_config_error():
    with pytest.raises(ConfigError, match="p.json: missing key 'beta_bytes_per_s'"):
        LinkModel.from_json({"alpha_s": [[None]]}, "p.json")
    with pytest.raises(ConfigError, match="same P×P"):
        LinkModel.from_json({"alpha_s": [[None, 1]], "beta_bytes_per_s": [[None, 1]]}, "p.json")


def _dense_time(alpha, beta, src, dst, n):
    """The pre-levels planners' dense model: α_ij + n · (1/β_ij), 0 on the diagonal."""
    t = alpha[src, dst] + n * (1.0 / beta[src, dst])
    return np.where(src == dst, 0.0, t)


@pytest.mark.parametrize("seed", range(5))
def test_levels_give_the_dense_models_answers_where_both_apply(seed):
    rng = np.random.default_rng(seed)
    P = int(rng.integers(2, 12))
    region = np.sort(rng.integers(0, 3, P))
    node = node_index(region, [f"h{x}" for x in rng.integers(0, 3, P)])
    alpha = rng.uniform(1e-6, 1e-3, (P, P))
    beta = rng.uniform(1e7, 1e10, (P, P))
    src, dst = np.divmod(np.arange(P * P), P)
    n = rng.uniform(0, 1e7, P * P)
    # 1. every pair measured (a full probe, an old profile): exactly the dense answers
    t = LinkTable.from_dense(alpha, beta, rank_region=region, rank_node=node)
    np.testing.assert_array_equal(t.time_s(src, dst, n), _dense_time(alpha, beta, src, dst, n))
    f = t.scalar_terms
    for i, j, k in zip(src[:20], dst[:20], range(20), strict=False):
        a, ib = f(int(i), int(j))
        assert a + n[k] * ib == pytest.approx(_dense_time(alpha, beta, src, dst, n)[k], rel=1e-12)
    # 2. a machine whose links depend only on the level: one measured pair per level and
    #    direction gives every pair its dense answer (the rest are inferred exactly)
    G = int(region.max()) + 1
    ra, rb = rng.uniform(1e-6, 1e-2, (G, G)), rng.uniform(1e7, 1e10, (G, G))
    na, nb = rng.uniform(1e-7, 1e-6, node.max() + 1), rng.uniform(1e10, 2e10, node.max() + 1)
    same_node = node[src] == node[dst]
    hier_a = np.where(same_node, na[node[src]], ra[region[src], region[dst]]).reshape(P, P)
    hier_b = np.where(same_node, nb[node[src]], rb[region[src], region[dst]]).reshape(P, P)
    key = np.where(same_node, node[src], G * G + region[src] * G + region[dst])
    _, first = np.unique(np.where(src == dst, -1, key), return_index=True)
    first = first[src[first] != dst[first]]
    sampled = LinkTable.from_pairs(src[first], dst[first], hier_a.ravel()[first], hier_b.ravel()[first],
                                   rank_region=region, rank_node=node)
    np.testing.assert_allclose(sampled.time_s(src, dst, n), _dense_time(hier_a, hier_b, src, dst, n),
                               rtol=1e-12)
    assert sampled.rank_pairs.size == first.size < max(P * (P - 1), 1) or P <= 3


def test_level_table_memory_is_linear_in_ranks():
    P, G = 131072, 16
    region = (np.arange(P) * G) // P
    node = np.arange(P) // 32
    t = LinkTable.levels(rank_region=region, rank_node=node, region_alpha_s=np.full((G, G), 1e-3),
                         region_beta_bytes_per_s=np.full((G, G), 1e9), node_alpha_s=np.full(P // 32, 1e-6),
                         node_beta_bytes_per_s=np.full(P // 32, 1e10))
    t.check()
    assert t.nbytes < 4 * 8 * P  # two int64 per rank, two floats per node, G² floats: ~2.2 MB
    rng = np.random.default_rng(0)
    src, dst = rng.integers(0, P, 10**6), rng.integers(0, P, 10**6)
    times = t.time_s(src, dst, 1e6)
    lvl = t.level_of(src, dst)
    assert np.allclose(times[lvl == 3], 1e-3 + 1e-3) and np.allclose(times[lvl == 1], 1e-6 + 1e-4)
    counts = level_counts(region, node)
    assert sum(counts.values()) == P * P - P
    with pytest.raises(ValueError, match="dense 131072"):
        t.dense()


def test_pairs_json_round_trip_and_bad_pairs():
    m = LinkModel(4, rank_region=[0, 0, 1, 1], rank_node=[0, 0, 1, 1])
    for n in SIZES:
        m.add_sample(0, 1, n, 1e-6 + n / 1e10, source="probe")
        m.add_sample(0, 2, n, 1e-3 + n / 1e9, source="probe")
        m.add_sample(2, 0, n, 2e-3 + n / 1e9, source="probe")
    m.refit()
    doc = m.to_json()
    assert doc["format"] == "pairs+levels" and len(doc["pairs"]) == 3
    back = LinkModel.from_json(doc, "p.json")
    np.testing.assert_allclose(back.table().time_s([0, 1, 3, 2], [1, 3, 0, 1], 1e6),
                               m.table().time_s([0, 1, 3, 2], [1, 3, 0, 1], 1e6))
    doc["pairs"][1][3] = 0.0
    with pytest.raises(ConfigError, match="p.json: pairs: 0 -> 2 has"):
        LinkModel.from_json(doc, "p.json")
    doc["pairs"][1] = [0, 9, 1e-3, 1e9]
    with pytest.raises(ConfigError, match="outside 0..3"):
        LinkModel.from_json(doc, "p.json")


def test_level_lookup_compiles_one_signature_for_every_shape_of_query():
    """Broadcast views are read-only, and a read-only array is another signature of the
    compiled lookup: every query, scalar, matching or broadcast, must reach it as one (a
    second one compiled at run time on every rank at once with a cold cache)."""
    from hpccloud.measure.levels import _lookup

    t = LinkTable.uniform(5, 1e-6, 1e10, "synthetic")
    r = np.arange(5)
    for src, dst in ((r, r[::-1].copy()), (r[:, None], r[None, :]), (2, 3), (r, 1)):
        alpha, inv = t.terms(src, dst)
        assert alpha.shape == np.broadcast_shapes(np.shape(src), np.shape(dst)) or np.ndim(src) == 0
    assert len(_lookup.signatures) == 1, _lookup.signatures
