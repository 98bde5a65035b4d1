"""The link probe under real mpiexec: every ordered pair measured, same model on every rank."""

import itertools

import numpy as np
import pytest

from hpccloud.measure.probe import probe_links, round_robin_rounds


@pytest.mark.parametrize("size", range(1, 10))
def test_round_robin_covers_every_pair_once(size):
    rounds = round_robin_rounds(size)
    assert len(rounds) == (size - 1 if size % 2 == 0 else size) or size == 1
    seen = [p for rnd in rounds for p in rnd]
    assert sorted(seen) == sorted(itertools.combinations(range(size), 2))
    for rnd in rounds:
        ranks = [r for p in rnd for r in p]
        assert len(ranks) == len(set(ranks)), "a rank appears twice in one round"


@pytest.mark.hpccloud_mpi(ranks=[1, 2, 3, 4], timeout=120)
def test_link_probe_measures_every_ordered_pair(comm):
    size = comm.Get_size()
    res = probe_links(comm, sizes=(8, 4096, 1 << 20))
    model = res.model
    off = ~np.eye(size, dtype=bool)
    assert model.provenance == "measured"
    assert np.isfinite(model.alpha_s[off]).all() and np.isfinite(model.beta_bytes_per_s[off]).all()
    assert np.isnan(np.diag(model.alpha_s)).all()
    assert (model.alpha_s[off] >= 0).all() and (model.beta_bytes_per_s[off] > 0).all()
    # every ordered pair has a sample at every size (plus the 8-byte answer size)
    assert sorted(res.one_way_s) == [(i, j) for i in range(size) for j in range(size) if i != j]
    # identical on every rank
    mats = comm.allgather((model.alpha_s.tobytes(), model.beta_bytes_per_s.tobytes()))
    assert all(m == mats[0] for m in mats)
    # one positive median per size on every link (how they compare is a benchmark's business)
    for (i, j), times in res.one_way_s.items():
        assert len(times) == len(res.sizes) and min(times) > 0, (i, j, times)


@pytest.mark.hpccloud_mpi(ranks=[2, 3], timeout=120)
def test_transport_probe_times_one_call_on_every_rank(comm):
    from hpccloud.comm.topology import load_topology
    from hpccloud.measure.probe import (
        PROBE_BURST_SHARDS,
        PROBE_CLASS,
        PROBE_SHARD_BYTES_MAX,
        probe_transport,
    )

    topo = load_topology(None, comm)
    assert PROBE_CLASS not in topo.data_classes  # the job's classes are left as they are
    res = probe_transport(comm, topo, rounds=4, warmup=1)
    assert len(res.rounds_s) == 4 and res.warmup == 1
    assert all(np.isfinite(t) and t > 0 for t in res.rounds_s)
    assert res.fixed_s == pytest.approx(float(np.median(res.rounds_s)))
    # the slowest rank's time of each round: the same figures on every rank
    assert all(r == res.rounds_s for r in comm.allgather(res.rounds_s))
    # ... and of every rank passing its shard on at once (the shard-sized rounds' base)
    assert np.isfinite(res.ring_s) and res.ring_s > 0
    assert all(r == res.ring_s for r in comm.allgather(res.ring_s))
    assert res.to_json()["ring_s"] == res.ring_s
    assert res.to_json()["provenance"] == "measured"
    # one rank's PROBE_BURST_SHARDS shards moving together: what each further call adds
    assert np.isfinite(res.burst_s) and res.burst_s > 0
    assert res.per_call_s == pytest.approx(max(0.0, res.burst_s - res.fixed_s) / (PROBE_BURST_SHARDS - 1))
    assert all(r == (res.burst_s, res.per_call_s) for r in comm.allgather((res.burst_s, res.per_call_s)))
    assert res.to_json()["per_call_s"] == res.per_call_s
    assert res.shard_bytes == 0 and not np.isfinite(res.s_per_byte)  # no shard-sized rounds asked
    # shard-sized rounds: per-byte prices of a move and of a copy, the same on every rank
    big = probe_transport(comm, topo, rounds=2, warmup=1, shard_bytes=3 << 20)
    assert big.shard_bytes == 3 << 20
    assert np.isfinite(big.s_per_byte) and big.s_per_byte >= 0
    assert np.isfinite(big.copy_s_per_byte) and big.copy_s_per_byte > 0
    assert np.isfinite(big.fresh_s_per_byte) and 0 <= big.fresh_s_per_byte < 1e-6
    assert all(r == (big.s_per_byte, big.copy_s_per_byte, big.fresh_s_per_byte)
               for r in comm.allgather((big.s_per_byte, big.copy_s_per_byte, big.fresh_s_per_byte)))
    assert big.to_json()["shard_bytes"] == 3 << 20
    capped = probe_transport(comm, topo, rounds=1, warmup=0, shard_bytes=1 << 40)
    assert capped.shard_bytes == PROBE_SHARD_BYTES_MAX  # a huge shard is probed at the cap
    # sealed (the job's key): still one figure, and the job's classes untouched
    sealed = probe_transport(comm, topo, key=bytes(range(32)), rounds=2, warmup=0)
    assert np.isfinite(sealed.fixed_s) and sealed.fixed_s > 0
    assert PROBE_CLASS not in topo.data_classes


