"""Shard transport: execute a migration plan with checksummed MPI buffers.

:func:`execute` moves every shard whose owner changes, on all ranks at once:

1. **Residency first.** Every rank checks, collectively, that the plan is the
   same everywhere, names existing ranks, and keeps every shard inside its
   allowed regions (:meth:`hpccloud.policy.Policy.check_owners`). A bad plan
   raises the same error on every rank before any byte moves.
2. **Buffers, never pickles.** Receivers allocate the destination arrays
   from the (identical) shard map and post ``Irecv`` for every piece up front;
   senders post ``Isend`` of contiguous views of the shard. Payloads travel in
   pieces of ``chunk_bytes`` (default 1 MiB, at most 1 GiB), so no single MPI
   message exceeds 2 GiB whatever the MPI library's large-count support, and
   hashing one piece overlaps with moving the others.
3. **Checksums.** Each payload's xxh3-64 (of the plaintext, streamed piece by
   piece on both sides) travels in a fixed 6-word ``uint64`` header
   ``[shard_id, nbytes, checksum, map_version, nonce_lo, nonce_hi]`` after the
   payload. A mismatch is a :class:`~hpccloud.errors.ChecksumError` on every
   rank; received payloads are only handed back after every rank verified all
   of its payloads, so nothing corrupted is ever accepted.
4. **Encryption** (optional). With a key (``key=`` bytes or a key file), shards
   crossing a region border are sealed with AES-GCM (``cryptography``). The
   96-bit nonce is random per message (``os.urandom(12)``): the same key may be
   reused across jobs, where a per-job counter would repeat nonces; 2**32
   random nonces per key keep the collision chance below 2**-32. The associated
   data binds the ciphertext to (shard id, source, destination, map version).
5. **Consistent map.** Every rank returns ``shard_map.with_owners(owners_after)``
   (version + 1) and the same list of :class:`TransferRecord` (allgathered); rank
   0 appends them to the JSON-lines audit log if one is given.

Test hook: ``corrupt={shard ids}`` (or the environment variable
``HPCCLOUD_TRANSPORT_CORRUPT="3,7"``) flips one byte of those shards' received
wire buffer before verification.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterable

import numpy as np
import xxhash

from hpccloud.comm.agree import agree, raise_if_any
from hpccloud.comm.audit import AuditLog, TransferRecord
from hpccloud.errors import ChecksumError, ConfigError, InvalidArgument

CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 1 << 30
GCM_TAG_BYTES = 16
HEADER_WORDS = 6
TAG_PAYLOAD = 41
TAG_HEADER = 42
CORRUPT_ENV = "HPCCLOUD_TRANSPORT_CORRUPT"


# --------------------------------------------------------------------------- keys


def load_key(path: str | os.PathLike) -> bytes:
    """Read an AES key file: 16, 24 or 32 raw bytes, or the same as hex text.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "k")
    >>> _ = open(p, "w").write("00" * 32)
    >>> len(load_key(p))
    32
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the transport key file ({exc.strerror}). "
                          "Fix: check the key file path") from None
    if len(raw) in (16, 24, 32):
        return raw
    try:
        key = bytes.fromhex(raw.strip().decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) not in (16, 24, 32):
        raise ConfigError(f"{source}: not an AES key ({len(raw)} bytes). Fix: write 16, 24 or 32 "
                          "random bytes, or their hex (e.g. `openssl rand -hex 32 > key`)")
    return key


def _cipher(key):
    if key is None:
        return None
    if isinstance(key, str | os.PathLike):
        key = load_key(key)
    if not isinstance(key, bytes | bytearray) or len(key) not in (16, 24, 32):
        raise InvalidArgument("key must be 16, 24 or 32 bytes or a key file path")
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(bytes(key))


# --------------------------------------------------------------------------- helpers


def _flat_bytes(a: np.ndarray) -> np.ndarray:
    """A 1-D uint8 view of a C-contiguous array (no copy)."""
    return a.reshape(-1).view(np.uint8)


def _pieces(nbytes: int, chunk_bytes: int) -> list[tuple[int, int]]:
    return [(o, min(o + chunk_bytes, nbytes)) for o in range(0, nbytes, chunk_bytes)]


def _aad(shard_id: int, src: int, dst: int, version: int) -> bytes:
    return struct.pack("<4q", shard_id, src, dst, version)


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


def _plan_digest(owners: np.ndarray) -> int:
    h = xxhash.xxh3_64(f"{owners.dtype.str}{owners.shape}".encode())
    h.update(np.ascontiguousarray(owners).tobytes())
    return h.intdigest()


