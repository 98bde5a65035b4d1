"""spmv's gather of the whole vector under real mpiexec: in place where every rank holds one
run of rows, through the receive buffer otherwise; the same x either way."""

import numpy as np
import pytest

from hpccloud.errors import ConfigError
from hpccloud.workloads.spmv import SpMV


def _owner_maps(n_shards, size):
    yield "as placed (contiguous)", None, True
    yield "round robin", [s % size for s in range(n_shards)], size == 1
    yield "all on the last rank", [size - 1] * n_shards, True
    if size > 2:  # a rank without shards between two runs
        yield "rank 1 empty", [0 if s < n_shards // 2 else 2 for s in range(n_shards)], True
        yield "runs out of rank order", [2, 2, 0, 0, 1, 1, 0], False


@pytest.mark.hpccloud_mpi(ranks=[1, 2, 3], timeout=120)
def test_spmv_gathers_the_same_vector_in_place_or_through_its_buffer(comm):
    size, rank = comm.Get_size(), comm.Get_rank()
    wl = SpMV({"n": 1000, "shards": 7, "mean_row": 4})
    base = wl.shard_map(size)
    for k, (name, owners, direct) in enumerate(_owner_maps(7, size)):
        m = base if owners is None else base.with_owners(owners)
        full = np.arange(1.0, 1001.0) * (k + 1)  # other values each case: a stale row shows
        local = {sh.id: full[sh.index[0]].copy() for sh in m.shards if sh.owner_rank == rank}
        wl.begin_step(comm, m, local, k)
        assert wl._gather_layout(m, size).direct is direct, name
        np.testing.assert_array_equal(wl._x, full, err_msg=name)
        assert all(np.array_equal(local[s], full[m.shards[s].index[0]]) for s in local), name


@pytest.mark.hpccloud_mpi(ranks=[2], timeout=120)
def test_spmv_refuses_an_all_zero_vector_on_every_rank(comm):
    wl = SpMV({"n": 100, "shards": 4, "mean_row": 4})
    m = wl.shard_map(comm.Get_size())
    local = {sh.id: np.zeros(sh.shape[0]) for sh in m.shards if sh.owner_rank == comm.Get_rank()}
    with pytest.raises(ConfigError, match="all zeros") as err:
        wl.begin_step(comm, m, local, 0)
    assert err.value.collective
