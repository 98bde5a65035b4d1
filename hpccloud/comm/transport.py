"""Shard transport: execute a migration plan as MPI buffers, protected by route.

:func:`execute` moves every shard whose owner changes, on all ranks at once.
What moves where, in which pieces and under which protection is decided by the
pure, MPI-free :class:`hpccloud.comm.moveplan.MovePlan`; this module is the
wire engine around it:

1. **Agreement and residency, one round.** Every rank builds the plan (which
   re-checks residency, :meth:`hpccloud.policy.Policy.check_owners`) and checks
   its payloads; one 3-word ``Allreduce`` carries every rank's verdict and a
   digest of the plan, so a bad or differing plan raises the same error on
   every rank before any byte moves. A plan seen before (same map layout,
   owners before and after, policy, hosts, options) is reused from a small
   cache instead of being rebuilt: its residency verdict depends on nothing else.
2. **Buffers, never pickles.** Receivers allocate (or take from a
   :class:`~hpccloud.comm.bufpool.BufferPool`) the destination arrays and post
   ``Irecv`` for every piece up front; senders post ``Isend`` of contiguous views.
3. **Integrity by route** (see :mod:`hpccloud.comm.moveplan`): bytes that stay
   on one host (same node and network namespace) are not re-hashed unless
   ``verify="all"``; bytes that leave it carry an xxh3-64 of the plaintext,
   verified on receipt; sealed bytes (AES-GCM, a key and a region border) are
   authenticated by their tags, no second hash. Every payload travels with the
   6-word header ``[shard_id, nbytes, checksum, map_version, n_pieces,
   chunk_bytes]`` which the receiver always checks. Any failure is a
   :class:`~hpccloud.errors.ChecksumError` on every rank; received payloads are
   only handed back after every rank accepted all of its own, so nothing that
   failed a check is ever accepted.
4. **Encryption.** The 96-bit GCM nonce is random per piece (``os.urandom``):
   the same key may be reused across jobs, where a per-job counter would repeat
   nonces. The associated data binds each piece to (shard id, source,
   destination, map version, piece, pieces).
5. **Verdict and records, one round.** One ``Allreduce`` of a small float array
   carries every rank's verdict and the receivers' record fields (seconds,
   time, checksum); every rank then returns ``shard_map.with_owners(owners_after)``
   (version + 1) and the same :class:`TransferRecord` list, whose ``protection``
   says how each payload was protected. Rank 0 appends them to the audit log if
   one is given.

Which ranks share a host is found once per communicator (node name, boot id and
network-namespace inode, gathered with one ``Allgather``) and cached with a
private duplicate of the communicator.

Test hooks: ``corrupt={shard ids}`` (or ``HPCCLOUD_TRANSPORT_CORRUPT="3,7"``)
flips one byte of those shards' received wire bytes before verification (caught
on hashed and sealed routes; a header-only route does not look at the bytes);
``corrupt_header={shard id: field}`` (or ``HPCCLOUD_TRANSPORT_CORRUPT_HEADER=
"3:nbytes,7:map_version"``) flips the lowest bit of one word of a received
header; ``HPCCLOUD_TRANSPORT_HOST`` is appended to this rank's host key (read
when a communicator is first used), so a test can make ranks look as if they sat
on different hosts.
"""

from __future__ import annotations

import os
import platform
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, cast

import numpy as np
import xxhash

if TYPE_CHECKING:
    from typing_extensions import Buffer

from hpccloud.comm.agree import error_record, raise_gathered
from hpccloud.comm.audit import AuditLog, TransferRecord
from hpccloud.comm.bufpool import BufferPool
from hpccloud.comm.moveplan import (
    CHUNK_BYTES,
    GCM_NONCE_BYTES,
    HASHED,
    HEADER_FIELDS,
    HEADER_WORDS,
    MAX_CHUNK_BYTES,
    SEALED,
    VERIFY_MODES,
    MovePlan,
    aad,
    header_problem,
)
from hpccloud.errors import ChecksumError, InvalidArgument
from hpccloud.keys import load_key  # re-exported: the key-file rule lives in hpccloud.keys

