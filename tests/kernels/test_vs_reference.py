"""Every kernel against its numpy twin on random inputs; hypothesis picks the shapes."""

import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from kernels_testutil import SETTINGS

from kernels import histogram, kmeans, mandelbrot, particles, reductions, spmv, stencil, stream

DTYPES = [np.float64, np.float32]
sizes = st.integers(min_value=0, max_value=5000)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def _vec(n, dtype, seed, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(n) * scale).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(n=sizes, seed=seeds, s=st.floats(-1e3, 1e3))
@example(n=0, seed=0, s=1.0)
@example(n=1, seed=0, s=-2.5)
def test_triad_axpy_copy_bit_exact(dtype, n, seed, s):
    b, c = _vec(n, dtype, seed), _vec(n, dtype, seed + 1)
    np.testing.assert_array_equal(stream.triad(b, c, s), stream.triad_reference(b, c, s))
    np.testing.assert_array_equal(stream.axpy(s, b, c), stream.axpy_reference(s, b, c))
    np.testing.assert_array_equal(stream.stream_copy(b), b)
    # in place, as the runner calls them
    y = c.copy()
    assert stream.axpy(s, b, y, out=y) is y
    np.testing.assert_array_equal(y, stream.axpy_reference(s, b, c))


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(n=st.integers(0, 40000), seed=seeds, scale=st.sampled_from([1e-3, 1.0, 1e6]))
@example(n=0, seed=0, scale=1.0)
@example(n=1, seed=0, scale=1.0)
@example(n=4097, seed=3, scale=1.0)
def test_reductions_within_stated_tolerance(dtype, n, seed, scale):
    x, y = _vec(n, dtype, seed, scale), _vec(n, dtype, seed + 1, scale)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    tol_sum = reductions.tolerance(n, float(np.abs(x64).sum()))
    tol_dot = reductions.tolerance(n, float(np.abs(x64 * y64).sum()))
    tol_sq = reductions.tolerance(n, float((x64 * x64).sum()))
    got = reductions.fixed_sum(x)
    assert abs(got - reductions.sum_reference(x)) <= tol_sum
    assert abs(got - math.fsum(x64)) <= tol_sum / 2  # against the exactly rounded sum
    assert abs(reductions.dot(x, y) - reductions.dot_reference(x, y)) <= tol_dot
    nrm = reductions.norm2(x)
    ref = reductions.norm2_reference(x)
    assert abs(nrm * nrm - ref * ref) <= tol_sq
    assert isinstance(got, float) and isinstance(nrm, float)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(ny=st.integers(0, 40), nx=st.integers(0, 40), seed=seeds)
@example(ny=0, nx=0, seed=0)
@example(ny=1, nx=1, seed=0)
def test_stencil2d_bit_exact(dtype, ny, nx, seed):
    a = np.random.default_rng(seed).standard_normal((ny + 2, nx + 2)).astype(dtype)
    ref = stencil.stencil2d_reference(a)
    np.testing.assert_array_equal(stencil.stencil2d(a), ref)
    out = np.full_like(a, np.nan)
    assert stencil.stencil2d(a, out=out) is out
    np.testing.assert_array_equal(out, ref)
    # the halo is copied, the interior is 0.25 * (((N + S) + W) + E)
    np.testing.assert_array_equal(out[0], a[0])
    np.testing.assert_array_equal(out[:, -1], a[:, -1])
    if ny and nx:
        assert out[1, 1] == dtype(0.25) * (((a[0, 1] + a[2, 1]) + a[1, 0]) + a[1, 2])


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(n=st.integers(0, 300), seed=seeds, cutoff=st.floats(0.02, 0.4),
       width=st.floats(0.3, 3.0), dt=st.floats(1e-4, 0.05))
