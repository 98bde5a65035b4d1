"""The Hockney link model: fitting, aggregation by region, JSON round trip."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpccloud.errors import ConfigError
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
    assert np.isnan(m.alpha_s[0, 2]) and np.isnan(m.alpha_s[0, 0])
    assert m.time_s(0, 0, 1e9) == 0.0
    assert m.time_s(0, 1, 1e6) == pytest.approx(5e-6 + 1e-3, rel=1e-6)
    # a real transfer that ran slower pulls the fit down
    for _ in range(40):
        m.add_sample(0, 1, 64 << 20, (64 << 20) / 0.5e9, refit=True)
    assert m.beta_bytes_per_s[0, 1] < 0.8e9
    assert m.n_transfer_samples == 40


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
