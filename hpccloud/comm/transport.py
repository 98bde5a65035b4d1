"""Shard transport: execute a migration plan as MPI buffers, protected by route.

:func:`execute` moves every shard whose owner changes, on all ranks at once.
What moves where, in which pieces and under which protection is decided by the
pure, MPI-free :class:`hpccloud.comm.moveplan.MovePlan`; this module is the
wire engine around it:

1. **Agreement and residency, one round.** Every rank re-checks residency
   (:meth:`hpccloud.policy.Policy.check_owners`, on every call; the policy
   remembers passing owner lists of small maps), builds the plan and checks
   its payloads and options; one 3-word ``Allreduce`` carries every rank's
   verdict and a digest of the plan (map layout, owners before and after, map
   version, options), so a bad or differing plan raises the same error on
   every rank before any byte moves. A plan seen before (same map layout,
   owners before and after, policy, options) is reused from a small cache
   instead of being rebuilt.
2. **Buffers, never pickles.** Receivers allocate (or take from a
   :class:`~hpccloud.comm.bufpool.BufferPool`) the destination arrays and post
   ``Irecv`` for every piece up front; senders post ``Isend`` of contiguous views.
3. **Integrity by route** (see :mod:`hpccloud.comm.moveplan`): bytes that stay
   on one host (same node and network namespace) are not re-hashed unless
   ``verify="all"``; bytes that leave it carry an xxh3-64 of the plaintext,
   verified on receipt; sealed bytes (AES-GCM, a key and a region border) are
   authenticated by their tags, no second hash. Every payload travels with the
   48-byte packed header ``[shard_id, nbytes, checksum, map_version, n_pieces,
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
   one is given. A plan that moves nothing (agreed in step 1) has nothing to
   verify or record and skips this round.

Which ranks share a host is found once per communicator (node name, boot id and
network-namespace inode, gathered with one ``Allgather``) and cached with a
private duplicate of the communicator.

Test hooks: ``corrupt={shard ids}`` (or ``HPCCLOUD_TRANSPORT_CORRUPT="3,7"``)
flips one byte of those shards' received wire bytes before verification (caught
on hashed and sealed routes; a header-only route does not look at the bytes);
``corrupt_header={shard id: field}`` (or ``HPCCLOUD_TRANSPORT_CORRUPT_HEADER=
"3:nbytes,7:map_version"``) flips the lowest bit of one word of a received
header; ``HPCCLOUD_TRANSPORT_HOST`` is appended to this rank's host key (used
when a communicator is first used), so a test can make ranks look as if they sat
on different hosts. The ``HPCCLOUD_TRANSPORT_*`` variables are read once per
process, at the first :func:`execute`; a test that changes them calls
:func:`reload_env`. A malformed value fails the call on every rank, before any
byte moves.

``mpi4py.MPI`` is imported at the first call, not with the module: the CLI
imports this module (through the runner) before it decides whether to start MPI.
"""

from __future__ import annotations

import os
import platform
import struct
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

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
    HEADER_BYTES,
    HEADER_FIELDS,
    MAX_CHUNK_BYTES,
    SEALED,
    VERIFY_MODES,
    MovePlan,
    aad,
    header_checksum,
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
_PLAN_CACHE_SIZE = 16
# what the agreement digest covers besides the map layout and the owners
_CALL = struct.Struct("<qq??")  # map version, chunk bytes, key given, verify == "all"

_MPI: Any = None  # mpi4py.MPI, bound at the first call (see the module docstring)


def _mpi() -> Any:
    global _MPI
    if _MPI is None:
        from mpi4py import MPI

        _MPI = MPI
    return _MPI


# --------------------------------------------------------------------------- environment hooks


