"""Run by test_transport_netns.py on 2 ranks, each in its own network namespace.

Moves one shard back and forth with the default policy (the ranks share a node
but not a network stack: the bytes leave the "host"), sealed, and with one
byte damaged in flight on each route; prints one JSON line per rank.
"""

import json
import sys

import numpy as np
from mpi4py import MPI

from hpccloud.comm.topology import load_topology
from hpccloud.comm.transport import execute
from hpccloud.errors import ChecksumError
from hpccloud.policy import Policy
from hpccloud.shards import block_1d


def main() -> int:
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    policy = Policy.from_topology(load_topology(None, comm))
    n = (3 << 20) // 8 + 5  # several 1 MiB pieces, the last one short
    data = np.random.default_rng(1).standard_normal(n)
    m = block_1d(n, 1, "<f8", 2).with_owners(np.array([0]))
    local = {0: data.copy()} if rank == 0 else {}
    out = {"rank": rank, "protection": [], "caught": []}
    key = bytes(range(32))
    for kwargs in ({}, {"key": key}):
        after = np.array([1 - int(m.owners()[0])])
        try:
            execute(comm, m, local, after, policy, corrupt=[0], **kwargs)
            out["caught"].append(None)
        except ChecksumError as exc:
            out["caught"].append(str(exc))
        m, local, recs = execute(comm, m, local, after, policy, **kwargs)
        out["protection"].append(recs[0].protection)
        if rank == int(after[0]):
            out["intact"] = bool(np.array_equal(local[0], data))
    sys.stdout.write(json.dumps(out) + "\n")  # one write: a line of its own
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
