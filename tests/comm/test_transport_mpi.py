"""Shard transport under real mpiexec: moves, residency, checksums, encryption, > 2 GiB."""

import os

import numpy as np
import pytest

from hpccloud.comm.audit import read_audit
from hpccloud.comm.topology import load_topology
from hpccloud.comm.transport import (
    CORRUPT_ENV,
    CORRUPT_HEADER_ENV,
    HOST_ENV,
    VERIFY_ENV,
    execute,
    load_key,
    reload_env,
)
from hpccloud.errors import ChecksumError, InvalidArgument, ResidencyError
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
                # one host: sealed across regions with a key, else the header check only
                assert r.protection == ("aes-gcm" if r.encrypted else "header")
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
        assert {"time", "shard_id", "data_class", "src_region", "dst_region", "nbytes", "checksum",
                "protection"} <= set(lines[0])
        assert {ln["protection"] for ln in lines} == {"aes-gcm", "header"}


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
    """Hashed (verify="all", or bytes leaving the host) and sealed routes catch a flipped byte."""
    for how in ("all-kwarg", "all-env", "cross-host", "sealed"):
        _corrupt_once(comm, how)


def _cross_region_public_plan(comm, seed=21):
    """Every public shard moves to the next rank; the victim's move crosses a region border."""
    policy, g, m, local, rng = _setup(comm, seed, grid=(2, 3))
    classes = m.data_classes()
    after = m.owners().copy()
    public = [s for s, c in enumerate(classes) if c == "public"]
    if not public:
        public = [int(np.flatnonzero(m.owners() == 0)[0])]
        m = _relabel(m, public[0], "public", policy)
    for s in public:
        after[s] = (after[s] + 1) % comm.Get_size()
    region = policy.topology.region_of
    crossing = [s for s in public if region(int(m.owners()[s])) != region(int(after[s]))]
    assert crossing, "test set-up: no cross-region move"
    return policy, g, m, local, after, crossing[-1]


def _corrupt_once(comm, how):
    policy, g, m, local, after, victim = _cross_region_public_plan(comm)
    before = {sid: a.copy() for sid, a in local.items()}
    kwargs, env = {}, {}
    if how == "all-kwarg":
        kwargs.update(corrupt=[victim], verify="all")
    elif how == "all-env":
        env.update({CORRUPT_ENV: str(victim), VERIFY_ENV: "all"})
    elif how == "cross-host":  # every rank on its own "host": the default policy hashes
        env.update({CORRUPT_ENV: str(victim), HOST_ENV: f"fake-host-{comm.Get_rank()}"})
    else:
        kwargs.update(corrupt=[victim], key=bytes(range(32)))
    expect = {"sealed": "aes-gcm"}.get(how, "xxh3-64")
    os.environ.update(env)
    reload_env()  # the transport reads its variables once per process
    run_comm = comm.Dup()  # host keys are made once per communicator
    try:
        with pytest.raises(ChecksumError) as info:
            execute(run_comm, m, local, after, policy, **kwargs)
        messages = run_comm.allgather(str(info.value))
        assert len(set(messages)) == 1 and f"shard {victim}" in messages[0], messages
        assert f"({expect})" in messages[0], messages
        for sid in before:
            assert np.array_equal(local[sid], before[sid])
        # without the hook the same plan goes through, with the route's protection
        for name in (CORRUPT_ENV,):
            os.environ.pop(name, None)
        reload_env()
        kwargs.pop("corrupt", None)
        m2, local2, recs = execute(run_comm, m, local, after, policy, **kwargs)
        assert recs[[r.shard_id for r in recs].index(victim)].protection == expect
        if how != "sealed":
            assert all(r.protection == "xxh3-64" and len(r.checksum) == 16 for r in recs), recs
        assert np.array_equal(_reassemble(run_comm, m2, local2, g.shape), g)
    finally:
        for name in env:
            os.environ.pop(name, None)
        reload_env()
        run_comm.Free()