class _Hooks:
    """The ``HPCCLOUD_TRANSPORT_*`` variables, parsed once; a malformed one raises when used."""

    def __init__(self, environ: Mapping[str, str]):
        self.host = environ.get(HOST_ENV, "")
        self._verify = environ.get(VERIFY_ENV, "").strip() or "route"
        self._corrupt = environ.get(CORRUPT_ENV, "").strip()
        self._corrupt_header = environ.get(CORRUPT_HEADER_ENV, "").strip()
        self.corrupt_ids: frozenset[int] | None = None
        self.corrupt_header: dict[int, str] | None = None
        try:
            self.corrupt_ids = frozenset(int(x) for x in self._corrupt.split(",") if x.strip())
        except ValueError:
            pass
        try:
            self.corrupt_header = dict((int(k), v.strip()) for k, v in (
                x.split(":") for x in self._corrupt_header.split(",") if x.strip()))
        except ValueError:
            pass

    def verify_mode(self) -> str:
        if self._verify not in VERIFY_MODES:
            raise InvalidArgument(f"{VERIFY_ENV}={self._verify!r}: expected one of "
                                  f"{list(VERIFY_MODES)}")
        return self._verify

    def corrupt(self) -> frozenset[int]:
        if self.corrupt_ids is None:
            raise InvalidArgument(f"{CORRUPT_ENV}={self._corrupt!r}: expected comma-separated "
                                  "shard ids")
        return self.corrupt_ids

    def header_fields(self) -> dict[int, str]:
        if self.corrupt_header is None:
            raise InvalidArgument(f"{CORRUPT_HEADER_ENV}={self._corrupt_header!r}: expected "
                                  "shard:field pairs, e.g. 3:nbytes,7:map_version")
        return self.corrupt_header


_HOOKS: _Hooks | None = None


def _hooks() -> _Hooks:
    global _HOOKS
    if _HOOKS is None:
        _HOOKS = _Hooks(os.environ)
    return _HOOKS


def reload_env() -> None:
    """Read the ``HPCCLOUD_TRANSPORT_*`` variables again (for tests that change them).

    The host key of a communicator already in use keeps the value it was made
    with; use a new communicator (``comm.Dup()``) to see a new
    ``HPCCLOUD_TRANSPORT_HOST``.
    """
    global _HOOKS
    _HOOKS = _Hooks(os.environ)


def _corrupt_ids(corrupt) -> frozenset[int]:
    return _hooks().corrupt() if corrupt is None else frozenset(int(c) for c in corrupt)


def _corrupt_header_offsets(corrupt_header) -> dict[int, int]:
    """``{shard id: byte offset of the header word to flip}`` from the keyword or the environment."""
    fields = _hooks().header_fields() if corrupt_header is None else corrupt_header
    if not fields:
        return {}
    bad = {f for f in fields.values() if f not in HEADER_FIELDS}
    if bad:
        raise InvalidArgument(f"corrupt_header: unknown header field(s) {sorted(bad)}; "
                              f"known: {list(HEADER_FIELDS)}")
    # little-endian words: the first byte of a word holds its lowest bit
    return {int(k): 8 * HEADER_FIELDS.index(f) for k, f in fields.items()}


def _known_checksums(checksums) -> dict[int, int]:
    """The caller's ``{shard id: xxh3-64}``, checked: each digest an int in ``0..2**64-1``."""
    known: dict[int, int] = {}
    for sid, digest in (checksums or {}).items():
        if isinstance(digest, bool) or not isinstance(digest, int | np.integer) \
                or not 0 <= int(digest) < 1 << 64:
            raise InvalidArgument(f"checksums[{sid!r}] = {digest!r}: expected an xxh3-64 digest, "
                                  "an int in 0..2**64-1")
        known[int(sid)] = int(digest)
    return known


def _verify_mode(verify) -> str:
    # an explicit value is checked (and named) by the plan
    return _hooks().verify_mode() if verify is None else verify


# --------------------------------------------------------------------------- keys

_CIPHERS: OrderedDict[bytes, Any] = OrderedDict()  # key bytes -> AESGCM (setting up one costs)


def _cipher(key):
    if key is None:
        return None
    if isinstance(key, str | os.PathLike):
        key = load_key(key)
    if not isinstance(key, bytes | bytearray) or len(key) not in (16, 24, 32):
        raise InvalidArgument("key must be 16, 24 or 32 bytes or a key file path")
    key = bytes(key)
    aes = _CIPHERS.get(key)
    if aes is None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        aes = _CIPHERS[key] = AESGCM(key)
        if len(_CIPHERS) > 4:
            _CIPHERS.popitem(last=False)
    return aes


