"""Shard transport vs raw mpi4py Send/Recv of the same buffers, 2 ranks.

For each size (default 1, 4, 16, 64, 256 MiB) one float64 shard moves rank 0
-> rank 1 and back with :func:`hpccloud.comm.transport.execute` (checksums
on; once in the clear and once AES-GCM encrypted, since the two ranks sit in
different regions of the default topology), interleaved in the same run with
raw ``Send``/``Recv`` of the same source buffer into a pre-allocated one. Every
move is timed barrier to barrier; the first ``--warmup`` rounds are dropped and
medians of the rest are reported. ``ratio = raw_s / hpccloud_s`` (1.0 = as fast
as raw). ``checksum_bytes_per_s`` is xxh3-64 over the same buffer, same run.

    mpiexec -n 2 hpccloud bench transport --json transport.json
"""

from __future__ import annotations

import os
import tempfile
import time

DEFAULT_SIZES_MIB = (1, 4, 16, 64, 256)


def add_arguments(parser) -> None:
    from hpccloud.commands.common import add_topology_arg

    parser.add_argument("--json", metavar="OUT", default=None, help="write the results as a JSON list")
    parser.add_argument("--sizes-mib", default=",".join(map(str, DEFAULT_SIZES_MIB)), metavar="LIST",
                        help="shard sizes in MiB, comma-separated (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds per size (default: 9)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default: 2)")
    add_topology_arg(parser)


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

    from hpccloud.comm.agree import agree
    from hpccloud.comm.transport import execute, load_key
    from hpccloud.commands.common import world, write_json_atomic
    from hpccloud.errors import InvalidArgument
    from hpccloud.policy import Policy
    from hpccloud.shards import block_1d
    from hpccloud.topology import load_topology

    comm = world()
    rank = comm.Get_rank()

    def check():
        if comm.Get_size() != 2:
            raise InvalidArgument(f"bench transport needs exactly 2 ranks, got {comm.Get_size()}. "
                                  "Fix: mpiexec -n 2 hpccloud bench transport")
        if args.repeats < 1 or args.warmup < 0:
            raise InvalidArgument("--repeats must be >= 1 and --warmup >= 0")
        return _sizes(args.sizes_mib)

    sizes = agree(comm, check)
    policy = Policy.from_topology(load_topology(args.topology, comm))
    # the key goes through a key file, as a user would configure it
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "key.hex")
        with open(path, "w") as fh:
            fh.write(comm.bcast(os.urandom(32).hex() if rank == 0 else None))
        key = load_key(path)
    regions = (policy.topology.region_of(0), policy.topology.region_of(1))

    def timed(fn) -> float:
        comm.Barrier()
        t0 = time.perf_counter()
        fn()
        comm.Barrier()
        return time.perf_counter() - t0

    rows = []
    for nbytes in sizes:
        n = nbytes // 8
        m0 = block_1d(n, 1, "<f8", 2)  # on rank 0
        src = np.random.default_rng(5).standard_normal(n)
        dst = np.empty_like(src)
        state = {"map": m0, "local": {0: src.copy()} if rank == 0 else {}}

        def move(enc: bool, state=state):
            m = state["map"]
            after = np.array([1 - m.owners()[0]])
            state["map"], state["local"], _ = execute(comm, m, state["local"], after, policy,
                                                      key=key if enc else None)

        def raw(a: int, src=src, dst=dst):
            if rank == a:
                comm.Send(src, 1 - a, 7)
            else:
                comm.Recv(dst, a, 7)

        times: dict[str, list[float]] = {"raw": [], "plain": [], "enc": []}
        for i in range(args.warmup + args.repeats):
            sample = {"raw": timed(lambda: raw(0)) + timed(lambda: raw(1)),
                      "plain": timed(lambda: move(False)) + timed(lambda: move(False)),
                      "enc": timed(lambda: move(True)) + timed(lambda: move(True))}
            if i >= args.warmup:
                for k, v in sample.items():
                    times[k].append(v / 2)
        hs = []
        for _ in range(5):
            t0 = time.perf_counter()
            xxhash.xxh3_64_intdigest(src)
            hs.append(time.perf_counter() - t0)
        # rank 0's timings (barrier to barrier, so both ranks agree up to noise)
        raw_s = float(np.median(times["raw"]))
        checksum_bps = nbytes / float(np.median(hs))
        for enc in (False, True):
            t = float(np.median(times["enc" if enc else "plain"]))
            rows.append({
                "bytes": nbytes, "encrypted": enc, "checksum": "xxh3_64",
                "src_region": regions[0], "dst_region": regions[1],
                "hpccloud_s_median": t, "raw_s_median": raw_s,
                "hpccloud_bytes_per_s": nbytes / t, "raw_bytes_per_s": nbytes / raw_s,
                "ratio": raw_s / t, "repeats": args.repeats, "warmup": args.warmup,
                "checksum_bytes_per_s": checksum_bps,
                "checksum_fraction_of_raw": (nbytes / checksum_bps) / raw_s,
            })
        if rank == 0:
            for r in rows[-2:]:
                print(f"{r['bytes'] / 2**20:8.0f} MiB  enc={str(r['encrypted']):5}  "
                      f"hpccloud {r['hpccloud_bytes_per_s'] / 1e9:6.2f} GB/s  "
                      f"raw {r['raw_bytes_per_s'] / 1e9:6.2f} GB/s  ratio {r['ratio']:.2f}  "
                      f"xxh3 {r['checksum_bytes_per_s'] / 1e9:5.1f} GB/s", flush=True)
    if args.json:
        agree(comm, lambda: write_json_atomic(args.json, rows) if rank == 0 else None)
    return 0