TAG_PAYLOAD = 41
TAG_HEADER = 42
CORRUPT_ENV = "HPCCLOUD_TRANSPORT_CORRUPT"
CORRUPT_HEADER_ENV = "HPCCLOUD_TRANSPORT_CORRUPT_HEADER"
VERIFY_ENV = "HPCCLOUD_TRANSPORT_VERIFY"
HOST_ENV = "HPCCLOUD_TRANSPORT_HOST"
PREHASH_BYTES = 16 << 20  # at most this much is hashed during the agreement round
_ROW = 4  # record fields per move in the verdict round: seconds, time, checksum hi, lo


# --------------------------------------------------------------------------- keys


def _cipher(key):
    if key is None:
        return None
    if isinstance(key, str | os.PathLike):
        key = load_key(key)
    if not isinstance(key, bytes | bytearray) or len(key) not in (16, 24, 32):
        raise InvalidArgument("key must be 16, 24 or 32 bytes or a key file path")
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(bytes(key))


# --------------------------------------------------------------------------- hosts and comms


def host_key() -> int:
    """This process's host identity (63 bits): equal keys share memory.

    Node name and boot id tell machines apart; the network namespace's inode
    tells apart ranks that :mod:`hpccloud.testing.netns` put on one machine
    behind separate network stacks (MPICH then talks TCP between them).
    """
    parts = [platform.node(), os.environ.get(HOST_ENV, "")]
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/net"):
        try:
            parts.append(str(os.stat(path).st_ino) if path.endswith("net") else
                         open(path, encoding="ascii").read().strip())  # noqa: SIM115
        except OSError:
            parts.append("-")
    return xxhash.xxh3_64_intdigest("|".join(parts).encode()) >> 1


class _CommState:
    """What the transport keeps per communicator: a private duplicate and the host keys."""

    def __init__(self, comm):
        self.comm = comm.Dup()  # private tags: no clash with the caller's messages
        mine = np.array([host_key()], np.int64)
        self.hosts = np.empty(comm.Get_size(), np.int64)
        self.comm.Allgather(mine, self.hosts)
        self.hosts_key = self.hosts.tobytes()
        self.spans_hosts = bool((self.hosts != self.hosts[0]).any())
        self.plans: OrderedDict[tuple, MovePlan] = OrderedDict()

    def free(self) -> None:
        self.comm.Free()


_STATE_KEYVAL = None


def _comm_state(comm) -> _CommState:
    """The cached :class:`_CommState` of ``comm``; collective the first time only.

    ``Comm.Dup`` is collective (a context-id agreement) and so is gathering the
    host keys; both are paid once per communicator. Cached as an MPI attribute,
    so it is freed with ``comm``.
    """
    global _STATE_KEYVAL
    from mpi4py import MPI

    if _STATE_KEYVAL is None:
        _STATE_KEYVAL = MPI.Comm.Create_keyval(delete_fn=lambda _c, _k, state: state.free())
    state = comm.Get_attr(_STATE_KEYVAL)
    if state is None:
        state = _CommState(comm)
        comm.Set_attr(_STATE_KEYVAL, state)
    return state


# --------------------------------------------------------------------------- plan cache

# id(shard map) -> (the map, its layout digest); the maps are small (no arrays) and
# the table bounded, so holding them is cheaper than weak references on every call
_LAYOUTS: OrderedDict[int, tuple[object, int]] = OrderedDict()
_LAYOUTS_SIZE = 64
_PLAN_CACHE_SIZE = 16


def _layout_digest(shard_map) -> int:
    """Digest of everything in a map a plan depends on but the owners and version.

    Remembered per map object; the map :func:`execute` returns inherits it.
    """
    hit = _LAYOUTS.get(id(shard_map))
    if hit is not None and hit[0] is shard_map:
        return hit[1]
    h = xxhash.xxh3_64(repr((shard_map.global_shape, shard_map.dtype, len(shard_map))).encode())
    for s in shard_map.shards:
        h.update(f"{s.shape}{s.dtype}{s.data_class}\0".encode())
    digest = h.intdigest()
    _remember_layout(shard_map, digest)
    return digest


def _remember_layout(shard_map, digest: int) -> None:
    _LAYOUTS[id(shard_map)] = (shard_map, digest)
    if len(_LAYOUTS) > _LAYOUTS_SIZE:
        _LAYOUTS.popitem(last=False)