@pytest.mark.hpccloud_mpi(ranks=[1, 2], timeout=120)
def test_packing_probe_times_the_workloads_own_round_trip_and_leaves_the_data(comm):
    from hpccloud.comm.bufpool import BufferPool
    from hpccloud.measure.probe import probe_packing
    from hpccloud.workloads import make_workload

    size, rank = comm.Get_size(), comm.Get_rank()
    figures = {}
    for name, params in (("stencil2d", {"n": 256, "grid": 4}), ("spmv", {"n": 40_000, "shards": 8})):
        wl = make_workload(name, params)
        wl.pool = BufferPool()
        shard_map = wl.shard_map(size)
        local = {s.id: wl.initial(s) for s in shard_map.shards_on(rank)}
        before = {sid: (arr, arr.copy()) for sid, arr in local.items()}
        rows = {sid: tuple(a.copy() for a in wl._rows[sid]) for sid in local} if name == "spmv" else {}
        figure = probe_packing(comm, wl, shard_map, local)
        assert np.isfinite(figure) and figure > 0
        assert all(f == figure for f in comm.allgather(figure))  # the slowest rank's, everywhere
        # the shards' arrays are the same objects with the same values ...
        for sid, (arr, copy) in before.items():
            assert local[sid] is arr and np.array_equal(arr, copy)
        # ... and what the workload keeps per shard was rebuilt as it was (spmv's rows)
        for sid, kept in rows.items():
            assert all(np.array_equal(a, b) for a, b in zip(wl._rows[sid], kept, strict=True))
        figures[name] = figure
    # spmv regenerates a shard's CSR rows on arrival (~24 bytes written per byte moved, by a
    # random generator), stencil2d copies its tile twice: per byte, ~100x apart when measured
    assert figures["spmv"] > 5 * figures["stencil2d"]
    # a rank holding no shard still takes part; with none anywhere the figure is NaN
    wl = make_workload("kmeans", {})
    assert np.isnan(probe_packing(comm, wl, wl.shard_map(size), {}))


@pytest.mark.hpccloud_mpi(ranks=[2], timeout=120)
def test_packing_probe_that_fails_on_one_rank_fails_on_every_rank(comm):
    from hpccloud.measure.probe import probe_packing
    from hpccloud.workloads import make_workload

    wl = make_workload("kmeans", {})
    shard_map = wl.shard_map(comm.Get_size())
    local = {s.id: wl.initial(s) for s in shard_map.shards_on(comm.Get_rank())}
    if comm.Get_rank() == 1:
        def broken(shard, arr):
            raise RuntimeError("pack failed here")
        wl.pack = broken
    with pytest.raises(Exception, match="pack failed here"):
        probe_packing(comm, wl, shard_map, local)  # no rank left waiting in the gather
