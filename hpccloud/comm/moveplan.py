"""The move plan: who sends which shard to whom, in which pieces, under which protection.

Pure and MPI-free (rank, hosts and regions are arguments), so every decision
the transport takes before a byte moves can be unit-tested in one process:

- **Residency.** :meth:`MovePlan.build` runs :meth:`hpccloud.policy.Policy.check_owners`
  on the plan; a plan that breaks residency never becomes a :class:`MovePlan`.
- **Protection by route** (:func:`protection_of`). Every move gets one of

  ``"aes-gcm"``
      sealed (a key is given and the move crosses a region border): each piece
      is AES-GCM encrypted and authenticated by its tag; no second hash.
  ``"xxh3-64"``
      the bytes leave the host (another node, or another network namespace on
      the same node, as in :mod:`hpccloud.testing.netns`), or ``verify="all"``:
      xxh3-64 of the plaintext, streamed piece by piece on both sides and
      compared on receipt.
  ``"header"``
      the bytes stay on one host (shared memory: the kernel copies them like
      any other memory traffic) and ``verify="route"`` (the default): no hash,
      only the header check below.

- **Pieces.** Hashed and sealed payloads travel in pieces of ``chunk_bytes``
  (hashing or sealing one piece overlaps with moving the others); unhashed
  ones in pieces of :data:`MAX_CHUNK_BYTES` (1 GiB; one message up to 1 GiB, as
  raw ``Send`` would). No message ever exceeds 2 GiB.
- **Header.** Every payload is followed or preceded by a fixed 48-byte header,
  six little-endian ``uint64`` words packed with :mod:`struct`
  (:data:`HEADER_STRUCT`): ``[shard_id, nbytes, checksum, map_version,
  n_pieces, chunk_bytes]`` (``checksum`` 0 unless the route is ``"xxh3-64"``).
  The receiver always checks every word but the checksum against its own
  plan (:func:`header_problem`), whatever the protection.

>>> pieces(10, 4)
[(0, 4), (4, 8), (8, 10)]
>>> protection_of(0, 1, ["eu", "us"], [7, 7], sealed=False, verify="route")
'header'
>>> protection_of(0, 1, ["eu", "us"], [7, 8], sealed=False, verify="route")
'xxh3-64'
>>> protection_of(0, 1, ["eu", "us"], [7, 7], sealed=True, verify="route")
'aes-gcm'
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from hpccloud.comm.audit import TransferRecord
from hpccloud.errors import InvalidArgument

CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 1 << 30
GCM_NONCE_BYTES = 12
GCM_TAG_BYTES = 16
HEADER_WORDS = 6
HEADER_FIELDS = ("shard_id", "nbytes", "checksum", "map_version", "n_pieces", "chunk_bytes")
HEADER_STRUCT = struct.Struct("<6Q")
HEADER_BYTES = HEADER_STRUCT.size  # 48
_CHECKSUM_AT = (8 * HEADER_FIELDS.index("checksum"), 8 * HEADER_FIELDS.index("checksum") + 8)

SEALED = "aes-gcm"
HASHED = "xxh3-64"
HEADER_ONLY = "header"
PROTECTIONS = (HEADER_ONLY, HASHED, SEALED)  # MovePlan.build_moves codes routes by this order
VERIFY_MODES = ("route", "all")


def pieces(nbytes: int, chunk_bytes: int) -> list[tuple[int, int]]:
    """Byte ranges ``[a, b)`` cutting ``nbytes`` into pieces of at most ``chunk_bytes``."""
    return [(o, min(o + chunk_bytes, nbytes)) for o in range(0, nbytes, chunk_bytes)]


@lru_cache(maxsize=1024)  # shards of one size share their layout
def wire_layout(nbytes: int, chunk_bytes: int, sealed: bool) -> tuple[tuple[int, int, int, int], ...]:
    """Per piece ``(a, b, wa, wb)``: plaintext bytes ``[a, b)`` travel as wire bytes ``[wa, wb)``.

    Sealed pieces are ``nonce (12) | ciphertext | GCM tag (16)``; clear ones are
    the plaintext itself.

    >>> wire_layout(10, 4, True)[1]
    (4, 8, 32, 64)
    """
    extra = GCM_NONCE_BYTES + GCM_TAG_BYTES if sealed else 0
    return tuple((a, b, a + k * extra, b + (k + 1) * extra)
                 for k, (a, b) in enumerate(pieces(nbytes, chunk_bytes)))


def aad(shard_id: int, src: int, dst: int, version: int, piece: int, n_pieces: int) -> bytes:
    """AES-GCM associated data binding a sealed piece to its shard, route, map version and place.

    Pieces cannot be swapped, replayed into another move, or dropped.
    """
    return struct.pack("<6q", shard_id, src, dst, version, piece, n_pieces)


def protection_of(src: int, dst: int, regions: Sequence[str], hosts: Sequence[int], *,
                  sealed: bool, verify: str) -> str:
    """The protection of a move from rank ``src`` to rank ``dst`` (see the module docstring).

    ``regions[r]`` is rank r's region; ``hosts[r]`` identifies its host (equal
    keys: the ranks share memory); ``sealed``: a key was given.
    """
    if sealed and regions[src] != regions[dst]:
        return SEALED
    if verify == "all" or hosts[src] != hosts[dst]:
        return HASHED
    return HEADER_ONLY


@dataclass(frozen=True)
class Move:
    """One shard's move and everything both ends need to know about it."""

    shard_id: int
    src: int
    dst: int
    src_region: str
    dst_region: str
    data_class: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    protection: str
    chunk_bytes: int
    layout: tuple[tuple[int, int, int, int], ...]
    leaves_host: bool = False

    @property
    def wire_bytes(self) -> int:
        return self.layout[-1][3] if self.layout else 0

    def header(self, version: int, checksum: int = 0) -> bytes:
        """The header the sender sends for this move (:data:`HEADER_BYTES` packed bytes)."""
        return HEADER_STRUCT.pack(self.shard_id, self.nbytes, checksum, version, len(self.layout),
                                  self.chunk_bytes)