def _plan(state: _CommState, rank, shard_map, owners_after, policy, sealed, verify, chunk_bytes):
    """The :class:`MovePlan` (cached: a plan is a pure function of the cache key)."""
    after = np.asarray(owners_after)
    if after.shape != (len(shard_map),) or after.dtype.kind not in "iu":
        # let the plan name the problem
        return MovePlan.build(shard_map, after, policy, rank=rank, hosts=state.hosts,
                              sealed=sealed, verify=verify, chunk_bytes=chunk_bytes)
    after = after.astype(np.int64, copy=False)
    key = (_layout_digest(shard_map), shard_map.owners().tobytes(), after.tobytes(), policy, rank,
           state.hosts_key, sealed, verify, chunk_bytes)
    plan = state.plans.get(key)
    if plan is None:
        plan = MovePlan.build(shard_map, after, policy, rank=rank, hosts=state.hosts,
                              sealed=sealed, verify=verify, chunk_bytes=chunk_bytes)
        state.plans[key] = plan
        if len(state.plans) > _PLAN_CACHE_SIZE:
            state.plans.popitem(last=False)
    else:
        state.plans.move_to_end(key)
    return plan


# --------------------------------------------------------------------------- hooks and options


def _corrupt_ids(corrupt) -> set[int]:
    if corrupt is not None:
        return {int(c) for c in corrupt}
    env = os.environ.get(CORRUPT_ENV, "").strip()
    if not env:
        return set()
    try:
        return {int(x) for x in env.split(",") if x.strip()}
    except ValueError:
        raise InvalidArgument(f"{CORRUPT_ENV}={env!r}: expected comma-separated shard ids") from None


def _corrupt_header_words(corrupt_header) -> dict[int, int]:
    """``{shard id: header word index}`` from the keyword or the environment."""
    if corrupt_header is None:
        env = os.environ.get(CORRUPT_HEADER_ENV, "").strip()
        if not env:
            return {}
        try:
            corrupt_header = dict((int(k), v.strip()) for k, v in
                                  (x.split(":") for x in env.split(",") if x.strip()))
        except ValueError:
            raise InvalidArgument(f"{CORRUPT_HEADER_ENV}={env!r}: expected shard:field pairs, "
                                  "e.g. 3:nbytes,7:map_version") from None
    bad = {f for f in corrupt_header.values() if f not in HEADER_FIELDS}
    if bad:
        raise InvalidArgument(f"corrupt_header: unknown header field(s) {sorted(bad)}; "
                              f"known: {list(HEADER_FIELDS)}")
    return {int(k): HEADER_FIELDS.index(f) for k, f in corrupt_header.items()}


def _verify_mode(verify) -> str:
    if verify is not None:
        return verify  # the plan checks it and names the argument
    env = os.environ.get(VERIFY_ENV, "").strip() or "route"
    if env not in VERIFY_MODES:
        raise InvalidArgument(f"{VERIFY_ENV}={env!r}: expected one of {list(VERIFY_MODES)}")
    return env


# --------------------------------------------------------------------------- agreement


def _agree_on_plan(state, rank, shard_map, local, owners_after, policy, key, verify, chunk_bytes,
                   known):
    """One collective round: plan sameness + every rank's checks; raises everywhere or returns.

    A 3-word ``Iallreduce(MAX)`` of ``[failed, d, -d]`` (``d``: 62 bits of the plan's
    digest): the plan is the same everywhere iff ``max d == -max(-d)``. Only when
    a rank failed do the ranks gather the error records (a second round). While
    the round is in flight the sender hashes small payloads bound for another
    host into ``known`` (over a network, hashing after posting would hold the
    bytes back: the transfer progresses only inside MPI calls).
    """
    from mpi4py import MPI

    plan, aes, exc, digest = None, None, None, 0
    try:
        verify = _verify_mode(verify)
        after = np.asarray(owners_after)
        h = xxhash.xxh3_64(f"{after.dtype.str}{after.shape}|{chunk_bytes}|{verify}|"
                           f"{key is not None}|{shard_map.version}|".encode())
        h.update(np.ascontiguousarray(after).tobytes())
        digest = h.intdigest() >> 2
        if policy.topology.size != state.comm.Get_size():
            raise InvalidArgument(f"the policy's topology has {policy.topology.size} ranks but the "
                                  f"communicator has {state.comm.Get_size()}")
        plan = _plan(state, rank, shard_map, after, policy, key is not None, verify, chunk_bytes)
        plan.check_payloads(local)
        aes = _cipher(key)
    except Exception as e:  # noqa: BLE001 - every failure must reach the peers
        exc = e
    mine = np.array([exc is not None, digest, -digest], np.int64)
    top = np.empty_like(mine)
    # the same kind of collective on every rank: whether the ranks span hosts is known alike
    if state.spans_hosts:  # hash what will leave the host while the round is in flight
        reqs = [state.comm.Iallreduce(mine, top, op=MPI.MAX)]
        budget = PREHASH_BYTES if exc is None else 0
        for m in plan.sends if exc is None else ():
            if m.protection == HASHED and m.leaves_host and m.shard_id not in known \
                    and m.nbytes <= budget:
                known[m.shard_id] = xxhash.xxh3_64_intdigest(_flat_bytes(local[m.shard_id]))
                budget -= m.nbytes
        _wait(reqs)
    else:  # MPICH's blocking Allreduce of a few words is quicker than its non-blocking one
        state.comm.Allreduce(mine, top, op=MPI.MAX)
    if top[0]:
        raise_gathered(state.comm.allgather(error_record(exc, rank)), exc)
    if top[1] != -top[2]:
        err = InvalidArgument("owners_after, chunk_bytes, verify, the key's presence or the map "
                              "version differs between ranks; every rank must execute the same "
                              "plan. Nothing was moved")
        err.collective = True
        raise err
    return plan, aes