# --------------------------------------------------------------------------- hosts and comms


def host_key() -> int:
    """This process's host identity (63 bits): equal keys share memory.

    Node name and boot id tell machines apart; the network namespace's inode
    tells apart ranks that :mod:`hpccloud.testing.netns` put on one machine
    behind separate network stacks (MPICH then talks TCP between them).
    """
    parts = [platform.node(), _hooks().host]
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/net"):
        try:
            parts.append(str(os.stat(path).st_ino) if path.endswith("net") else
                         open(path, encoding="ascii").read().strip())  # noqa: SIM115
        except OSError:
            parts.append("-")
    return xxhash.xxh3_64_intdigest("|".join(parts).encode()) >> 1


class _CommState:
    """What the transport keeps per communicator: a private duplicate, the host keys, plans."""

    def __init__(self, comm):
        self.comm = comm.Dup()  # private tags: no clash with the caller's messages
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        mine = np.array([host_key()], np.int64)
        self.hosts = np.empty(self.size, np.int64)
        self.comm.Allgather(mine, self.hosts)
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
    if _STATE_KEYVAL is None:
        _STATE_KEYVAL = _mpi().Comm.Create_keyval(delete_fn=lambda _c, _k, state: state.free())
    state = comm.Get_attr(_STATE_KEYVAL)
    if state is None:
        state = _CommState(comm)
        comm.Set_attr(_STATE_KEYVAL, state)
    return state


# --------------------------------------------------------------------------- agreement


def _plan(state: _CommState, cache_key: tuple, shard_map, after, policy, sealed, verify,
          chunk_bytes) -> MovePlan:
    """The :class:`MovePlan` (cached: a plan is a pure function of ``cache_key``)."""
    plan = state.plans.get(cache_key)
    if plan is None:
        plan = MovePlan.build(shard_map, after, policy, rank=state.rank, hosts=state.hosts,
                              sealed=sealed, verify=verify, chunk_bytes=chunk_bytes)
        state.plans[cache_key] = plan
        if len(state.plans) > _PLAN_CACHE_SIZE:
            state.plans.popitem(last=False)
    else:
        state.plans.move_to_end(cache_key)
    return plan


def _agree_on_plan(state, shard_map, local, owners_after, policy, key, verify, chunk_bytes,
                   checksums, corrupt, corrupt_header):
    """One collective round: plan sameness + every rank's checks; raises everywhere or returns.

    Returns ``(plan, aes, known, flips, header_flips)``, ``known`` the sender's
    checksums (given, or hashed here). Every argument a rank alone could get
    wrong (options, hooks, ``checksums``) is checked here, inside the round:
    after it, a rank that raised would leave its peers waiting for its bytes.
    A 3-word ``Allreduce(MAX)`` of
    ``[failed, d, -d]`` (``d``: 62 bits of a digest of the map layout, the owners
    before and after, the map version and the options): the plan is the same
    everywhere iff ``max d == -max(-d)``. Only when a rank failed do the ranks
    gather the error records (a second round). Across hosts the round is
    non-blocking and, while it is in flight, the sender hashes small payloads
    bound for another host (over a network, hashing after
    posting would hold the bytes back: the transfer progresses only inside MPI
    calls).
    """
    MPI = _mpi()
    plan, out, exc, digest, known = None, None, None, 0, {}
    try:
        verify = _verify_mode(verify)
        chunk_bytes = int(chunk_bytes)
        known = _known_checksums(checksums)
        if policy.topology.size != state.size:
            raise InvalidArgument(f"the policy's topology has {policy.topology.size} ranks but the "
                                  f"communicator has {state.size}")
        after = np.asarray(owners_after)
        policy.check_owners(shard_map, after)  # every call; names a bad shape, rank or region
        after = after.astype(np.int64, copy=False)
        after_bytes = after.tobytes()
        before_bytes, layout = shard_map.owners_bytes(), shard_map.layout_key()
        sealed = key is not None
        h = xxhash.xxh3_64(layout)
        h.update(before_bytes)
        h.update(after_bytes)
        h.update(_CALL.pack(shard_map.version, chunk_bytes, sealed, verify == "all"))
        digest = h.intdigest() >> 2
        plan = _plan(state, (layout, before_bytes, after_bytes, policy, sealed, verify, chunk_bytes),
                     shard_map, after, policy, sealed, verify, chunk_bytes)
        plan.check_payloads(local)
        out = (plan, _cipher(key), known, _corrupt_ids(corrupt),
               _corrupt_header_offsets(corrupt_header))
    except Exception as e:  # noqa: BLE001 - every failure must reach the peers
        exc = e
    mine = np.array([exc is not None, digest, -digest], np.int64)
    top = np.empty_like(mine)
    # the same kind of collective on every rank: whether the ranks span hosts is known alike
    if state.spans_hosts:  # hash what will leave the host while the round is in flight
        req = state.comm.Iallreduce(mine, top, op=MPI.MAX)
        budget = PREHASH_BYTES if exc is None else 0
        for m in plan.sends if exc is None and plan is not None else ():
            if m.protection == HASHED and m.leaves_host and m.shard_id not in known \
                    and m.nbytes <= budget:
                known[m.shard_id] = xxhash.xxh3_64_intdigest(_flat_bytes(local[m.shard_id]))
                budget -= m.nbytes
        req.Wait()
    else:  # MPICH's blocking Allreduce of a few words is quicker than its non-blocking one
        state.comm.Allreduce(mine, top, op=MPI.MAX)
    failed, top_digest, top_negated = top.tolist()
    if failed:
        raise_gathered(state.comm.allgather(error_record(exc, state.rank)), exc)
    if top_digest != -top_negated:
        err = InvalidArgument("the map (owners or layout), owners_after, chunk_bytes, verify, the "
                              "key's presence or the map version differs between ranks; every "
                              "rank must execute the same plan. Nothing was moved")
        err.collective = True
        raise err
    assert out is not None  # no rank failed, this one included
    return out