def header_checksum(header) -> int:
    """The checksum word of a packed header."""
    return int.from_bytes(header[_CHECKSUM_AT[0]:_CHECKSUM_AT[1]], "little")


def header_problem(header, move: Move, version: int) -> str | None:
    """What is wrong with a received ``header`` for ``move`` (the checksum aside), or None.

    ``header`` is any buffer of :data:`HEADER_BYTES` bytes. The common case (all
    well) is two byte-string comparisons; the words are unpacked only to name
    what is wrong.

    >>> m = MovePlan.build_moves([3], [0], [1], shapes=[(2,)], dtypes=["<f8"],
    ...     classes=["public"], regions=["a", "a"], hosts=[1, 1], sealed=False,
    ...     verify="route", chunk_bytes=8)[0]
    >>> header_problem(m.header(5), m, 5) is None
    True
    >>> header_problem(m.header(4), m, 5)
    'header says map_version 4, expected 5'
    """
    expect = move.header(version)
    got = memoryview(header).cast("B")
    a, b = _CHECKSUM_AT
    if len(got) == HEADER_BYTES and got[:a] == expect[:a] and got[b:] == expect[b:]:
        return None
    if len(got) != HEADER_BYTES:
        return f"header has {len(got)} bytes, expected {HEADER_BYTES}"
    words, want = HEADER_STRUCT.unpack(got), HEADER_STRUCT.unpack(expect)
    wrong = [k for k in range(HEADER_WORDS) if k != 2 and words[k] != want[k]]
    return "header says " + ", ".join(
        f"{HEADER_FIELDS[k]} {words[k]}, expected {want[k]}" for k in wrong)