# --------------------------------------------------------------------------- the wire


def _wait(requests) -> None:
    """Wait for every request (the one place the transport blocks on MPI)."""
    from mpi4py import MPI

    MPI.Request.Waitall(requests)


def _flat_bytes(a: np.ndarray) -> np.ndarray:
    """A 1-D uint8 view of a C-contiguous array (no copy)."""
    return a.reshape(-1).view(np.uint8)


def _take(pool, nbytes: int) -> np.ndarray:
    return pool.take(nbytes) if pool is not None else np.empty(nbytes, np.uint8)


def _post_receives(pcomm, plan: MovePlan, pool, MPI) -> list[tuple]:
    """Post every receive first (the plan tells sizes), so no send waits for a match."""
    incoming = []
    for m in plan.recvs:
        flat = _take(pool, m.nbytes)
        wire = _take(pool, m.wire_bytes) if m.protection == SEALED else flat
        reqs = [pcomm.Irecv([wire[wa:wb], MPI.BYTE], m.src, TAG_PAYLOAD) for _, _, wa, wb in m.layout]
        header = np.empty(HEADER_WORDS, np.uint64)
        incoming.append((m, flat, wire, reqs, header, pcomm.Irecv(header, m.src, TAG_HEADER)))
    return incoming


def _send(pcomm, plan: MovePlan, local, version, aes, known, pool, MPI):
    """Post every send; returns the requests and the buffers that must live until they complete.

    Clear pieces are posted at once; a hashed payload whose checksum is not yet
    known is hashed while the receiver pulls the bytes (MPICH moves large
    intranode messages with a single copy done by the receiver) and its header,
    carrying the checksum, follows. Sealed pieces are encrypted one by one while
    in cache, then posted. Every other header goes first.
    """
    reqs, keep = [], []
    for m in plan.sends:
        sid, dst = m.shard_id, m.dst
        flat = _flat_bytes(local[sid])
        if m.protection != HASHED or sid in known:
            header = m.header(version, known.get(sid, 0) if m.protection == HASHED else 0)
            keep.append(header)
            reqs.append(pcomm.Isend(header, dst, TAG_HEADER))
        if m.protection == SEALED:
            wire = _take(pool, m.wire_bytes)
            keep.append(wire)
            n = len(m.layout)
            nonces = os.urandom(GCM_NONCE_BYTES * n)
            for k, (a, b, wa, wb) in enumerate(m.layout):
                nonce = nonces[k * GCM_NONCE_BYTES:(k + 1) * GCM_NONCE_BYTES]
                wire[wa:wa + GCM_NONCE_BYTES] = np.frombuffer(nonce, np.uint8)
                aes.encrypt_into(nonce, flat[a:b], aad(sid, m.src, dst, version, k, n),
                                 wire[wa + GCM_NONCE_BYTES:wb])
                reqs.append(pcomm.Isend([wire[wa:wb], MPI.BYTE], dst, TAG_PAYLOAD))
            continue
        for a, b, _, _ in m.layout:
            reqs.append(pcomm.Isend([flat[a:b], MPI.BYTE], dst, TAG_PAYLOAD))
        if m.protection == HASHED and sid not in known:
            h = xxhash.xxh3_64()
            for a, b, _, _ in m.layout:
                # an ndarray is a Buffer (numpy's stubs say so only for Python >= 3.12)
                h.update(cast("Buffer", flat[a:b]))
            header = m.header(version, h.intdigest())
            keep.append(header)
            reqs.append(pcomm.Isend(header, dst, TAG_HEADER))
    return reqs, keep


