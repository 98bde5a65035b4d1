"""Results that must not depend on the thread count or on how a domain is tiled."""

import numba
import numpy as np
import pytest
from kernels_testutil import NO_JIT

from kernels import histogram, kmeans, reductions, stencil


@pytest.fixture
def thread_counts():
    if NO_JIT or numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs JIT and at least 2 Numba threads")
    before = numba.get_num_threads()
    yield [1, 2]
    numba.set_num_threads(before)


def test_reductions_bit_identical_across_thread_counts(thread_counts):
    x = np.random.default_rng(0).standard_normal(300_001)
    y = np.random.default_rng(1).standard_normal(300_001)
    results = []
    for t in thread_counts:
        numba.set_num_threads(t)
        results.append((reductions.fixed_sum(x), reductions.dot(x, y), reductions.norm2(x),
                        kmeans.kmeans(x.reshape(-1, 1)[:300_000].reshape(-1, 3),
                                      np.eye(3))[1].tobytes(),
                        histogram.histogram(x, -2, 2, 17).tobytes()))
    assert results[0] == results[1]


def test_stencil_tiled_equals_whole_domain_bit_for_bit():
    """Two tiles with exchanged halos reproduce the single-tile sweep exactly (as the runner needs)."""
    g = np.random.default_rng(5)
    ny, nx = 37, 50
    whole = g.standard_normal((ny + 2, nx + 2))
    ref = whole.copy()
    for _ in range(3):
        ref = stencil.stencil2d(ref)
    split = 23  # interior columns 1..split on the left tile, the rest on the right
    left = np.ascontiguousarray(whole[:, : split + 2])
    right = np.ascontiguousarray(whole[:, split:])
    out_l, out_r = np.empty_like(left), np.empty_like(right)
    for _ in range(3):
        stencil.stencil2d(left, out=out_l)
        stencil.stencil2d(right, out=out_r)
        left, out_l = out_l, left
        right, out_r = out_r, right
        # halo exchange: the column next to the cut
        left[:, -1] = right[:, 1]
        right[:, 0] = left[:, -2]
    got = np.concatenate([left[:, :-1], right[:, 1:]], axis=1)
    np.testing.assert_array_equal(got, ref)
