"""Shard transport under real mpiexec: moves, residency, checksums, encryption, > 2 GiB."""

import os

import numpy as np
import pytest

from hpccloud.comm.audit import read_audit
from hpccloud.comm.topology import load_topology
from hpccloud.comm.transport import CORRUPT_ENV, execute, load_key
from hpccloud.errors import ChecksumError, ResidencyError
from hpccloud.policy import Policy
from hpccloud.shards import block_1d, tile_2d

SEEDS = [11, 12, 13, 14, 15]


def _setup(comm, seed, shape=(37, 29), grid=(3, 4)):
    """A random global array, random data classes and a residency-respecting start."""
    policy = Policy.from_topology(load_topology(None, comm))
    rng = np.random.default_rng(seed)
    global_array = rng.standard_normal(shape)
    n_shards = grid[0] * grid[1]
    classes = rng.choice(["public", "eu-personal"], size=n_shards).tolist()
    m = tile_2d(shape, grid, "<f8", comm.Get_size(), data_class=classes)
    m = m.with_owners(_random_allowed_owners(rng, policy, classes))
    local = {s.id: np.ascontiguousarray(global_array[s.index]) for s in m.shards_on(comm.Get_rank())}
    return policy, global_array, m, local, rng


def _random_allowed_owners(rng, policy, classes):
    mask = policy.allowed_mask(classes)
    return np.array([rng.choice(np.flatnonzero(row)) for row in mask], np.int64)


def _reassemble(comm, m, local, shape):
    parts = comm.allgather({sid: a for sid, a in local.items()})
    out = np.full(shape, np.nan)
    seen = []
    for rank, part in enumerate(parts):
        for sid, a in part.items():
            assert m.shards[sid].owner_rank == rank, f"shard {sid} held by rank {rank}, map says otherwise"
            out[m.shards[sid].index] = a
            seen.append(sid)
    assert sorted(seen) == list(range(len(m)))
    return out


@pytest.mark.hpccloud_mpi(ranks=[2, 3, 4], timeout=120)
def test_random_plans_move_shards_bit_identical(comm, tmp_path_factory):
    rank = comm.Get_rank()
    base = comm.bcast(int(np.random.SeedSequence().entropy % 2**31) if rank == 0 else None)
    folder = comm.bcast(str(tmp_path_factory.mktemp("audit")) if rank == 0 else None)
    key_path = os.path.join(folder, "key.hex")
    if rank == 0:
        with open(key_path, "w") as fh:
            fh.write(os.urandom(32).hex())
    comm.Barrier()
    audit = os.path.join(folder, "audit.jsonl")
    total_moves = 0
    for seed in [*SEEDS, base]:
        policy, g, m, local, rng = _setup(comm, seed)
        for step in range(3):
            after = _random_allowed_owners(rng, policy, m.data_classes())
            key = load_key(key_path) if (seed + step) % 2 else None
            moving = int((after != m.owners()).sum())
            m2, local, records = execute(comm, m, local, after, policy, key=key, audit=audit,
                                         chunk_bytes=int(rng.choice([64, 1000, 1 << 20])))
            assert m2.version == m.version + 1 and (m2.owners() == after).all()
            assert len(records) == moving
            for r in records:
                assert r.src_rank == m.shards[r.shard_id].owner_rank and r.dst_rank == after[r.shard_id]
                assert r.encrypted == (key is not None and r.src_region != r.dst_region)
                assert policy.may_live(r.data_class, r.dst_region)
            total_moves += moving
            m = m2
            # the map (and records) are identical on every rank
            maps = comm.allgather((m.version, m.owners().tolist(), [r.checksum for r in records]))
            assert all(x == maps[0] for x in maps), f"seed {seed}: maps differ: {maps}"
        out = _reassemble(comm, m, local, g.shape)
        assert np.array_equal(out.view(np.uint64), g.view(np.uint64)), f"seed {seed} (base {base})"
    comm.Barrier()
    if rank == 0:
        lines = read_audit(audit)
        assert len(lines) == total_moves
        assert {"time", "shard_id", "data_class", "src_region", "dst_region", "nbytes", "checksum"} <= set(lines[0])


@pytest.mark.hpccloud_mpi(ranks=[2, 3, 4], timeout=120)
def test_forged_plan_moves_nothing_and_fails_everywhere(comm):
    policy, g, m, local, rng = _setup(comm, 7)
    before = {sid: a.copy() for sid, a in local.items()}
    us_rank = policy.topology.ranks_in("us-east")[0]
    classes = m.data_classes()
    after = m.owners().copy()
    # keep a legal move in the plan too: nothing at all may move
    legal = next(s for s, c in enumerate(classes) if c == "public")
    after[legal] = (after[legal] + 1) % comm.Get_size()
    forged = next((s for s, c in enumerate(classes) if c == "eu-personal"), None)
    if forged is None:  # make one shard eu-personal
        forged = (legal + 1) % len(m)
    m = _relabel(m, forged, "eu-personal", policy)
    after[forged] = us_rank
    local_after = None
    with pytest.raises(ResidencyError) as info:
        local_after = execute(comm, m, local, after, policy)
    assert local_after is None
    messages = comm.allgather(str(info.value))
    assert len(set(messages)) == 1 and f"shard {forged}" in messages[0] and "us-east" in messages[0]
    assert sorted(local) == sorted(before)
    for sid in before:
        assert np.array_equal(local[sid], before[sid])
    # the same shards are still where they were, on every rank: reassemble from the old map
    out = _reassemble(comm, m, local, g.shape)
    assert np.array_equal(out, g)