@example(n=0, seed=0, cutoff=0.1, width=1.0, dt=0.01)
@example(n=1, seed=0, cutoff=0.1, width=1.0, dt=0.01)
def test_particles_vs_reference(dtype, n, seed, cutoff, width, dt):
    g = np.random.default_rng(seed)
    bounds = (-0.5, -0.5 + width, 0.25, 0.25 + width)
    # a tight cluster plus a few particles just outside the tile
    x = np.concatenate([g.normal(0.0, 0.05, n // 2), g.uniform(-0.6, width - 0.4, n - n // 2)])
    y = np.concatenate([g.normal(0.6, 0.05, n // 2), g.uniform(0.15, width + 0.35, n - n // 2)])
    vx, vy = g.normal(0, 1, n), g.normal(0, 1, n)
    args = [a.astype(dtype) for a in (x, y, vx, vy)]
    got = particles.particles(*args, bounds, dt, cutoff, 0.5, 2.0)
    ref = particles.particles_reference(*args, bounds, dt, cutoff, 0.5, 2.0)
    rtol, atol = (1e-12, 1e-12) if dtype == np.float64 else (1e-6, 1e-6)
    for k in range(4):
        assert got[k].dtype == dtype and got[k].shape == (n,)
        np.testing.assert_allclose(got[k], ref[k], rtol=rtol, atol=atol)
    xn, yn, _, _, left = got
    inside = (bounds[0] <= xn) & (xn < bounds[1]) & (bounds[2] <= yn) & (yn < bounds[3])
    np.testing.assert_array_equal(left, ~inside)
    same = (got[0] == ref[0]) & (got[1] == ref[1])
    np.testing.assert_array_equal(left[same], ref[4][same])


@SETTINGS
@given(n=st.integers(0, 400), grid=st.integers(1, 9), tile=st.integers(0, 80), seed=seeds,
       spread=st.floats(0.0, 0.5))
@example(n=0, grid=1, tile=0, seed=0, spread=0.1)
@example(n=5, grid=3, tile=4, seed=1, spread=0.5)
def test_particles_route_bit_exact(n, grid, tile, seed, spread):
    tile %= grid * grid
    g = np.random.default_rng(seed)
    cols = [g.uniform(-spread, 1.0 + spread, n), g.uniform(-spread, 1.0 + spread, n),
            g.normal(0, 1, n), g.normal(0, 1, n)]
    if n >= 4:  # exactly on the walls, and NaN (numpy's cast of ±inf is platform-defined)
        cols[0][:4] = [0.0, 1.0, np.nan, -0.0]
        cols[1][:4] = [1.0, -0.0, 0.5, 2.0]
    mine = [c.copy() for c in cols]
    stay, leaving = particles.route(*mine, tile, grid)
    ref_cols = [c.copy() for c in cols]
    ref_stay, ref_leaving = particles.route_reference(*ref_cols, tile, grid)
    np.testing.assert_array_equal(stay, ref_stay)
    np.testing.assert_array_equal(leaving, ref_leaving)
    for a, b in zip(mine, ref_cols, strict=True):  # reflected in place alike
        np.testing.assert_array_equal(a, b)
    assert stay.flags.c_contiguous and stay.shape == (stay.shape[0], 4) and leaving.shape[1] == 7
    assert stay.shape[0] + leaving.shape[0] == n


def test_particles_route_puts_nonfinite_positions_in_a_tile():
    # NaN counts as 0, as numpy's cast did; +inf reflects to the most negative float (-> 0),
    # -inf to +inf (-> the last row or column)
    x, y = np.array([np.nan, np.inf, 0.5]), np.array([0.5, 0.5, -np.inf])
    _, leaving = particles.route(x, y, np.zeros(3), np.zeros(3), tile=4, grid=3)
    assert leaving[:, 0].tolist() == [3.0, 3.0, 7.0]
    assert np.isnan(leaving[0, 3]) and leaving[1, 3] == -np.finfo(np.float64).max
    assert leaving[2, 4] == np.inf


def test_particles_cost_follows_clustering():
    """Same particle count, clustered vs spread: the kernel sees more pairs (work) when clustered."""
    g = np.random.default_rng(0)
    n, cutoff = 400, 0.05
    spread = g.uniform(0, 1, (2, n))
    clustered = 0.5 + g.normal(0, 0.01, (2, n))
    zero = np.zeros(n)
    # the repulsion only acts between neighbours: clustered particles get pushed hard, spread ones barely
    a = particles.particles(*spread, zero, zero, (0, 1, 0, 1), 1e-3, cutoff, 1.0, 0.0)
    b = particles.particles(*clustered, zero, zero, (0, 1, 0, 1), 1e-3, cutoff, 1.0, 0.0)
    assert np.abs(b[2]).mean() > 10 * np.abs(a[2]).mean()


@SETTINGS
@given(nx=st.integers(0, 40), ny=st.integers(0, 40), max_iter=st.integers(0, 120),
       x0=st.floats(-2.2, 0.4), y0=st.floats(-1.4, 1.0), size=st.floats(1e-3, 2.0))
@example(nx=0, ny=0, max_iter=10, x0=-2.0, y0=-1.0, size=1.0)
@example(nx=1, ny=1, max_iter=10, x0=-2.0, y0=-1.0, size=1.0)
def test_mandelbrot_exact(nx, ny, max_iter, x0, y0, size):
    args = (x0, x0 + size, y0, y0 + size, nx, ny, max_iter)
    got = mandelbrot.mandelbrot(*args)
    assert got.dtype == np.int32 and got.shape == (ny, nx)
    np.testing.assert_array_equal(got, mandelbrot.mandelbrot_reference(*args))
    assert mandelbrot.iterations(got) <= nx * ny * max_iter


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(n=st.integers(0, 2000), d=st.integers(1, 5), k=st.integers(1, 6), seed=seeds)
@example(n=0, d=1, k=1, seed=0)
@example(n=1, d=1, k=1, seed=0)
def test_kmeans_vs_reference(dtype, n, d, k, seed):
    g = np.random.default_rng(seed)
    pts = g.standard_normal((n, d)).astype(dtype)
    cen = g.standard_normal((k, d)).astype(dtype)
    labels, sums, counts = kmeans.kmeans(pts, cen)
    rl, rs, rc = kmeans.kmeans_reference(pts, cen)
    np.testing.assert_array_equal(labels, rl)
    np.testing.assert_array_equal(counts, rc)
    np.testing.assert_allclose(sums, rs, rtol=1e-12, atol=1e-9)
    assert counts.sum() == n


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@SETTINGS
@given(nrows=st.integers(0, 60), ncols=st.integers(1, 60), max_len=st.integers(0, 12), seed=seeds)
@example(nrows=0, ncols=1, max_len=0, seed=0)
@example(nrows=1, ncols=1, max_len=1, seed=0)
def test_spmv_vs_scipy(dtype, index_dtype, nrows, ncols, max_len, seed):
    g = np.random.default_rng(seed)
    lengths = g.integers(0, max_len + 1, nrows)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(index_dtype)
    nnz = int(indptr[-1])
    indices = g.integers(0, ncols, nnz).astype(index_dtype)
    data = g.standard_normal(nnz).astype(dtype)
    x = g.standard_normal(ncols).astype(dtype)
    got = spmv.spmv(indptr, indices, data, x)
    assert got.dtype == dtype and got.shape == (nrows,)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got, spmv.spmv_reference(indptr, indices, data, x),
                               rtol=rtol, atol=rtol * 10)
    # trusted=True skips only the scans: the same product, bit for bit
    np.testing.assert_array_equal(spmv.spmv(indptr, indices, data, x, trusted=True), got)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(n=st.integers(0, 5000), nbins=st.integers(1, 50), lo=st.floats(-10, 10),
       width=st.floats(1e-3, 20), seed=seeds)
@example(n=0, nbins=1, lo=0.0, width=1.0, seed=0)
@example(n=1, nbins=1, lo=0.0, width=1.0, seed=0)
def test_histogram_exact(dtype, n, nbins, lo, width, seed):
    hi = lo + width
    g = np.random.default_rng(seed)
    v = g.uniform(lo - width / 4, hi + width / 4, n)
    if n >= 4:
        v[:4] = [lo, hi, np.nan, np.inf]  # both edges count; NaN and inf do not
    v = v.astype(dtype)
    got = histogram.histogram(v, lo, hi, nbins)
    np.testing.assert_array_equal(got, histogram.histogram_reference(v, lo, hi, nbins))
    inside = v.astype(np.float64)
    assert got.sum() == np.count_nonzero((inside >= lo) & (inside <= hi))
