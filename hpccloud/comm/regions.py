"""Collect a region's shards on the region's lowest rank, as MPI buffers.

Used for per-region output files: the data moves only between ranks of the
same region, so it never leaves its region on the way to storage.
"""

from __future__ import annotations

import numpy as np

_TAG = 7411


def gather_to_region_leader(comm, topology, shard_map, local: dict[int, np.ndarray]):
    """Collective. Return ``(is_leader, shards)``: the leader gets all of its region's shards.

    Shapes and dtypes come from ``shard_map`` (identical on every rank), so the
    leader receives straight into pre-allocated arrays; senders keep their
    buffers alive until ``Waitall``.
    """
    from mpi4py import MPI

    rank = comm.Get_rank()
    region = topology.region_of(rank)
    members = [r for r in range(comm.Get_size()) if topology.region_of(r) == region]
    leader = members[0]
    owners = shard_map.owners()
    if rank != leader:
        reqs = [comm.Isend(np.ascontiguousarray(local[sid]), dest=leader, tag=_TAG + sid)
                for sid in sorted(local)]
        MPI.Request.Waitall(reqs)
        return False, {}
    out = dict(local)
    reqs = []
    for r in members[1:]:
        for sid in np.flatnonzero(owners == r):
            sh = shard_map.shards[sid]
            buf = np.empty(sh.shape, dtype=np.dtype(shard_map.dtype))
            out[int(sid)] = buf
            reqs.append(comm.Irecv(buf, source=r, tag=_TAG + int(sid)))
    MPI.Request.Waitall(reqs)
    return True, out