def _relabel(m, sid, data_class, policy):
    from dataclasses import replace

    from hpccloud.shards import ShardMap

    shards = list(m.shards)
    allowed = sorted(policy.allowed_ranks(data_class))
    if shards[sid].owner_rank not in allowed:
        raise AssertionError("test set-up: relabelled shard must start in an allowed region")
    shards[sid] = replace(shards[sid], data_class=data_class)
    return ShardMap(m.global_shape, m.dtype, shards, m.version, m.grid, m.halo_width)


@pytest.mark.hpccloud_mpi(ranks=[2, 3], timeout=120)
def test_corrupted_payload_detected_and_rejected(comm):
    for how in ("kwarg", "env", "encrypted"):
        _corrupt_once(comm, how)


def _corrupt_once(comm, how):
    policy, g, m, local, rng = _setup(comm, 21, grid=(2, 3))
    classes = m.data_classes()
    # move every public shard to the next rank: at least one cross-region move
    after = m.owners().copy()
    public = [s for s, c in enumerate(classes) if c == "public"] or [0]
    for s in public:
        after[s] = (after[s] + 1) % comm.Get_size()
        classes[s] = "public"
    m = _relabel(m, public[0], "public", policy)
    victim = public[-1]
    before = {sid: a.copy() for sid, a in local.items()}
    kwargs = {}
    if how == "kwarg":
        kwargs["corrupt"] = [victim]
    elif how == "env":
        os.environ[CORRUPT_ENV] = str(victim)
    else:
        kwargs["corrupt"] = [victim]
        kwargs["key"] = bytes(range(32))
    try:
        with pytest.raises(ChecksumError) as info:
            execute(comm, m, local, after, policy, **kwargs)
    finally:
        os.environ.pop(CORRUPT_ENV, None)
    messages = comm.allgather(str(info.value))
    assert len(set(messages)) == 1 and f"shard {victim}" in messages[0]
    for sid in before:
        assert np.array_equal(local[sid], before[sid])
    # without the hook the same plan goes through
    m2, local2, recs = execute(comm, m, local, after, policy, key=kwargs.get("key"))
    assert np.array_equal(_reassemble(comm, m2, local2, g.shape), g)


@pytest.mark.slow
@pytest.mark.hpccloud_mpi(ranks=[2], timeout=240)
def test_shard_over_2_gib_moves_intact(comm):
    policy = Policy.from_topology(load_topology(None, comm))
    n = (2 << 30) // 8 + (1 << 20)  # 2 GiB + 8 MiB of uint64
    m = block_1d(n, 1, "<u8", comm.Get_size())
    assert m.shards[0].nbytes > 2**31 and m.owners().tolist() == [0]
    local = {0: np.arange(n, dtype=np.uint64)} if comm.Get_rank() == 0 else {}
    m2, local, records = execute(comm, m, local, np.array([1]), policy, chunk_bytes=256 << 20)
    assert m2.owners().tolist() == [1] and records[0].nbytes == n * 8
    if comm.Get_rank() == 1:
        a = local[0]
        step = 1 << 24
        for lo in range(0, n, step):  # compare piecewise: no second 2 GiB array
            hi = min(lo + step, n)
            assert np.array_equal(a[lo:hi], np.arange(lo, hi, dtype=np.uint64)), f"mismatch in [{lo}, {hi})"
    else:
        assert local == {}


@pytest.mark.hpccloud_mpi(ranks=[2, 3], timeout=120)
def test_pooled_moves_and_known_checksums(comm):
    from hpccloud.comm.bufpool import BufferPool

    rank, size = comm.Get_rank(), comm.Get_size()
    policy = Policy.from_topology(load_topology(None, comm))
    n = 3 * (1 << 16) + 5  # several pieces, the last one short
    big = np.random.default_rng(3).standard_normal(2 * n)  # shard 0 starts as a view of `big`
    m = block_1d(n, 1, "<f8", size)
    m = m.with_owners(np.array([0]))
    local = {0: big[:n]} if rank == 0 else {}
    pool = BufferPool()
    key = bytes(range(32))
    for step in range(2 * size):
        after = np.array([(step + 1) % size])
        m, local, recs = execute(comm, m, local, after, policy, pool=pool, chunk_bytes=1 << 16,
                                 key=key if step % 2 else None)
        if rank == int(after[0]):
            assert np.array_equal(local[0], big[:n]), f"step {step}"
    # the caller's bigger array was never recycled into a receive buffer
    assert np.array_equal(big[:n], np.random.default_rng(3).standard_normal(2 * n)[:n])
    # a known checksum skips the sender's hashing; a stale one is caught by the receiver
    owner = int(m.owners()[0])
    after = np.array([(owner + 1) % size])
    good = {0: int(recs[0].checksum, 16)} if rank == owner else None
    m2, local2, _ = execute(comm, m, local, after, policy, checksums=good, pool=pool)
    assert (rank != int(after[0])) or np.array_equal(local2[0], big[:n])
    stale = {0: int(recs[0].checksum, 16) ^ 1} if rank == int(after[0]) else None
    with pytest.raises(ChecksumError):
        execute(comm, m2, local2, np.array([owner]), policy, checksums=stale, pool=pool)
    assert (rank != int(after[0])) or np.array_equal(local2[0], big[:n])