def _receive(plan: MovePlan, incoming, rank, version, aes, flips, header_flips, rows):
    """Wait for each payload in order, check it as it lands; fill ``rows``.

    Returns ``(received, error)``: this rank's payloads ``{shard id: array}``
    (to be accepted only if every rank passed) and its first error or None.
    """
    received, error = {}, None
    t_prev = time.perf_counter()
    for (m, flat, wire, reqs, header, hreq), row in zip(incoming, plan.recv_rows, strict=True):
        sid, n = m.shard_id, len(m.layout)
        h = xxhash.xxh3_64() if m.protection == HASHED else None
        problem = None
        for k, ((a, b, wa, wb), req) in enumerate(zip(m.layout, reqs, strict=True)):
            _wait([req])
            if k == 0 and sid in flips:
                wire[wb - 1] ^= 0xFF  # test hook: damage the bytes "in flight"
            if problem is not None:
                continue  # drain the remaining pieces, do not look at them
            if m.protection == SEALED:
                nonce = wire[wa:wa + GCM_NONCE_BYTES].tobytes()
                try:
                    aes.decrypt_into(nonce, wire[wa + GCM_NONCE_BYTES:wb],
                                     aad(sid, m.src, rank, version, k, n), flat[a:b])
                except Exception:  # noqa: BLE001 - InvalidTag: tampered or wrong key
                    problem = (f"AES-GCM authentication failed on piece {k} (payload altered in "
                               "flight, or wrong key)")
            elif h is not None:
                h.update(flat[a:b])
        _wait([hreq])
        if sid in header_flips:
            header[header_flips[sid]] ^= np.uint64(1)  # test hook: a damaged header
        problem = problem or header_problem(header, m, version)
        digest = h.intdigest() if h is not None else 0
        if problem is None and h is not None and digest != int(header[2]):
            problem = (f"checksum mismatch: received xxh3-64 {digest:016x}, "
                       f"sender's {int(header[2]):016x}")
        t_done = time.perf_counter()
        if problem is not None:
            if error is None:
                error = ChecksumError(f"shard {sid} from rank {m.src} to rank {rank} "
                                      f"({m.protection}): {problem}; the payload was rejected "
                                      "and no shard was moved")
            continue
        received[sid] = flat.view(np.dtype(m.dtype)).reshape(m.shape)
        rows[row] = (t_done - t_prev, time.time(), digest >> 32, digest & 0xFFFFFFFF)
        t_prev = t_done
    return received, error


def _append_audit(pcomm, audit, records, rank) -> None:
    """Rank 0 appends the records; one small ``Allreduce`` tells every rank whether it worked."""
    from mpi4py import MPI

    exc = None
    if rank == 0:
        try:
            (audit if isinstance(audit, AuditLog) else AuditLog(audit)).append(records)
        except Exception as e:  # noqa: BLE001 - every failure must reach the peers
            exc = e
    flag = np.array([exc is not None], np.int64)
    pcomm.Allreduce(MPI.IN_PLACE, flag, op=MPI.MAX)
    if flag[0]:
        raise_gathered(pcomm.allgather(error_record(exc, rank)), exc)


# --------------------------------------------------------------------------- execute