# --------------------------------------------------------------------------- the wire


def _flat_bytes(a: np.ndarray) -> np.ndarray:
    """A 1-D uint8 view of a C-contiguous array (no copy)."""
    return a.reshape(-1).view(np.uint8)


def _take(pool, nbytes: int) -> np.ndarray:
    return pool.take(nbytes) if pool is not None else np.empty(nbytes, np.uint8)


def _piece(buf: np.ndarray, a: int, b: int) -> np.ndarray:
    return buf if a == 0 and b == buf.size else buf[a:b]


def _post_receives(pcomm, plan: MovePlan, pool, MPI) -> list[tuple]:
    """Post every receive first (the plan tells sizes), so no send waits for a match."""
    incoming = []
    for m in plan.recvs:
        flat = _take(pool, m.nbytes)
        wire = _take(pool, m.wire_bytes) if m.protection == SEALED else flat
        reqs = [pcomm.Irecv([_piece(wire, wa, wb), MPI.BYTE], m.src, TAG_PAYLOAD)
                for _, _, wa, wb in m.layout]
        header = bytearray(HEADER_BYTES)
        incoming.append((m, flat, wire, reqs, header,
                         pcomm.Irecv([header, MPI.BYTE], m.src, TAG_HEADER)))
    return incoming


def _send(pcomm, plan: MovePlan, local, version, aes, known, pool, MPI):
    """Post every send; returns the requests and the buffers that must live until they complete.

    Clear pieces are posted at once; a hashed payload whose checksum is not yet
    known is hashed while the receiver pulls the bytes (MPICH moves large
    intranode messages with a single copy done by the receiver) and its header,
    carrying the checksum, follows. Sealed pieces are encrypted one by one while
    in cache, then posted. Every other header goes first.
    """
    reqs: list = []
    keep: list[bytes | np.ndarray] = []
    for m in plan.sends:
        sid, dst = m.shard_id, m.dst
        flat = _flat_bytes(local[sid])
        if m.protection != HASHED or sid in known:
            header = m.header(version, known.get(sid, 0) if m.protection == HASHED else 0)
            reqs.append(pcomm.Isend([header, MPI.BYTE], dst, TAG_HEADER))
            keep.append(header)
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
            reqs.append(pcomm.Isend([_piece(flat, a, b), MPI.BYTE], dst, TAG_PAYLOAD))
        if m.protection == HASHED and sid not in known:
            h = xxhash.xxh3_64()
            for a, b, _, _ in m.layout:
                # an ndarray is a Buffer (numpy's stubs say so only for Python >= 3.12)
                h.update(cast("Buffer", flat[a:b]))
            header = m.header(version, h.intdigest())
            reqs.append(pcomm.Isend([header, MPI.BYTE], dst, TAG_HEADER))
            keep.append(header)
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
            req.Wait()
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
        hreq.Wait()
        if sid in header_flips:
            header[header_flips[sid]] ^= 1  # test hook: a damaged header (lowest bit of a word)
        problem = problem or header_problem(header, m, version)
        digest = h.intdigest() if h is not None else 0
        if problem is None and h is not None and digest != header_checksum(header):
            problem = (f"checksum mismatch: received xxh3-64 {digest:016x}, "
                       f"sender's {header_checksum(header):016x}")
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
    MPI = _mpi()
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
    MPI = _mpi()
    state = _comm_state(comm)
    pcomm, rank, version = state.comm, state.rank, shard_map.version
    plan, aes, known, flips, header_flips = _agree_on_plan(
        state, shard_map, local, owners_after, policy, key, verify, chunk_bytes, checksums,
        corrupt, corrupt_header)
    if not plan.moves:  # agreed everywhere: nothing to move, verify or record
        return shard_map.with_owners(owners_after), dict(local), []

    # hpccloud errors are collected and raised on every rank below; anything unexpected
    # (e.g. MemoryError) escapes so the CLI / test harness aborts the job instead of
    # leaving peers waiting for messages that will never come
    incoming = _post_receives(pcomm, plan, pool, MPI)
    send_reqs, keep = _send(pcomm, plan, local, version, aes, known, pool, MPI)
    verdict = np.zeros(1 + _ROW * len(plan.moves))
    rows = verdict[1:].reshape(-1, _ROW)
    received, error = _receive(plan, incoming, rank, version, aes, flips, header_flips, rows)
    MPI.Request.Waitall(send_reqs)

    # one round: every rank's verdict and the records (nothing is accepted unless all passed);
    # each row is filled by its receiver only, so the sum is exact
    verdict[0] = error is not None
    pcomm.Allreduce(MPI.IN_PLACE, verdict, op=MPI.SUM)
    if pool is not None:  # every request completed: the sealed wire buffers are free again
        for _m, flat, wire, *_ in incoming:
            if wire is not flat:
                pool.give(wire)
        for buf in keep:
            if isinstance(buf, np.ndarray):
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
    if plan.sends:
        sent = {m.shard_id for m in plan.sends}
        new_local = {sid: a for sid, a in local.items() if sid not in sent}
    else:
        new_local = dict(local)
    new_local.update(received)
    if audit is not None:
        _append_audit(pcomm, audit, records, rank)
    return shard_map.with_owners(owners_after), new_local, records


