"""How long a migration lasts on a real shaped network, against the model's migration schedule.

Scenario: 2 regions × 2 ranks joined by a shaped link (:class:`hpccloud.testing.netns.RegionalNet`:
one network namespace per rank, ``--rate-mbit`` per sending rank to the other region,
``--delay-ms`` one way). Seven shards of ``--mb`` MB start on ranks 0 (3) and 1 (4) in
region ``a``; three crafted moves send them all to region ``b`` (ranks 2, 3):

* ``chain``: 0→2 ×3, 1→2 ×2, 1→3 ×2 — a greedy list schedule (longest job first, each job
  in one go) leaves rank 1 idle while 1→2 waits for rank 2: 7 shard-times, where the
  busiest rank (rank 2 receiving) needs 5;
* ``fanout``: 0→{2, 3}, 1→{2, 3} — list 7, busiest rank 4;
* ``pairs``: 0→2 ×3, 1→3 ×4 — disjoint pairs, both models 4.

Each move is timed through :func:`hpccloud.comm.transport.execute_aligned` (as a job's
migration runs it; the slowest rank's time), ``--reps`` times, and moved back untimed
in between. It prints per move the achieved median and what the busiest-rank model
(:func:`hpccloud.balance.model.migration_schedule`) and a list schedule predict on the
nominal shaped rate. Root only (namespaces); ~10-20 s::

    .venv/bin/python benchmarks/netns_migration_schedule.py --mb 1.25 --reps 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

START = np.array([0, 0, 0, 1, 1, 1, 1], np.int64)
MOVES = {
    "chain": np.array([2, 2, 2, 2, 2, 3, 3], np.int64),
    "fanout": np.array([2, 3, 2, 2, 3, 2, 3], np.int64),
    "pairs": np.array([2, 2, 2, 3, 3, 3, 3], np.int64),
}
TOPOLOGY = """name = "two-by-two"
[[regions]]
name = "a"
jurisdiction = "EU"
price_per_core_hour = 0.02
egress_per_gb = 0.05
ranks = [0, 1]
[[regions]]
name = "b"
jurisdiction = "EU"
price_per_core_hour = 0.02
egress_per_gb = 0.05
ranks = [2, 3]
"""


def predictions(unit_s: float) -> dict[str, tuple[float, float]]:
    """Per move: (busiest rank, greedy list schedule) in seconds, one shard taking ``unit_s``."""
    out = {}
    for name, after in MOVES.items():
        pairs: dict[tuple[int, int], int] = {}
        for a, b in zip(START.tolist(), after.tolist(), strict=True):
            pairs[(a, b)] = pairs.get((a, b), 0) + 1
        send = np.zeros(4)
        recv = np.zeros(4)
        for (a, b), k in pairs.items():
            send[a] += k * unit_s
            recv[b] += k * unit_s
        busiest = float(max(send.max(), recv.max()))
        free_s, free_r, end = np.zeros(4), np.zeros(4), 0.0
        for (a, b), k in sorted(pairs.items(), key=lambda kv: -kv[1]):  # longest first, stable
            fin = max(free_s[a], free_r[b]) + k * unit_s
            free_s[a] = free_r[b] = fin
            end = max(end, fin)
        out[name] = (busiest, end)
    return out


def rank_main(topology_path: str, elements: int, reps: int) -> None:
    """What every rank runs (inside its namespace)."""
    from mpi4py import MPI

    from hpccloud.comm.transport import execute_aligned
    from hpccloud.policy import Policy
    from hpccloud.shards import block_1d
    from hpccloud.topology import DataClass, topology_from_text

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    topo = topology_from_text(Path(topology_path).read_text(), topology_path, size)
    policy = Policy(dataclasses.replace(topo, data_classes={"x": DataClass("x", frozenset(topo.rank_region), False)}))
    n = START.size
    start_map = block_1d(n * elements, n, "<f8", size, data_class="x").with_owners(START, version=0)
    times: dict[str, list[float]] = {}
    for name, after in MOVES.items():
        for _ in range(reps):
            local = {s: np.full(elements, float(s)) for s in range(n) if START[s] == rank}
            moved_map, moved, _, _, t = execute_aligned(comm, start_map, local, after, policy)
            times.setdefault(name, []).append(comm.allreduce(t, op=MPI.MAX))
            execute_aligned(comm, moved_map, moved, START, policy)  # back, untimed
    if rank == 0:
        print(json.dumps(times))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=1.25, help="shard size in MB (default 1.25)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rate-mbit", type=float, default=100.0)
    ap.add_argument("--delay-ms", type=float, default=5.0)
    ap.add_argument("--rank-main", nargs=3, metavar=("TOPOLOGY", "ELEMENTS", "REPS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rank_main:
        rank_main(args.rank_main[0], int(args.rank_main[1]), int(args.rank_main[2]))
        return 0
    from hpccloud.testing.netns import RegionalNet

    elements = int(args.mb * 1e6 / 8)
    with tempfile.TemporaryDirectory() as tmp:
        topo = Path(tmp) / "two-by-two.toml"
        topo.write_text(TOPOLOGY)
        with RegionalNet((2, 2), delay_ms=args.delay_ms, rate_mbit=args.rate_mbit) as net:
            res = net.run_mpi([sys.executable, str(Path(__file__).resolve()), "--rank-main", str(topo),
                               str(elements), str(args.reps)], timeout_s=300)
    if res.returncode != 0:
        print(res.stdout[-2000:], res.stderr[-2000:], file=sys.stderr)
        return 1
    times = json.loads(res.stdout.strip().splitlines()[-1])
    unit = elements * 8 * 8 / (args.rate_mbit * 1e6)
    pred = predictions(unit)
    print(f"2+2 ranks, {args.rate_mbit:g} Mbit/s and {args.delay_ms:g} ms between regions, "
          f"{args.mb:g} MB shards ({unit:.3f} s each on the shaped rate), {args.reps} reps")
    print(f"{'move':8s} {'achieved_s':>11s} {'busiest_s':>10s} {'list_s':>8s}")
    for name in MOVES:
        print(f"{name:8s} {statistics.median(times[name]):11.3f} {pred[name][0]:10.3f} {pred[name][1]:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
