"""The move plan without MPI: routes, protection, pieces, headers, residency, records."""

import dataclasses

import numpy as np
import pytest

from hpccloud.comm.audit import TransferRecord
from hpccloud.comm.moveplan import (
    CHUNK_BYTES,
    HASHED,
    HEADER_BYTES,
    HEADER_FIELDS,
    HEADER_ONLY,
    HEADER_STRUCT,
    MAX_CHUNK_BYTES,
    SEALED,
    Move,
    MovePlan,
    header_checksum,
    header_problem,
    pieces,
    protection_of,
    wire_layout,
)
from hpccloud.errors import InvalidArgument, ResidencyError
from hpccloud.policy import Policy
from hpccloud.shards import block_1d
from hpccloud.topology import read_topology_text, topology_from_text


def _policy(size):
    text, source = read_topology_text(None)
    return Policy.from_topology(topology_from_text(text, source, size, ["node"] * size))


@pytest.mark.parametrize("nbytes,chunk", [(0, 5), (1, 5), (10, 5), (11, 5), (3 << 30, 1 << 30)])
def test_pieces_cover_the_payload_in_order(nbytes, chunk):
    got = pieces(nbytes, chunk)
    assert [a for a, _ in got] == list(range(0, nbytes, chunk))
    assert all(0 < b - a <= chunk for a, b in got) and (not got or got[-1][1] == nbytes)


def test_sealed_layout_adds_nonce_and_tag_per_piece():
    lay = wire_layout(10, 4, True)
    assert [b - a for a, b, _, _ in lay] == [4, 4, 2]
    assert [wb - wa for _, _, wa, wb in lay] == [32, 32, 30]
    assert all(lay[k][3] == lay[k + 1][2] for k in range(2))
    assert wire_layout(10, 4, False) == tuple((a, b, a, b) for a, b in pieces(10, 4))


@pytest.mark.parametrize("same_region,same_host,sealed,verify,expect", [
    (True, True, False, "route", HEADER_ONLY),
    (False, True, False, "route", HEADER_ONLY),   # a region border on one host: memory traffic
    (True, False, False, "route", HASHED),        # leaves the host (other node or netns)
    (True, True, False, "all", HASHED),
    (False, True, True, "route", SEALED),         # sealed: the tag authenticates, no hash
    (False, False, True, "all", SEALED),
    (True, False, True, "route", HASHED),         # a key only seals cross-region moves
])
def test_protection_by_route(same_region, same_host, sealed, verify, expect):
    regions = ["a", "a" if same_region else "b"]
    hosts = [1, 1 if same_host else 2]
    assert protection_of(0, 1, regions, hosts, sealed=sealed, verify=verify) == expect


def _three_rank_plan(rank, hosts=(5, 5, 9), sealed=False, verify="route", chunk_bytes=1000):
    policy = _policy(3)
    m = block_1d(3 * 600, 6, "<f8", 3)  # 300 float64 = 2400 bytes per shard
    after = (m.owners() + 1) % 3
    return m, after, MovePlan.build(m, after, policy, rank=rank, hosts=list(hosts), sealed=sealed,
                                    verify=verify, chunk_bytes=chunk_bytes)


def test_plan_moves_protection_and_pieces_for_each_rank():
    m, after, plan = _three_rank_plan(0)
    regions = [_policy(3).topology.region_of(r) for r in range(3)]
    assert [mv.shard_id for mv in plan.moves] == list(range(6))
    for mv in plan.moves:
        assert (mv.src, mv.dst) == (int(m.owners()[mv.shard_id]), int(after[mv.shard_id]))
        assert (mv.src_region, mv.dst_region) == (regions[mv.src], regions[mv.dst])
        assert mv.nbytes == 2400 and mv.shape == (300,) and mv.dtype == "<f8"
        crosses_host = 2 in (mv.src, mv.dst)
        assert mv.protection == (HASHED if crosses_host else HEADER_ONLY)
        assert mv.leaves_host == crosses_host
        # unhashed payloads go whole (pieces only help to overlap hashing with the copy)
        assert mv.chunk_bytes == (1000 if crosses_host else MAX_CHUNK_BYTES)
        assert len(mv.layout) == (3 if crosses_host else 1)
    assert all(mv.src == 0 for mv in plan.sends) and all(mv.dst == 0 for mv in plan.recvs)
    assert [plan.moves[i] for i in plan.recv_rows] == list(plan.recvs)
    # the same plan for every rank, up to this rank's part
    for rank in (1, 2):
        assert _three_rank_plan(rank)[2].moves == plan.moves


def test_verify_all_and_sealed_routes():
    _, _, plan = _three_rank_plan(0, verify="all")
    assert {mv.protection for mv in plan.moves} == {HASHED}
    _, _, plan = _three_rank_plan(0, hosts=(1, 1, 1), sealed=True)
    policy = _policy(3)
    for mv in plan.moves:
        cross = policy.topology.region_of(mv.src) != policy.topology.region_of(mv.dst)
        assert mv.protection == (SEALED if cross else HEADER_ONLY)
        if cross:
            assert mv.wire_bytes == mv.nbytes + 28 * len(mv.layout)


def test_residency_checked_before_any_plan():
    policy = _policy(2)
    assert policy.topology.region_of(0) != policy.topology.region_of(1)
    m = block_1d(100, 2, "<f8", 2, data_class=["eu-personal", "public"]).with_owners(np.array([0, 0]))
    with pytest.raises(ResidencyError, match="shard 0"):
        MovePlan.build(m, np.array([1, 1]), policy, rank=0, hosts=[1, 1], sealed=False)
    plan = MovePlan.build(m, np.array([0, 1]), policy, rank=0, hosts=[1, 1], sealed=False)
    assert [mv.shard_id for mv in plan.moves] == [1]


