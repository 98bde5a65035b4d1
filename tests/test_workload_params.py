"""Workload parameters: typed, in range, consistent; refused with the fix before any work."""

import pytest

from hpccloud.errors import InvalidArgument
from hpccloud.workloads import WORKLOADS, make_workload

BAD = [
    ("stencil2d", {"period": 0}, "period=0 must be >= 1"),
    ("stencil2d", {"dtype": "garbage"}, "must be one of ['float64', 'float32']"),
    ("stencil2d", {"hot_sweeps": -5}, "hot_sweeps=-5 must be >= 0"),
    ("stencil2d", {"eu_fraction": 2}, "eu_fraction=2.0 must be >= 0.0 and <= 1.0"),
    ("stencil2d", {"n": 4, "grid": 8}, "grid=8 tiles per side but n=4"),
    ("kmeans", {"k": 0}, "k=0 must be >= 1"),
    ("kmeans", {"d": 0}, "d=0 must be >= 1"),
    ("kmeans", {"n": 10, "k": 11}, "k=11 clusters for n=10 points"),
    ("kmeans", {"n": 2.5}, "n=2.5 is not an integer"),
    ("kmeans", {"n": True}, "n=True is not an integer"),
    ("kmeans", {"n": "1e3"}, "is not an integer"),
    ("particles", {"n": 0}, "n=0 must be >= 1"),
    ("particles", {"bins": 0}, "bins=0 must be >= 1"),
    ("particles", {"dt": "nan"}, "dt=nan must be a finite number"),
    ("particles", {"dt": float("inf")}, "must be a finite number"),
    ("mandelbrot", {"zoom": 0}, "zoom=0.0 must be >= 1e-06"),
    ("spmv", {"shards": 0}, "shards=0 must be >= 1"),
    ("spmv", {"mean_row": 1, "n": 3, "shards": 4}, "shards=4 for n=3 rows"),
]


@pytest.mark.parametrize("name,params,message", BAD, ids=[f"{b[0]}-{b[1]}" for b in BAD])
def test_bad_parameters(name, params, message):
    with pytest.raises(InvalidArgument) as info:
        make_workload(name, params)
    assert message in str(info.value) and "Fix:" in str(info.value)
    assert f"workload {name!r}" in str(info.value)


@pytest.mark.parametrize("seed", [-1, 2**63, True, 1.5])
def test_bad_seed(seed):
    with pytest.raises(InvalidArgument, match="--seed"):
        make_workload("stencil2d", {}, seed)


def test_strings_from_the_command_line_are_parsed():
    wl = make_workload("kmeans", {"n": "1000", "k": " 3", "eu_fraction": "0.5"})
    assert (wl.params["n"], wl.params["k"], wl.params["eu_fraction"]) == (1000, 3, 0.5)
    assert make_workload("kmeans", {"n": 1000.0}).params["n"] == 1000  # an integral float


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_estimates_scale_with_size(name):
    small = make_workload(name).estimate(4)
    big = make_workload(name, {"n": make_workload(name).params["n"] * 4}).estimate(4)
    assert 0 < small.peak_bytes_per_rank < big.peak_bytes_per_rank
    assert small.output_bytes > 0 and small.checkpoint_bytes > 0
    # a rank of a bigger job holds less
    assert make_workload(name).estimate(16).peak_bytes_per_rank <= small.peak_bytes_per_rank


def test_estimate_of_a_huge_grid():
    est = make_workload("stencil2d", {"n": 1 << 20}).estimate(2)
    assert est.peak_bytes_per_rank > 8 * (1 << 40)  # 8 TiB of float64 cells: will be refused


def test_spmv_zero_vector_is_one_clear_error():
    import numpy as np
    from mpi4py import MPI

    from hpccloud.errors import ConfigError

    wl = make_workload("spmv", {"n": 60, "shards": 3})
    m = wl.shard_map(1)
    local = {s.id: np.zeros(s.shape) for s in m.shards}
    with pytest.raises(ConfigError, match="the vector is all zeros") as info:
        wl.begin_step(MPI.COMM_SELF, m, local, 0)
    assert info.value.collective


