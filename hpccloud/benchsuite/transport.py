"""Shard transport vs raw mpi4py Send/Recv of the same buffers, 2 ranks.

For each size (default 1, 4, 16, 64, 256 MiB) one float64 shard moves rank 0
-> rank 1 and back with :func:`hpccloud.comm.transport.execute` under the
default policy (``verify="route"``: two ranks on one host are not re-hashed, only
their headers checked; ranks on different hosts or network namespaces hash; the
row's ``protection`` says which), in the clear and AES-GCM sealed (the two ranks
sit in different regions of the default topology), and in the clear with every
payload hashed (``verify="all"``: ``ratio_verify_all``, to set beside
``bare_checksummed_ratio``). In every round, in
the same run and in turn, it also moves with raw ``Send``/``Recv``. Every move
is timed barrier to barrier, after both ranks streamed ``--flush-mib`` (64 MiB,
twice the L3) so that no variant starts with another's buffers in cache; the
first ``--warmup`` rounds are dropped and medians of the rest are reported;
``ratio = raw_s / hpccloud_s`` (1.0 = as fast as raw).

Two fair pairings, both reported, because the receive buffer matters (a fresh
array pays its page faults while the bytes land):

* warm (``ratio``, the headline): raw ``Recv`` into a buffer reused every
  round vs ``execute(..., pool=BufferPool())``, which receives into the buffer
  the rank gave away in the previous move (what a load balancer moving shards
  back and forth does).
* fresh (``ratio_fresh``): raw ``Recv`` into a new ``np.empty`` each time vs
  ``execute`` without a pool (a new array per received shard). Whether "new"
  memory is really cold depends on malloc (glibc reuses freed chunks below its
  mmap threshold), the same for both sides.

``encryption_overhead = hpccloud_s(encrypted) / hpccloud_s(clear)``, both
warm. ``checksum_bytes_per_s`` is xxh3-64 over the same buffer, same run.

Batched plans (``--batch B``, default 8; rows with ``shards_per_move = B``):
one ``execute`` moves B shards of the size (a rebalance moves several shards
at once, so the per-call cost — the residency agreement, the verdict round,
the new map — is shared), against B raw ``Send``/``Recv`` of the same
buffers. Only sizes with B × size <= 256 MiB.

The floor under the transport (``--breakdown``; keys ``bare_*_ratio``): the same
piece stream as the transport (pieces of ``CHUNK_BYTES``, posted all at once,
received in order) with none of its machinery — no plan check, no map, no
records — timed in the same rounds, four ways: no hashing (``pieces``), the
sender hashing after posting (``send_hash``), the receiver hashing each piece
as it lands (``recv_hash``), and both plus the digest message and its
comparison (``checksummed``). ``bare_checksummed_ratio`` is what any transport
that verifies xxh3 on receipt can reach on this machine and MPI; the gap
between it and ``ratio`` is the transport's own cost. For one-shard moves also
the default same-host route's own floor: the payload as one message beside a
48-byte header compared on receipt (``bare_header_ratio``), and the same with
the two 3-word ``Allreduce`` rounds of every call (agreement, verdict:
``bare_header_rounds_ratio``) — what a transport that agrees before and
decides after can reach without any of hpccloud's bookkeeping.

    mpiexec -n 2 hpccloud bench transport --json transport.json
    mpiexec -n 2 hpccloud bench transport --breakdown --batch 1
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable

DEFAULT_SIZES_MIB = (1, 4, 16, 64, 256)


def add_arguments(parser) -> None:
    parser.add_argument("--json", metavar="OUT", default=None, help="write the results as a JSON list")
    parser.add_argument("--sizes-mib", default=",".join(map(str, DEFAULT_SIZES_MIB)), metavar="LIST",
                        help="shard sizes in MiB, comma-separated (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds per size (default: 9)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default: 2)")
    parser.add_argument("--batch", type=int, default=8,
                        help="shards per move in the batched rows (default: 8; 1: no batched rows)")
    parser.add_argument("--flush-mib", type=int, default=64, metavar="MIB",
                        help="stream this many MiB on each rank before every timed move to evict "
                             "the caches (default: 64, twice this machine's L3; 0: off)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the bare piece stream with and without hashing (the floor "
                             "under the transport; bare_*_ratio keys)")
    parser.add_argument("--topology", metavar="FILE", default=None,
                        help="topology TOML (default: the embedded two-region topology)")


BARE_VARIANTS = {"pieces": (False, False), "send_hash": (True, False),
                 "recv_hash": (False, True), "checksummed": (True, True)}
#: the default same-host route's wire pattern with none of the transport's bookkeeping:
#: the payload as one message beside a 48-byte header the receiver compares
#: (``header``), and the same with the two small collective rounds every call
#: makes (agreement before, verdict after: ``header_rounds``)
ROUTE_VARIANTS = {"header": 0, "header_rounds": 2}


def bare_move(comm, a: int, src, dst, chunk_bytes: int, send_hash: bool, recv_hash: bool) -> None:
    """Rank ``a`` sends ``src`` to the other rank's ``dst`` as the transport's piece stream.

    Only what every checksummed transport must do: pieces posted at once, the
    sender's xxh3 after posting, the receiver's xxh3 of each piece as it lands,
    and (with both) the digest as a message, compared on receipt.
    """
    import numpy as np
    import xxhash
    from mpi4py import MPI

    from hpccloud.comm.moveplan import pieces as cut
    from hpccloud.errors import ChecksumError

    rank = comm.Get_rank()
    flat = (src if rank == a else dst).reshape(-1).view(np.uint8)
    pieces = cut(flat.size, chunk_bytes)
    digest = np.zeros(1, np.uint64)
    if rank == a:
        reqs = [comm.Isend([flat[lo:hi], MPI.BYTE], 1 - a, 51) for lo, hi in pieces]
        if send_hash:
            h = xxhash.xxh3_64()
            for lo, hi in pieces:
                h.update(flat[lo:hi])
            digest[0] = h.intdigest()
            if recv_hash:
                reqs.append(comm.Isend(digest, 1 - a, 52))
        MPI.Request.Waitall(reqs)
        return
    reqs = [comm.Irecv([flat[lo:hi], MPI.BYTE], a, 51) for lo, hi in pieces]
    dreq = comm.Irecv(digest, a, 52) if send_hash and recv_hash else None
    h = xxhash.xxh3_64()
    for (lo, hi), req in zip(pieces, reqs, strict=True):
        req.Wait()
        if recv_hash:
            h.update(flat[lo:hi])
    if dreq is not None:
        dreq.Wait()
        if h.intdigest() != int(digest[0]):
            raise ChecksumError("bench transport: bare piece stream arrived damaged")


def route_move(comm, a: int, src, dst, rounds: int) -> None:
    """Rank ``a`` sends ``src`` to the other rank's ``dst`` as the header-only route does.

    One payload message and one 48-byte header (compared on receipt), and
    ``rounds`` 3-word ``Allreduce`` rounds split before and after: the floor under
    :func:`hpccloud.comm.transport.execute` on one host, without its residency
    check, plan, records or new map.
    """
    import numpy as np
    from mpi4py import MPI

    from hpccloud.errors import ChecksumError

    rank = comm.Get_rank()
    word = np.zeros(3, np.int64)
    top = np.empty_like(word)
    for _ in range(rounds // 2):
        comm.Allreduce(word, top, op=MPI.MAX)
    flat = (src if rank == a else dst).reshape(-1).view(np.uint8)
    header = np.array([7, flat.size, 0, 1, 1, 0], np.int64)
    if rank == a:
        MPI.Request.Waitall([comm.Isend([header, MPI.BYTE], 1 - a, 53),
                             comm.Isend([flat, MPI.BYTE], 1 - a, 54)])
    else:
        got = np.empty_like(header)
        reqs = [comm.Irecv([got, MPI.BYTE], a, 53), comm.Irecv([flat, MPI.BYTE], a, 54)]
        MPI.Request.Waitall(reqs)
        if got.tobytes() != header.tobytes():
            raise ChecksumError("bench transport: bare header arrived damaged")
    for _ in range(rounds - rounds // 2):
        comm.Allreduce(word, top, op=MPI.MAX)


def _sizes(text: str) -> list[int]:
    from hpccloud.errors import InvalidArgument

    try:
        sizes = [int(float(x) * (1 << 20)) for x in text.split(",") if x.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 8:
        raise InvalidArgument(f"--sizes-mib {text!r}: expected positive sizes in MiB, e.g. 1,4,16")
    return sizes


def run(args) -> int:
    import numpy as np
    import xxhash
    from mpi4py import MPI

    from hpccloud.benchsuite.provenance import spread
    from hpccloud.comm.agree import agree
    from hpccloud.comm.bufpool import BufferPool
    from hpccloud.comm.moveplan import CHUNK_BYTES
    from hpccloud.comm.shm import release_init_segments
    from hpccloud.comm.topology import load_topology
    from hpccloud.comm.transport import execute, load_key
    from hpccloud.errors import ConfigError, InvalidArgument
    from hpccloud.io.atomic import write_json_atomic
    from hpccloud.policy import Policy
    from hpccloud.shards import block_1d
    from hpccloud.slurm import srun_without_pmi

    comm = MPI.COMM_WORLD
    problem = srun_without_pmi(comm.Get_size())  # N separate 1-rank worlds would "work"
    if problem:
        raise ConfigError(problem)
    release_init_segments(comm)  # an aborted run leaves no /dev/shm segment
    rank = comm.Get_rank()

    def check():
        if comm.Get_size() != 2:
            raise InvalidArgument(f"bench transport needs exactly 2 ranks, got {comm.Get_size()}. "
                                  "Fix: mpiexec -n 2 hpccloud bench transport")
        if args.repeats < 1 or args.warmup < 0 or args.batch < 1 or args.flush_mib < 0:
            raise InvalidArgument("--repeats and --batch must be >= 1, --warmup and --flush-mib "
                                  ">= 0")
        return _sizes(args.sizes_mib)

    sizes = agree(comm, check)
    policy = Policy.from_topology(load_topology(args.topology, comm))
    # the key goes through a key file, as a user would configure it
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "key.hex")
        # private from the start, as a key file must be (load_key warns otherwise)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            fh.write(comm.bcast(os.urandom(32).hex() if rank == 0 else None))
        key = load_key(path)
    regions = (policy.topology.region_of(0), policy.topology.region_of(1))

    # every timed move starts with the caches flushed on both ranks, so no variant
    # inherits another's cached buffers (a raw move right after one that touched the
    # same arrays ran ~2x faster at 1-4 MiB than after one that did not)
    flush = np.ones(args.flush_mib * (1 << 20) // 8)

    def timed(fn) -> float:
        flush.sum()
        comm.Barrier()
        t0 = time.perf_counter()
        fn()
        comm.Barrier()
        return time.perf_counter() - t0

    rows = []
    cases = [(nbytes, 1) for nbytes in sizes]
    if args.batch > 1:
        cases += [(nbytes, args.batch) for nbytes in sizes if nbytes * args.batch <= 256 << 20]
    for nbytes, batch in cases:
        n = nbytes // 8
        m0 = block_1d(n * batch, batch, "<f8", 2).with_owners(np.zeros(batch, np.int64))  # on rank 0
        src = np.random.default_rng(5).standard_normal(n * batch)
        dst = np.empty_like(src)
        state = {"map": m0, "local": {s.id: src[s.index].copy() for s in m0.shards} if rank == 0 else {}}

        pool = BufferPool()
        protection: dict[tuple[bool, str], str] = {}

        def move(enc: bool, pooled: bool, verify="route", state=state, pool=pool,
                 protection=protection):
            m = state["map"]
            after = 1 - m.owners()
            state["map"], state["local"], recs = execute(comm, m, state["local"], after, policy,
                                                         key=key if enc else None, verify=verify,
                                                         pool=pool if pooled else None)
            protection[enc, verify] = recs[0].protection

        def raw(a: int, fresh: bool, src=src, dst=dst, n=n, batch=batch):
            for k in range(batch):
                if rank == a:
                    comm.Send(src[k * n:(k + 1) * n], 1 - a, 7)
                else:
                    comm.Recv(np.empty(n) if fresh else dst[k * n:(k + 1) * n], a, 7)

        def bare(a: int, hashes, src=src, dst=dst, n=n, batch=batch):
            for k in range(batch):
                bare_move(comm, a, src[k * n:(k + 1) * n], dst[k * n:(k + 1) * n], CHUNK_BYTES,
                          *hashes)

        variants: dict[str, Callable[..., object]] = {
            "raw": lambda: raw(0, False) or raw(1, False),
            "plain": lambda: move(False, True) or move(False, True),
            "enc": lambda: move(True, True) or move(True, True),
            "raw_fresh": lambda: raw(0, True) or raw(1, True),
            "plain_fresh": lambda: move(False, False) or move(False, False),
            "enc_fresh": lambda: move(True, False) or move(True, False),
            "plain_all": lambda: move(False, True, "all") or move(False, True, "all"),
        }
        if args.breakdown:
            for name, hashes in BARE_VARIANTS.items():
                variants[f"bare_{name}"] = lambda h=hashes: bare(0, h) or bare(1, h)
            if batch == 1:
                def route(rounds: int, src=src, dst=dst) -> None:
                    route_move(comm, 0, src, dst, rounds)
                    route_move(comm, 1, src, dst, rounds)

                for name, rounds in ROUTE_VARIANTS.items():
                    variants[f"bare_{name}"] = lambda r=rounds: route(r)
        times: dict[str, list[float]] = {k: [] for k in variants}
        for i in range(args.warmup + args.repeats):
            for k, fn in variants.items():  # in turn, so drift hits every variant alike
                t = timed(fn)
                if i >= args.warmup:
                    times[k].append(t / 2)
        hs = []
        for _ in range(5):
            t0 = time.perf_counter()
            xxhash.xxh3_64_intdigest(src[:n])
            hs.append(time.perf_counter() - t0)
        # rank 0's timings (barrier to barrier, so both ranks agree up to noise)
        med = {k: float(np.median(v)) for k, v in times.items()}
        # on a shared machine the medians carry the scheduler's delays; the 10th
        # percentile shows what an uncontended move costs
        p10 = {k: float(np.percentile(v, 10)) for k, v in times.items()}
        checksum_bps = nbytes / float(np.median(hs))
        for enc in (False, True):
            t = med["enc" if enc else "plain"]
            t_fresh = med["enc_fresh" if enc else "plain_fresh"]
            moved = nbytes * batch
            rows.append({
                "bytes": nbytes, "shards_per_move": batch, "encrypted": enc, "checksum": "xxh3_64",
                "src_region": regions[0], "dst_region": regions[1],
                "hpccloud_s_median": t, "raw_s_median": med["raw"],
                "hpccloud_s_p10": p10["enc" if enc else "plain"], "raw_s_p10": p10["raw"],
                "hpccloud_bytes_per_s": moved / t, "raw_bytes_per_s": moved / med["raw"],
                "ratio": med["raw"] / t,
                "hpccloud_fresh_bytes_per_s": moved / t_fresh,
                "raw_fresh_bytes_per_s": moved / med["raw_fresh"],
                "ratio_fresh": med["raw_fresh"] / t_fresh,
                "encryption_overhead": med["enc"] / med["plain"],
                "protection": protection[enc, "route"],
                "hpccloud_verify_all_s_median": med["plain_all"],
                "ratio_verify_all": med["raw"] / med["plain_all"],
                "repeats": args.repeats, "warmup": args.warmup, "flush_mib": args.flush_mib,
                "checksum_bytes_per_s": checksum_bps,
                "checksum_fraction_of_raw": (moved / checksum_bps) / med["raw"],
                **{f"bare_{name}_ratio": med["raw"] / med[f"bare_{name}"]
                   for name in (*BARE_VARIANTS, *ROUTE_VARIANTS) if f"bare_{name}" in med},
                "spread_s": {k: spread(v) for k, v in times.items()},
            })
        if rank == 0:
            for r in rows[-2:]:
                print(f"{r['bytes'] / 2**20:8.0f} MiB x{r['shards_per_move']:<2d} "
                      f"enc={str(r['encrypted']):5}  "
                      f"warm: hpccloud {r['hpccloud_bytes_per_s'] / 1e9:6.2f} GB/s  "
                      f"raw {r['raw_bytes_per_s'] / 1e9:6.2f} GB/s  ratio {r['ratio']:.2f} | "
                      f"fresh: hpccloud {r['hpccloud_fresh_bytes_per_s'] / 1e9:6.2f} GB/s  "
                      f"raw {r['raw_fresh_bytes_per_s'] / 1e9:6.2f} GB/s  "
                      f"ratio {r['ratio_fresh']:.2f} | xxh3 {r['checksum_bytes_per_s'] / 1e9:5.1f} GB/s"
                      f" | {r['protection']}; verify=all ratio {r['ratio_verify_all']:.2f}"
                      f" | per call {r['hpccloud_s_median'] * 1e3:.3f} ms",
                      flush=True)
            if args.breakdown:
                r = rows[-2]
                print(" " * 13 + "bare piece stream vs raw: " + "  ".join(
                    f"{name} {r[f'bare_{name}_ratio']:.2f}" for name in BARE_VARIANTS), flush=True)
                if "bare_header_ratio" in r:
                    print(" " * 13 + "bare header-only route vs raw: " + "  ".join(
                        f"{name} {r[f'bare_{name}_ratio']:.2f}" for name in ROUTE_VARIANTS),
                        flush=True)
    if args.json:
        agree(comm, lambda: write_json_atomic(args.json, rows) if rank == 0 else None)
    return 0