@dataclass(frozen=True)
class MovePlan:
    """Every move of one migration, in shard-id order, and this rank's part in it.

    Build with :meth:`build`; the same plan (up to ``rank``) on every rank.
    """

    moves: tuple[Move, ...]
    rank: int
    sends: tuple[Move, ...]
    recvs: tuple[Move, ...]
    recv_rows: tuple[int, ...]  # position in ``moves`` of each of ``recvs``

    @staticmethod
    def build_moves(shard_ids, srcs, dsts, *, shapes, dtypes, classes, regions, hosts,
                    sealed: bool, verify: str, chunk_bytes: int) -> list[Move]:
        """The :class:`Move` of each ``(shard_ids[i], srcs[i], dsts[i])`` (no checks).

        The routes are decided for all moves at once (:func:`protection_of`'s rule
        over arrays); shards of one size share their piece layout.
        """
        srcs, dsts = np.asarray(srcs, np.int64), np.asarray(dsts, np.int64)
        region_code = {name: i for i, name in enumerate(dict.fromkeys(regions))}
        rank_region = np.fromiter((region_code[g] for g in regions), np.int64, len(regions))
        host = np.asarray(hosts, np.int64)
        leaves = host[srcs] != host[dsts]
        hashed = leaves | (verify == "all")
        if sealed:
            crossing = rank_region[srcs] != rank_region[dsts]
            code = np.where(crossing, 2, hashed.astype(np.int64))
        else:
            code = hashed.astype(np.int64)
        itemsize = {dt: np.dtype(dt).itemsize for dt in set(dtypes)}
        out = []
        new = object.__new__
        for sid, src, dst, shape, dtype, dc, c, lv in zip(
                shard_ids, srcs.tolist(), dsts.tolist(), shapes, dtypes, classes, code.tolist(),
                leaves.tolist(), strict=True):
            chunk = MAX_CHUNK_BYTES if c == 0 else chunk_bytes
            nbytes = math.prod(shape) * itemsize[dtype]
            # the fields set directly: a frozen dataclass's __init__ costs more than the rest
            # of the loop (a rebalance of 10^4 moves builds 10^4 of them)
            mv = new(Move)
            mv.__dict__.update(shard_id=int(sid), src=src, dst=dst, src_region=regions[src],
                               dst_region=regions[dst], data_class=dc, shape=tuple(shape),
                               dtype=dtype, nbytes=nbytes, protection=PROTECTIONS[c],
                               chunk_bytes=chunk, layout=wire_layout(nbytes, chunk, c == 2),
                               leaves_host=lv)
            out.append(mv)
        return out

    @classmethod
    def build(cls, shard_map, owners_after, policy, *, rank: int, hosts: Sequence[int],
              sealed: bool, verify: str = "route", chunk_bytes: int = CHUNK_BYTES) -> MovePlan:
        """Check the plan (arguments, residency) and cut it into moves; raises, never half-builds.

        Parameters
        ----------
        shard_map : the current :class:`~hpccloud.shards.ShardMap`.
        owners_after : int array ``[S]``: the rank of every shard afterwards.
        policy : :class:`~hpccloud.policy.Policy`; its topology gives the regions.
        rank : the rank this plan is for.
        hosts : one host key per rank (equal keys: same host and network namespace).
        sealed : a key was given (cross-region moves are sealed).
        verify : ``"route"`` (hash only bytes that leave the host) or ``"all"``.
        chunk_bytes : piece size of hashed and sealed payloads, ``1..MAX_CHUNK_BYTES``.
        """
        if verify not in VERIFY_MODES:
            raise InvalidArgument(f"verify={verify!r}: expected one of {list(VERIFY_MODES)}")
        if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
            raise InvalidArgument(f"chunk_bytes must be in 1..{MAX_CHUNK_BYTES}, got {chunk_bytes}")
        size = policy.topology.size
        if len(hosts) != size:
            raise InvalidArgument(f"the policy's topology has {size} ranks but the communicator "
                                  f"has {len(hosts)}")
        owners_after = np.asarray(owners_after)
        policy.check_owners(shard_map, owners_after)
        before = shard_map.owners()
        moving = np.flatnonzero(before != owners_after)  # a changed owner is in 0..size-1
        shards = [shard_map.shards[i] for i in moving.tolist()]
        moves = cls.build_moves(
            moving.tolist(), before[moving].tolist(), owners_after[moving].tolist(),
            shapes=[s.shape for s in shards], dtypes=[s.dtype for s in shards],
            classes=[s.data_class for s in shards], regions=list(policy.topology.rank_region),
            hosts=list(hosts), sealed=sealed, verify=verify, chunk_bytes=int(chunk_bytes))
        return cls(tuple(moves), rank, tuple(m for m in moves if m.src == rank),
                   tuple(m for m in moves if m.dst == rank),
                   tuple(i for i, m in enumerate(moves) if m.dst == rank))

    def check_payloads(self, local: Mapping[int, np.ndarray]) -> None:
        """Raise :class:`InvalidArgument` unless this rank has a C-contiguous payload per send."""
        for m in self.sends:
            a = local.get(m.shard_id)
            if a is None:
                raise InvalidArgument(f"rank {self.rank} owns shard {m.shard_id} but has no data "
                                      "for it")
            if a.shape != m.shape or a.dtype.str != m.dtype or not a.flags.c_contiguous:
                raise InvalidArgument(f"rank {self.rank}: shard {m.shard_id} data is {a.dtype.str} "
                                      f"{a.shape} (C-contiguous: {a.flags.c_contiguous}); the map "
                                      f"says {m.dtype} {m.shape}, C-contiguous")

    def records(self, rows: np.ndarray, version: int) -> list[TransferRecord]:
        """Every move's :class:`TransferRecord` from the receivers' rows.

        ``rows[i]`` (float64) for ``moves[i]``: seconds, POSIX time, the checksum's
        high and low 32 bits; ``version`` is the map version the moves left.
        """
        out = []
        new = object.__new__
        for m, (secs, t, hi, lo) in zip(self.moves, rows.tolist(), strict=True):
            checksum = f"{(int(hi) << 32) | int(lo):016x}" if m.protection == HASHED else ""
            rec = new(TransferRecord)  # fields set directly, as in build_moves: one per move per call
            rec.__dict__.update(time=t, shard_id=m.shard_id, data_class=m.data_class, src_rank=m.src,
                                dst_rank=m.dst, src_region=m.src_region, dst_region=m.dst_region,
                                nbytes=m.nbytes, seconds=secs, checksum=checksum,
                                encrypted=m.protection == SEALED, map_version=version + 1,
                                protection=m.protection)
            out.append(rec)
        return out


__all__ = ["CHUNK_BYTES", "HASHED", "HEADER_BYTES", "HEADER_ONLY", "HEADER_STRUCT", "HEADER_WORDS",
           "MAX_CHUNK_BYTES", "Move", "MovePlan", "PROTECTIONS", "SEALED", "VERIFY_MODES", "aad",
           "header_checksum", "header_problem", "pieces", "protection_of", "wire_layout"]
