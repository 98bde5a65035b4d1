"""A plain mpi4py ping-pong over every pair of ranks: the check that links are what we shaped.

Run under ``mpiexec`` (every rank). Pairs take turns, one pair at a time, so no
two measurements share a link. For each pair ``i < j`` it times buffer
``Send``/``Recv`` round trips at a small and a large size and reports the
median one-way time; latency is the small-message time, bandwidth the Hockney
slope between the two sizes, ``(n_large - n_small) / (t_large - t_small)``.
Ranks not in the pair wait in a sleeping barrier, so on an oversubscribed node
they leave the cores to the pair. Rank 0 prints one JSON object::

    {"ranks": P, "small_bytes": 8, "large_bytes": 1048576,
     "latency_s": [[null, ...], ...], "bandwidth_bytes_per_s": [[null, ...], ...]}

Both matrices are symmetric with a null diagonal. Used by
:mod:`hpccloud.testing.netns` (by hand and in the tests) while ``hpccloud probe``
is not there; it is deliberately independent of hpccloud's own probe.

By hand::

    mpiexec -n 2 python -m hpccloud.testing.pingpong --large-bytes 65536
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys


def _one_way_s(comm, peer: int, buf, reps: int, leader: bool) -> float:
    """Median one-way time of ``reps`` round trips of ``buf`` with ``peer`` (after one warm-up)."""
    from mpi4py import MPI

    times = []
    for rep in range(reps + 1):
        t0 = MPI.Wtime()
        if leader:
            comm.Send(buf, dest=peer, tag=7)
            comm.Recv(buf, source=peer, tag=7)
        else:
            comm.Recv(buf, source=peer, tag=7)
            comm.Send(buf, dest=peer, tag=7)
        if rep:  # the first round trip sets up the connection
            times.append((MPI.Wtime() - t0) / 2)
    return statistics.median(times)


def _sleeping_barrier(comm, poll_s: float = 50e-6) -> None:
    """A barrier that sleeps instead of spinning: waiting ranks leave the cores to the pair."""
    import time

    req = comm.Ibarrier()
    while not req.Test():
        time.sleep(poll_s)


def measure(comm, small_bytes: int = 8, large_bytes: int = 1 << 20, small_reps: int = 20,
            large_reps: int = 3) -> dict | None:
    """Measure every pair; returns the result dict on rank 0, None elsewhere."""
    import numpy as np

    rank, size = comm.Get_rank(), comm.Get_size()
    small = np.zeros(small_bytes, dtype=np.uint8)
    large = np.zeros(large_bytes, dtype=np.uint8)
    lat: list[list[float | None]] = [[None] * size for _ in range(size)]
    bw: list[list[float | None]] = [[None] * size for _ in range(size)]
    for i in range(size):
        for j in range(i + 1, size):
            _sleeping_barrier(comm)
            result: tuple[float, float] | None = None
            if rank in (i, j):
                peer = j if rank == i else i
                t_small = _one_way_s(comm, peer, small, small_reps, rank == i)
                t_large = _one_way_s(comm, peer, large, large_reps, rank == i)
                slope_s = max(t_large - t_small, 1e-12)
                result = (t_small, (large_bytes - small_bytes) / slope_s)
            if i != 0:  # the pair's leader reports to rank 0
                if rank == i:
                    comm.send(result, dest=0, tag=8)
                elif rank == 0:
                    result = comm.recv(source=i, tag=8)
            if rank == 0:
                assert result is not None  # rank 0 measured the pair (i == 0) or received it
                lat[i][j] = lat[j][i] = result[0]
                bw[i][j] = bw[j][i] = result[1]
    _sleeping_barrier(comm)
    if rank != 0:
        return None
    return {"ranks": size, "small_bytes": small_bytes, "large_bytes": large_bytes,
            "latency_s": lat, "bandwidth_bytes_per_s": bw}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpccloud.testing.pingpong")
    parser.add_argument("--small-bytes", type=int, default=8)
    parser.add_argument("--large-bytes", type=int, default=1 << 20)
    parser.add_argument("--small-reps", type=int, default=20)
    parser.add_argument("--large-reps", type=int, default=3)
    args = parser.parse_args(argv)
    from mpi4py import MPI

    res = measure(MPI.COMM_WORLD, args.small_bytes, args.large_bytes, args.small_reps,
                  args.large_reps)
    if res is not None:
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