@pytest.mark.hpccloud_mpi(ranks=[2, 3], timeout=120)
def test_same_host_header_checked_without_hashing(comm):
    """Same host, default policy: bytes are not hashed, but a wrong header is never accepted."""
    policy, g, m, local, rng = _setup(comm, 31, grid=(2, 3))
    after = np.array([(o + 1) % comm.Get_size() if c == "public" else o
                      for o, c in zip(m.owners(), m.data_classes(), strict=True)])
    if not (after != m.owners()).any():
        m = _relabel(m, 0, "public", policy)
        after[0] = (after[0] + 1) % comm.Get_size()
    victim = int(np.flatnonzero(after != m.owners())[-1])
    before = {sid: a.copy() for sid, a in local.items()}
    for field in ("shard_id", "nbytes", "map_version", "n_pieces", "chunk_bytes",
                  "env:map_version"):
        kwargs = {}
        if field.startswith("env:"):
            os.environ[CORRUPT_HEADER_ENV] = f"{victim}:{field[4:]}"
            reload_env()
        else:
            kwargs["corrupt_header"] = {victim: field}
        try:
            with pytest.raises(ChecksumError) as info:
                execute(comm, m, local, after, policy, **kwargs)
        finally:
            os.environ.pop(CORRUPT_HEADER_ENV, None)
            reload_env()
        messages = comm.allgather(str(info.value))
        assert len(set(messages)) == 1, messages
        assert f"shard {victim}" in messages[0] and field.split(":")[-1] in messages[0], messages
        assert "(header)" in messages[0], messages
        assert sorted(local) == sorted(before)
        for sid in before:
            assert np.array_equal(local[sid], before[sid])
    # the payload itself is not looked at on this route: a flipped byte arrives as sent
    m2, local2, recs = execute(comm, m, local, after, policy, corrupt=[victim])
    assert all(r.protection == "header" and r.checksum == "" for r in recs), recs
    out = _reassemble(comm, m2, local2, g.shape)
    diff = out.view(np.uint8) != g.view(np.uint8)
    assert diff.sum() == 1, "the hook flips one byte, and nothing hashed it"


@pytest.mark.hpccloud_mpi(ranks=[2], timeout=120)
def test_cached_plan_does_not_skip_residency(comm):
    """A plan seen before is reused only for the same data classes: a relabelled map is re-checked."""
    policy = Policy.from_topology(load_topology(None, comm))
    m = block_1d(64, 2, "<f8", 2).with_owners(np.array([0, 0]))
    local = {s.id: np.arange(32.0) + s.id for s in m.shards_on(comm.Get_rank())}
    after = np.array([0, 1])
    assert policy.topology.region_of(0) != policy.topology.region_of(1)
    m1, local1, _ = execute(comm, m, local, after, policy)  # public: allowed, and now cached
    m_eu = _relabel(m, 1, "eu-personal", policy)
    with pytest.raises(ResidencyError):
        execute(comm, m_eu, local, after, policy)
    m2, _, recs = execute(comm, m, local, after, policy)  # the cached plan again
    assert [r.shard_id for r in recs] == [1] and m2.version == m.version + 1


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
    after = np.array([(int(m.owners()[0]) + 1) % size])
    m, local, recs = execute(comm, m, local, after, policy, pool=pool, verify="all")
    assert recs[0].protection == "xxh3-64"
    owner = int(m.owners()[0])
    after = np.array([(owner + 1) % size])
    good = {0: int(recs[0].checksum, 16)} if rank == owner else None
    m2, local2, _ = execute(comm, m, local, after, policy, checksums=good, pool=pool, verify="all")
    assert (rank != int(after[0])) or np.array_equal(local2[0], big[:n])
    stale = {0: int(recs[0].checksum, 16) ^ 1} if rank == int(after[0]) else None
    with pytest.raises(ChecksumError):
        execute(comm, m2, local2, np.array([owner]), policy, checksums=stale, pool=pool,
                verify="all")
    assert (rank != int(after[0])) or np.array_equal(local2[0], big[:n])


@pytest.mark.hpccloud_mpi(ranks=[2], timeout=120)
def test_differing_owners_before_fail_everywhere_before_a_byte_moves(comm):
    """The agreement digest covers the owners before: ranks holding different maps stop at once.

    Rank 1 believes both shards are on rank 0 and waits for two; rank 0 sends one.
    Both ranks' own checks pass, so only the digest can tell (without it: a hang).
    """
    rank = comm.Get_rank()
    policy = Policy.from_topology(load_topology(None, comm))
    m = block_1d(64, 2, "<f8", 2).with_owners(np.array([0, 1]))
    mine = m if rank == 0 else m.with_owners(np.array([0, 0]), version=m.version)
    local = {s.id: np.arange(32.0) + s.id for s in m.shards_on(rank)}
    before = {sid: a.copy() for sid, a in local.items()}
    with pytest.raises(InvalidArgument, match="differs between ranks") as info:
        execute(comm, mine, local, np.array([1, 1]), policy)
    assert len(set(comm.allgather(str(info.value)))) == 1
    assert all(np.array_equal(local[sid], a) for sid, a in before.items())
    m2, local2, recs = execute(comm, m, local, np.array([1, 1]), policy)  # the same map: moves
    assert [r.shard_id for r in recs] == [0] and sorted(local2) == ([] if rank == 0 else [0, 1])