def execute(comm, shard_map, local: dict[int, np.ndarray], owners_after, policy, *, key=None,
            audit=None, chunk_bytes: int = CHUNK_BYTES, corrupt: Iterable[int] | None = None,
            pool: BufferPool | None = None, checksums: Mapping[int, int] | None = None,
            verify: str | None = None, corrupt_header: Mapping[int, str] | None = None):
    """Move shards so that shard ``s`` ends on rank ``owners_after[s]``; collective.

    Parameters
    ----------
    comm : an mpi4py communicator matching ``policy.topology``.
    shard_map : the current map (identical on every rank).
    local : this rank's payloads ``{shard_id: array}`` (C-contiguous). The dict is
        not modified; without ``pool`` neither are the arrays.
    owners_after : int array ``[S]``, identical on every rank.
    policy : :class:`hpccloud.policy.Policy`; residency is re-checked here.
    key : None, AES key bytes, or a key file path: seal cross-region moves.
    audit : None, a path or an :class:`AuditLog`; rank 0 appends the records.
    chunk_bytes : piece size of hashed and sealed payloads (<= 1 GiB), the same
        on every rank; unhashed payloads go in pieces of up to 1 GiB.
    corrupt : test hook, shard ids whose received bytes get one byte flipped.
    pool : a :class:`~hpccloud.comm.bufpool.BufferPool`: receive into its warm
        buffers, and give it the arrays of the shards this rank sends away
        (the caller must not use those arrays afterwards; the returned dict
        does not hold them).
    checksums : optional ``{shard_id: xxh3-64}`` of payloads this rank sends on
        hashed routes, when already known: the sender skips hashing. The
        receiver always verifies, so a stale value fails the move.
    verify : ``"route"`` (hash only payloads that leave the host) or ``"all"``
        (hash every unsealed payload); default: ``$HPCCLOUD_TRANSPORT_VERIFY``
        or ``"route"``. The same on every rank.
    corrupt_header : test hook, ``{shard_id: header field}`` to flip in the
        received header (``"shard_id"``, ``"nbytes"``, ``"map_version"``, ...).

    Returns
    -------
    (new_map, new_local, records) : the map with ``version + 1``, this rank's
    payloads after the moves, and every transfer's record (same on all ranks).

    Examples
    --------
    >>> new_map, local, recs = execute(comm, m, local, plan.owners_after, policy)  # doctest: +SKIP
    """
    from mpi4py import MPI

    state = _comm_state(comm)
    pcomm, rank, version = state.comm, comm.Get_rank(), shard_map.version
    known = dict(checksums or {})
    plan, aes = _agree_on_plan(state, rank, shard_map, local, owners_after, policy, key, verify,
                               int(chunk_bytes), known)
    flips, header_flips = _corrupt_ids(corrupt), _corrupt_header_words(corrupt_header)

    # hpccloud errors are collected and raised on every rank below; anything unexpected
    # (e.g. MemoryError) escapes so the CLI / test harness aborts the job instead of
    # leaving peers waiting for messages that will never come
    incoming = _post_receives(pcomm, plan, pool, MPI)
    send_reqs, keep = _send(pcomm, plan, local, version, aes, known, pool, MPI)
    verdict = np.zeros(1 + _ROW * len(plan.moves))
    rows = verdict[1:].reshape(-1, _ROW)
    received, error = _receive(plan, incoming, rank, version, aes, flips, header_flips, rows)
    _wait(send_reqs)

    # one round: every rank's verdict and the records (nothing is accepted unless all passed);
    # each row is filled by its receiver only, so the sum is exact
    verdict[0] = error is not None
    pcomm.Allreduce(MPI.IN_PLACE, verdict, op=MPI.SUM)
    if pool is not None:  # every request completed: the sealed wire buffers are free again
        for _m, flat, wire, *_ in incoming:
            if wire is not flat:
                pool.give(wire)
        for buf in keep:
            if buf.dtype == np.uint8:
                pool.give(buf)
    if verdict[0]:
        if pool is not None:
            for _, flat, *_ in incoming:
                pool.give(flat)
        raise_gathered(pcomm.allgather(error_record(error, rank)), error)
    if pool is not None:
        for m in plan.sends:
            pool.give(local[m.shard_id])
    records = plan.records(rows, version)
    sent = {m.shard_id for m in plan.sends}
    new_local = {sid: a for sid, a in local.items() if sid not in sent}
    new_local.update(received)
    if audit is not None:
        _append_audit(pcomm, audit, records, rank)
    new_map = shard_map.with_owners(owners_after)
    _remember_layout(new_map, _layout_digest(shard_map))
    return new_map, new_local, records


__all__ = ["CHUNK_BYTES", "CORRUPT_ENV", "CORRUPT_HEADER_ENV", "HOST_ENV", "MAX_CHUNK_BYTES",
           "VERIFY_ENV", "BufferPool", "TransferRecord", "execute", "host_key", "load_key"]