def _validate(comm, shard_map, local, owners_after, policy, key, digests):
    rank = comm.Get_rank()
    if policy.topology.size != comm.Get_size():
        raise InvalidArgument(f"the policy's topology has {policy.topology.size} ranks but the "
                              f"communicator has {comm.Get_size()}")
    if len(set(digests)) != 1:
        raise InvalidArgument("owners_after differs between ranks; every rank must execute the "
                              "same plan. Nothing was moved")
    policy.check_owners(shard_map, owners_after)
    moving = shard_map.owners() != owners_after
    for s in shard_map.shards_on(rank):
        if not moving[s.id]:
            continue
        a = local.get(s.id)
        if a is None:
            raise InvalidArgument(f"rank {rank} owns shard {s.id} in map version "
                                  f"{shard_map.version} but has no data for it")
        if a.shape != s.shape or a.dtype.str != s.dtype or not a.flags.c_contiguous:
            raise InvalidArgument(f"rank {rank}: shard {s.id} data is {a.dtype.str} {a.shape} "
                                  f"(C-contiguous: {a.flags.c_contiguous}); the map says "
                                  f"{s.dtype} {s.shape}, C-contiguous")
    return _cipher(key)


# --------------------------------------------------------------------------- execute


def execute(comm, shard_map, local: dict[int, np.ndarray], owners_after, policy, *, key=None,
            audit=None, chunk_bytes: int = CHUNK_BYTES, corrupt: Iterable[int] | None = None):
    """Move shards so that shard ``s`` ends on rank ``owners_after[s]``; collective.

    Parameters
    ----------
    comm : an mpi4py communicator matching ``policy.topology``.
    shard_map : the current map (identical on every rank).
    local : this rank's payloads ``{shard_id: array}`` (C-contiguous). Not modified.
    owners_after : int array ``[S]``, identical on every rank.
    policy : :class:`hpccloud.policy.Policy`; residency is re-checked here.
    key : None, AES key bytes, or a key file path: encrypt cross-region moves.
    audit : None, a path or an :class:`AuditLog`; rank 0 appends the records.
    chunk_bytes : payload piece size (<= 1 GiB).
    corrupt : test hook, shard ids whose received bytes get one byte flipped.

    Returns
    -------
    (new_map, new_local, records) : the map with ``version + 1``, this rank's
    payloads after the moves, and every transfer's record (same on all ranks).

    Examples
    --------
    >>> new_map, local, recs = execute(comm, m, local, plan.owners_after, policy)  # doctest: +SKIP
    """
    from mpi4py import MPI

    rank = comm.Get_rank()
    if not 0 < int(chunk_bytes) <= MAX_CHUNK_BYTES:
        raise InvalidArgument(f"chunk_bytes must be in 1..{MAX_CHUNK_BYTES}, got {chunk_bytes}")
    chunk_bytes = int(chunk_bytes)
    owners_after = np.asarray(owners_after)
    digests = comm.allgather(_plan_digest(owners_after))
    aes = agree(comm, lambda: _validate(comm, shard_map, local, owners_after, policy, key, digests))
    owners_after = owners_after.astype(np.int64)
    before = shard_map.owners()
    moves = [int(s) for s in np.flatnonzero(before != owners_after)]
    region = policy.topology.region_of
    version = shard_map.version
    flip = _corrupt_ids(corrupt)

    # hpccloud errors are collected in `error` and raised on every rank below; anything
    # unexpected (e.g. MemoryError) escapes so the CLI / test harness aborts the job
    # instead of leaving peers waiting for messages that will never come
    pcomm = comm.Dup()  # private tags: no clash with the caller's messages
    incoming, send_reqs, keep_alive = [], [], []
    error: BaseException | None = None
    t_start = time.perf_counter()

    # 1. post every receive first (the map tells sizes), so no send waits for a match
    for sid in moves:
        s = shard_map.shards[sid]
        src, dst = int(before[sid]), int(owners_after[sid])
        if dst != rank:
            continue
        enc = aes is not None and region(src) != region(dst)
        buf = np.empty(s.shape, dtype=s.dtype)
        wire = np.empty(s.nbytes + GCM_TAG_BYTES, np.uint8) if enc else _flat_bytes(buf)
        reqs = [pcomm.Irecv([wire[a:b], MPI.BYTE], src, TAG_PAYLOAD)
                for a, b in _pieces(wire.nbytes, chunk_bytes)]
        header = np.zeros(HEADER_WORDS, np.uint64)
        hreq = pcomm.Irecv(header, src, TAG_HEADER)
        incoming.append((s, src, enc, buf, wire, reqs, header, hreq))

    # 2. send: hash each piece, then post it; the header (with the checksum) follows
    for sid in moves:
        s = shard_map.shards[sid]
        src, dst = int(before[sid]), int(owners_after[sid])
        if src != rank:
            continue
        flat = _flat_bytes(local[sid])
        nonce = b"\0" * 12
        if aes is not None and region(src) != region(dst):
            digest = xxhash.xxh3_64_intdigest(flat)
            nonce = os.urandom(12)
            wire = np.empty(s.nbytes + GCM_TAG_BYTES, np.uint8)
            aes.encrypt_into(nonce, flat, _aad(sid, src, dst, version), wire)
            send_reqs += [pcomm.Isend([wire[a:b], MPI.BYTE], dst, TAG_PAYLOAD)
                          for a, b in _pieces(wire.nbytes, chunk_bytes)]
            keep_alive.append(wire)
        else:
            h = xxhash.xxh3_64()
            for a, b in _pieces(s.nbytes, chunk_bytes):
                h.update(flat[a:b])
                send_reqs.append(pcomm.Isend([flat[a:b], MPI.BYTE], dst, TAG_PAYLOAD))
            digest = h.intdigest()
        header = np.array([sid, s.nbytes, digest, version, int.from_bytes(nonce[:8], "little"),
                           int.from_bytes(nonce[8:], "little")], np.uint64)
        keep_alive.append(header)  # send buffers must live until Waitall
        send_reqs.append(pcomm.Isend(header, dst, TAG_HEADER))

    # 3. receive in order: hash each piece as it lands, verify, keep the result aside
    received, mine = {}, []
    t_prev = t_start
    for s, src, enc, buf, wire, reqs, header, hreq in incoming:
        h = xxhash.xxh3_64()
        for k, ((a, b), req) in enumerate(zip(_pieces(wire.nbytes, chunk_bytes), reqs, strict=True)):
            req.Wait()
            if k == 0 and s.id in flip:
                wire[a] ^= 0xFF  # test hook: damage the bytes "in flight"
            if not enc:
                h.update(wire[a:b])
        hreq.Wait()
        problem = None
        if int(header[0]) != s.id or int(header[1]) != s.nbytes or int(header[3]) != version:
            problem = (f"header says shard {int(header[0])}, {int(header[1])} bytes, map version "
                       f"{int(header[3])}; expected shard {s.id}, {s.nbytes} bytes, version {version}")
        elif enc:
            nonce = int(header[4]).to_bytes(8, "little") + int(header[5]).to_bytes(4, "little")
            try:
                aes.decrypt_into(nonce, wire, _aad(s.id, src, rank, version), _flat_bytes(buf))
            except Exception:  # noqa: BLE001 - InvalidTag: tampered or wrong key
                problem = "AES-GCM authentication failed (payload altered in flight, or wrong key)"
            else:
                h.update(_flat_bytes(buf))
        if problem is None and h.intdigest() != int(header[2]):
            problem = (f"checksum mismatch: received xxh3-64 {h.intdigest():016x}, "
                       f"sender's {int(header[2]):016x}")
        t_done = time.perf_counter()
        if problem is not None:
            if error is None:
                error = ChecksumError(f"shard {s.id} from rank {src} to rank {rank}: {problem}; "
                                      "the payload was rejected and no shard was moved")
            continue
        received[s.id] = buf
        mine.append(TransferRecord(time.time(), s.id, s.data_class, src, rank, region(src),
                                   region(rank), s.nbytes, t_done - t_prev, f"{int(header[2]):016x}",
                                   enc, version + 1))
        t_prev = t_done
    MPI.Request.Waitall(send_reqs)
    pcomm.Free()
    keep_alive.clear()
    raise_if_any(comm, error)

    records = sorted((r for part in comm.allgather(mine) for r in part), key=lambda r: r.shard_id)
    moved = set(moves)
    new_local = {sid: a for sid, a in local.items() if sid not in moved}
    new_local.update(received)
    if audit is not None:
        log = audit if isinstance(audit, AuditLog) else AuditLog(audit)
        agree(comm, lambda: log.append(records) if rank == 0 else None)
    return shard_map.with_owners(owners_after), new_local, records


__all__ = ["CHUNK_BYTES", "CORRUPT_ENV", "execute", "load_key"]