@pytest.mark.hpccloud_mpi(ranks=[2], timeout=120)
def test_plan_that_moves_nothing(comm, tmp_path_factory):
    """Owners unchanged: a new version, the same payloads, no records and nothing audited."""
    rank = comm.Get_rank()
    folder = comm.bcast(str(tmp_path_factory.mktemp("audit")) if rank == 0 else None)
    audit = os.path.join(folder, "audit.jsonl")
    policy = Policy.from_topology(load_topology(None, comm))
    m = block_1d(64, 2, "<f8", 2)
    local = {s.id: np.arange(32.0) + s.id for s in m.shards_on(rank)}
    m2, local2, recs = execute(comm, m, local, m.owners(), policy, audit=audit, key=bytes(32))
    assert recs == [] and m2.version == m.version + 1 and m2.owners().tolist() == m.owners().tolist()
    assert sorted(local2) == sorted(local) and all(local2[k] is local[k] for k in local)
    assert local2 is not local
    assert not os.path.exists(audit)
    # residency is checked all the same
    with pytest.raises(ResidencyError):
        execute(comm, _relabel(m, 0, "eu-personal", policy), local,
                np.array([policy.topology.ranks_in("us-east")[0], 1]), policy)


@pytest.mark.hpccloud_mpi(ranks=[2], timeout=120)
def test_environment_is_read_once_and_a_bad_value_fails_everywhere(comm):
    rank = comm.Get_rank()
    policy = Policy.from_topology(load_topology(None, comm))
    m = block_1d(64, 2, "<f8", 2).with_owners(np.array([0, 0]))
    local = {s.id: np.arange(32.0) + s.id for s in m.shards_on(rank)}
    before = {sid: a.copy() for sid, a in local.items()}
    after = np.array([0, 1])
    reload_env()  # read now, without the variables
    try:
        os.environ[VERIFY_ENV] = "all"
        m2, _, recs = execute(comm, m, local, after, policy)  # not re-read: the route decides
        assert [r.protection for r in recs] == ["header"]
        reload_env()
        m2, _, recs = execute(comm, m, local, after, policy)
        assert [r.protection for r in recs] == ["xxh3-64"]
        for name, value in ((CORRUPT_ENV, "3,x"), (CORRUPT_HEADER_ENV, "1-nbytes"),
                            (VERIFY_ENV, "none")):
            os.environ[name] = value
            reload_env()
            with pytest.raises(InvalidArgument, match=name) as info:
                execute(comm, m, local, after, policy)
            assert len(set(comm.allgather(str(info.value)))) == 1
            assert all(np.array_equal(local[sid], a) for sid, a in before.items())
            os.environ.pop(name)
    finally:
        for name in (VERIFY_ENV, CORRUPT_ENV, CORRUPT_HEADER_ENV):
            os.environ.pop(name, None)
        reload_env()
    m2, _, recs = execute(comm, m, local, after, policy)
    assert [r.protection for r in recs] == ["header"]


@pytest.mark.hpccloud_mpi(ranks=[2], timeout=120)
def test_bad_known_checksum_fails_everywhere_before_a_byte_moves(comm):
    """A digest that does not fit the header is caught in the agreement round, on every rank
    (after it, the sender alone would raise and leave the receiver waiting)."""
    rank = comm.Get_rank()
    policy = Policy.from_topology(load_topology(None, comm))
    m = block_1d(64, 1, "<f8", 2).with_owners(np.array([0]))
    local = {0: np.arange(64.0)} if rank == 0 else {}
    for bad in (1 << 64, -1, "00ff"):
        with pytest.raises(InvalidArgument, match="checksums") as info:
            execute(comm, m, local, np.array([1]), policy, verify="all",
                    checksums={0: bad} if rank == 0 else None)
        assert len(set(comm.allgather(str(info.value)))) == 1
    good = {0: int(np.uint64(0))} if rank == 0 else None  # numpy ints are digests too (stale here)
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        execute(comm, m, local, np.array([1]), policy, verify="all", checksums=good)
    assert rank == 1 or np.array_equal(local[0], np.arange(64.0))