@pytest.mark.parametrize("kwargs,match", [
    ({"verify": "none"}, "verify='none'"),
    ({"chunk_bytes": 0}, "chunk_bytes"),
    ({"chunk_bytes": MAX_CHUNK_BYTES + 1}, "chunk_bytes"),
    ({"hosts": [1, 1, 1]}, "has 3"),
])
def test_bad_arguments_are_named(kwargs, match):
    m = block_1d(100, 2, "<f8", 2)
    args = {"rank": 0, "hosts": [1, 1], "sealed": False, "verify": "route",
            "chunk_bytes": CHUNK_BYTES, **kwargs}
    with pytest.raises(InvalidArgument, match=match):
        MovePlan.build(m, np.array([1, 0]), _policy(2), **args)


def test_payload_checks_name_the_shard():
    m, after, plan = _three_rank_plan(0)
    sid = plan.sends[0].shard_id
    with pytest.raises(InvalidArgument, match=f"shard {sid} but has no data"):
        plan.check_payloads({})
    with pytest.raises(InvalidArgument, match="C-contiguous: False"):
        plan.check_payloads({sid: np.zeros(600)[::2]})
    with pytest.raises(InvalidArgument, match="<f4"):
        plan.check_payloads({sid: np.zeros(300, np.float32)})
    plan.check_payloads({s.shard_id: np.zeros(300) for s in plan.sends})


def test_header_problem_names_every_wrong_word():
    _, _, plan = _three_rank_plan(0)
    mv = plan.moves[0]
    good = mv.header(7, checksum=123)
    assert len(good) == HEADER_BYTES == 48 and header_checksum(good) == 123
    assert HEADER_STRUCT.unpack(good) == (mv.shard_id, mv.nbytes, 123, 7, len(mv.layout),
                                          mv.chunk_bytes)
    assert header_problem(good, mv, 7) is None  # the checksum is the route's business
    for k, field in enumerate(HEADER_FIELDS):
        for bit in (0, 63):  # the lowest and the highest bit of each word
            bad = bytearray(good)
            bad[8 * k + bit // 8] ^= 1 << (bit % 8)
            problem = header_problem(bad, mv, 7)
            assert (problem is None) == (field == "checksum"), (field, problem)
            if problem:
                assert problem.startswith(f"header says {field} "), problem
    assert "48" in header_problem(good[:40], mv, 7)


def test_records_carry_protection_and_checksum_only_when_hashed():
    _, _, plan = _three_rank_plan(0)
    rows = np.zeros((len(plan.moves), 4))
    rows[:, 0] = 0.5
    rows[:, 1] = 1e9
    rows[:, 2:] = [0x01234567, 0x89ABCDEF]
    recs = plan.records(rows, version=4)
    assert [r.shard_id for r in recs] == [mv.shard_id for mv in plan.moves]
    for r, mv in zip(recs, plan.moves, strict=True):
        assert r.protection == mv.protection and r.map_version == 5 and r.seconds == 0.5
        assert r.checksum == ("0123456789abcdef" if mv.protection == HASHED else "")
        assert r.to_json()["protection"] == mv.protection
        # built without __init__: every field set, nothing else, equal to a record made normally
        assert list(vars(r)) == [f.name for f in dataclasses.fields(TransferRecord)]
        assert r == TransferRecord(**vars(r)) == TransferRecord.from_json(r.to_json())


@pytest.mark.parametrize("sealed", [False, True])
@pytest.mark.parametrize("verify", ["route", "all"])
def test_vectorised_routes_match_the_rule_move_by_move(sealed, verify):
    """build_moves decides every route at once; each must be protection_of's answer."""
    rng = np.random.default_rng(4)
    regions = ["a", "b", "a", "c", "b"]
    hosts = [7, 7, 8, 8, 2**62 + 1]
    srcs, dsts = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    keep = srcs != dsts
    srcs, dsts = srcs[keep], dsts[keep]
    n = len(srcs)
    shapes = [(int(k),) for k in rng.integers(0, 5000, n)]
    dtypes = rng.choice(["<f8", "<i4", "|u1"], n).tolist()
    moves = MovePlan.build_moves(range(n), srcs, dsts, shapes=shapes, dtypes=dtypes,
                                 classes=["public"] * n, regions=regions, hosts=hosts, sealed=sealed,
                                 verify=verify, chunk_bytes=1000)
    for mv, src, dst, shape, dtype in zip(moves, srcs, dsts, shapes, dtypes, strict=True):
        prot = protection_of(int(src), int(dst), regions, hosts, sealed=sealed, verify=verify)
        assert (mv.src, mv.dst, mv.protection) == (src, dst, prot)
        assert mv.leaves_host == (hosts[src] != hosts[dst])
        assert mv.nbytes == shape[0] * np.dtype(dtype).itemsize
        assert mv.chunk_bytes == (MAX_CHUNK_BYTES if prot == HEADER_ONLY else 1000)
        assert mv.layout == wire_layout(mv.nbytes, mv.chunk_bytes, prot == SEALED)
        assert (mv.src_region, mv.dst_region) == (regions[src], regions[dst])
        # built without __init__: every field set, nothing else, equal to a Move made normally
        assert list(vars(mv)) == [f.name for f in dataclasses.fields(Move)]
        assert mv == Move(**vars(mv)) and hash(mv) == hash(Move(**vars(mv)))
