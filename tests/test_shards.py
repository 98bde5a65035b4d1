"""ShardMap and partitioners: pure, no MPI."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpccloud.errors import InvalidArgument
from hpccloud.shards import Shard, ShardMap, assign_owners, block_1d, split_even, tile_2d


def test_block_1d_covers_array_once():
    m = block_1d(103, 7, "<f4", size=3)
    covered = np.zeros(103, int)
    for s in m.shards:
        covered[s.index] += 1
        assert s.nbytes == s.shape[0] * 4 and s.work_units == s.shape[0]
    assert (covered == 1).all()
    assert m.owners().tolist() == sorted(m.owners().tolist())  # contiguous runs
    assert set(m.owners().tolist()) == {0, 1, 2}
    assert m.shards[0].neighbours == (1,) and m.shards[3].neighbours == (2, 4)


def test_tile_2d_geometry_and_neighbours():
    m = tile_2d((10, 12), (3, 4), "<f8", size=4)
    covered = np.zeros((10, 12), int)
    for s in m.shards:
        covered[s.index] += 1
    assert (covered == 1).all()
    assert m.shards[5].neighbours == (1, 4, 6, 9)
    assert m.shards[0].neighbours == (1, 4)
    # the halo graph is symmetric
    for s in m.shards:
        for n in s.neighbours:
            assert s.id in m.shards[n].neighbours


def test_halo_edges_bytes():
    m = tile_2d((10, 12), (2, 3), "<f8", size=2)  # tiles 5 rows x 4 cols
    u, v, b = m.halo_edges()
    assert (u < v).all() and len(u) == 7  # 2*2 horizontal + 3 vertical faces
    edges = {(int(a), int(c)): int(x) for a, c, x in zip(u, v, b, strict=True)}
    assert edges[(0, 1)] == 5 * 8  # side by side: face = tile height
    assert edges[(0, 3)] == 4 * 8  # stacked: face = tile width
    m0 = block_1d(10, 5, "<f8", size=1)
    assert m0.halo_edges()[2].tolist() == [0, 0, 0, 0]  # halo_width 0
    m1 = block_1d(10, 5, "<f8", size=1, halo_width=1)
    assert m1.halo_edges()[2].tolist() == [8, 8, 8, 8]


def test_weighted_owners_follow_speed():
    owners = assign_owners(np.ones(100), 3, speeds=[1.0, 2.0, 1.0])
    counts = np.bincount(owners, minlength=3)
    assert counts.tolist() == [25, 50, 25]
    with pytest.raises(InvalidArgument, match="speeds"):
        assign_owners(np.ones(4), 2, speeds=[1.0, -1.0])


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 200), st.integers(1, 16), st.integers(1, 8))
def test_split_even_and_owners_property(n, parts, size):
    parts = min(parts, n)
    spans = split_even(n, parts)
    lengths = [b - a for a, b in spans]
    assert sum(lengths) == n and max(lengths) - min(lengths) <= 1
    owners = assign_owners(np.asarray(lengths, float), size)
    assert owners.min() >= 0 and owners.max() < size
    assert (np.diff(owners) >= 0).all()


def test_json_round_trip_and_version():
    classes = lambda sid, idx: "eu-personal" if sid % 2 else "public"  # noqa: E731
    m = tile_2d((6, 6), (2, 3), "<i4", size=2, data_class=classes)
    d = json.loads(json.dumps(m.to_json()))
    back = ShardMap.from_json(d)
    assert back == m and back.shards == m.shards
    assert back.data_classes()[:2] == ["public", "eu-personal"]
    moved = m.with_owners(m.owners()[::-1].copy())
    assert moved.version == m.version + 1 and moved.owners().tolist() == m.owners()[::-1].tolist()
    w = m.with_work_units(np.arange(6.0))
    assert w.version == m.version and w.work_units().tolist() == list(range(6))
    assert [s.id for s in moved.shards_on(0)] == [3, 4, 5]
    with pytest.raises(InvalidArgument):
        m.with_owners(np.zeros(5, int))
    with pytest.raises(InvalidArgument, match="ShardMap JSON"):
        ShardMap.from_json({"shards": []})


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(0, 2**32 - 1), st.sampled_from(["<i8", "<i4", "<u2", "<u8"]))
def test_with_owners_fast_path_matches_a_fresh_map(n_shards, seed, owners_dtype):
    """The fast with_owners equals a map rebuilt from scratch, its caches included."""
    rng = np.random.default_rng(seed)
    classes = rng.choice(["public", "eu-personal"], n_shards).tolist()
    m = block_1d(10 * n_shards, n_shards, "<f8", 3, data_class=classes)
    keys = (m.data_classes_key(), m.layout_key())
    for _ in range(3):
        owners = rng.integers(0, 3, n_shards).astype(owners_dtype)
        moved = m.with_owners(owners)
        fresh = ShardMap(m.global_shape, m.dtype, [
            Shard(s.id, s.index, s.shape, s.dtype, s.nbytes, s.work_units, s.data_class, int(o),
                  s.neighbours) for s, o in zip(m.shards, owners, strict=True)], m.version + 1,
            m.grid, m.halo_width)
        assert moved == fresh and moved.shards == fresh.shards and moved.version == m.version + 1
        assert moved.owners().dtype == np.int64 and moved.owners().tolist() == owners.tolist()
        assert moved.owners_bytes() == fresh.owners_bytes() == owners.astype(np.int64).tobytes()
        assert (moved.data_classes_key(), moved.layout_key()) == keys
        assert (fresh.data_classes_key(), fresh.layout_key()) == keys
        m = moved


def test_with_owners_leaves_the_caller_and_the_parent_alone():
    m = block_1d(40, 4, "<f8", 2)
    owners = np.array([1, 1, 0, 0])
    moved = m.with_owners(owners)
    owners[0] = 0  # the caller's array is not the map's
    assert moved.owners().tolist() == [1, 1, 0, 0] and m.owners().tolist() == [0, 0, 1, 1]
    got = moved.owners()
    got[:] = 7  # nor is the array owners() hands out
    assert moved.owners().tolist() == [1, 1, 0, 0]
    # placement keeps the version; owners beyond int64 are kept as given (nonsense, not ours to judge)
    assert m.with_owners(np.array([0, 1, 0, 1]), version=0).version == 0
    huge = m.with_owners(np.array([2**64 - 1, 0, 0, 0], np.uint64))
    assert huge.shards[0].owner_rank == 2**64 - 1


def test_cache_keys_change_with_what_they_cover():
    m = block_1d(40, 4, "<f8", 2, data_class=["public", "eu-personal", "public", "public"])
    relabelled = m.with_classes(["public", "public", "public", "public"])
    assert relabelled.data_classes_key() != m.data_classes_key()
    assert relabelled.layout_key() != m.layout_key()
    reshaped = m.with_shapes({3: (9,)})
    assert reshaped.layout_key() != m.layout_key() and reshaped.data_classes_key() == m.data_classes_key()
    # work units are not part of either key, and the new map keeps the owners too
    w = m.with_owners(np.array([1, 0, 1, 0])).with_work_units(np.arange(4.0))
    assert (w.layout_key(), w.data_classes_key()) == (m.layout_key(), m.data_classes_key())
    assert w.owners().tolist() == [1, 0, 1, 0]
    # class names are kept apart exactly (no separator a name could contain)
    a = block_1d(20, 2, "<f8", 2, data_class=["x", "y,z"])
    b = block_1d(20, 2, "<f8", 2, data_class=["x,y", "z"])
    assert a.data_classes_key() != b.data_classes_key()