def execute_aligned(comm, shard_map, local: dict[int, np.ndarray], owners_after, policy, **kw):
    """:func:`execute` between two sleeping barriers, as a migration runs it; collective.

    The first barrier lines the ranks up (they leave the plan's broadcast at
    different times), the second ends the move on every rank together; the
    waits sleep, so ranks that share a core leave it to the ones still working.
    The job's migrations and the transport probe that prices them before the
    first one both move through here, so the probe times the span the model
    prices. Returns ``(new_map, new_local, records, barrier_wait_s, transport_s)``
    (this rank's wait at the first barrier, and the time from it to the end).
    """
    from hpccloud.comm.wait import sleeping_barrier

    t_wait = time.perf_counter()
    sleeping_barrier(comm)
    t0 = time.perf_counter()
    new_map, new_local, records = execute(comm, shard_map, local, owners_after, policy, **kw)
    sleeping_barrier(comm)
    return new_map, new_local, records, t0 - t_wait, time.perf_counter() - t0


__all__ = ["CHUNK_BYTES", "CORRUPT_ENV", "CORRUPT_HEADER_ENV", "HOST_ENV", "MAX_CHUNK_BYTES",
           "VERIFY_ENV", "BufferPool", "TransferRecord", "execute", "execute_aligned", "host_key", "load_key",
           "reload_env"]