@pytest.mark.parametrize("params", [{"n": 1, "shards": 1, "mean_row": 1},
                                    {"n": 97, "shards": 5, "mean_row": 3},
                                    {"n": 5000, "shards": 7, "mean_row": 400},
                                    {"n": 2000, "shards": 3, "mean_row": 10_000}])
def test_spmv_rows_hold_what_the_unscanned_product_relies_on(params):
    # the workload calls the kernel with trusted=True (no O(nnz) scans) on these rows
    import numpy as np

    from kernels.spmv import spmv, spmv_reference

    wl = make_workload("spmv", params, seed=3)
    x = np.random.default_rng(0).uniform(0.5, 1.5, params["n"])
    for shard in wl.shard_map(1).shards:
        indptr, indices, data = wl.matrix_rows(shard)
        assert indptr[0] == 0 and indptr[-1] == data.size == indices.size
        assert indptr.size == shard.shape[0] + 1 and np.all(np.diff(indptr) >= 1)
        assert indices.min() >= 0 and indices.max() < params["n"]
        y = spmv(indptr, indices, data, x, trusted=True)
        np.testing.assert_allclose(y, spmv_reference(indptr, indices, data, x), rtol=1e-12)
        # ... and with the argument types the run's warm-up compiles (else the product
        # compiles again in the first step, on every rank at once with a cold cache)
        import numba

        from kernels.spmv import make_inputs

        warmed = make_inputs(64, np.float64, 0)
        assert [numba.typeof(a) for a in (indptr, indices, data, x)] == [
            numba.typeof(a) for a in warmed]


def test_spmv_rows_are_built_with_the_data_and_on_arrival_not_in_a_step():
    # the step timers must measure the product alone: a shard's rows cost ~7 of its steps
    import numpy as np

    wl = make_workload("spmv", {"n": 400, "shards": 4})
    a, b = wl.shard_map(1).shards[:2]
    x = wl.initial(a)
    assert a.id in wl._rows and b.id not in wl._rows
    wl.forget(a.id)
    assert a.id not in wl._rows
    assert wl.unpack(a, x) is x and a.id in wl._rows  # keeps the payload (unpack_copies 0)
    built = wl._rows[a.id]
    wl._x = np.ones(400)
    wl.compute(a, x, 0)
    assert wl._rows[a.id] is built


def test_stencil_pack_writes_a_recycled_buffer_and_unpack_restores_the_tile():
    import numpy as np

    from hpccloud.comm.bufpool import BufferPool

    wl = make_workload("stencil2d", {"n": 64, "grid": 2})
    shard = wl.shard_map(2).shards[0]
    tile = wl.initial(shard)
    tile[1:-1, 1:-1] = np.arange(tile[1:-1, 1:-1].size).reshape(tile[1:-1, 1:-1].shape)
    wl.pool = BufferPool()
    fresh = wl.pack(shard, tile)  # an empty pool: new memory
    assert np.array_equal(fresh, tile[1:-1, 1:-1]) and not np.shares_memory(fresh, tile)
    wl.pool.give(fresh)  # the transport returns a sent payload to the pool
    again = wl.pack(shard, tile)
    assert np.shares_memory(again, fresh)  # the warm buffer, not fresh pages
    assert np.array_equal(again, tile[1:-1, 1:-1]) and again.flags.c_contiguous
    back = wl.unpack(shard, again)
    assert back.shape == tile.shape and np.array_equal(back[1:-1, 1:-1], tile[1:-1, 1:-1])
    assert not back[0].any() and not back[-1].any() and not back[:, 0].any() and not back[:, -1].any()


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_unpack_copies_says_what_unpack_does(name):
    """The migration model prices ``unpack_copies`` bytes of new memory per byte received:
    every workload's figure must be what its unpack really writes."""
    import numpy as np

    wl = make_workload(name)
    shard_map = wl.shard_map(2)
    shard = next(s for s in shard_map.shards if np.prod(s.shape) > 0)
    payload = np.ascontiguousarray(wl.pack(shard, wl.initial(shard)))
    arr = wl.unpack(shard, payload)
    copied = 0.0 if np.may_share_memory(arr, payload) else arr.nbytes / payload.nbytes
    assert wl.unpack_copies == pytest.approx(copied, rel=0.1), (
        f"{name}.unpack_copies={wl.unpack_copies}, its unpack writes {copied:.2f} bytes per byte")
