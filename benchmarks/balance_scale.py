"""Planner time and memory as ranks grow: the table of issue 16 (10^3 … 1.3·10^5 ranks, one process).

Run::

    python benchmarks/balance_scale.py                                   # the default table
    python benchmarks/balance_scale.py --sizes 16384x1000000 --planners topo,greedy,even --json out.json

For each ``RANKSxSHARDS`` it builds the ``hetero-speed`` scenario (``--regions``,
nodes of 32 ranks) and plans with each planner once as a warm-up, then
``--rounds`` more times. The warm-up plan pays the one-off costs — loading (or
compiling) the Numba kernels on the first size of the process, the problem's
cached arrays (lower bound, adjacency) on every size — so its wall and CPU time
are reported on their own (``cold_ms``, ``cold_cpu``) and the medians are those
of the steady-state rounds. It reports the median wall and CPU (process) time
of a plan — on a shared machine wall time mostly measures the wait for a core,
so CPU time is printed beside it — the link table's bytes, and the peak memory
of the whole ``hpccloud simulate`` command at that size, run as a child process
(``ru_maxrss`` of the child). A reference (``np.sort`` of 10^6 float64) is timed
in the same run.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import numpy as np

from hpccloud.balance import PlanOptions, plan_problem
from hpccloud.balance.scenarios import make_problem
from hpccloud.commands.common import write_json_atomic

DEFAULT_SIZES = "1000x100000,10000x1000000,100000x1000000,131072x1000000"


def _reference_ms(rounds: int = 7) -> float:
    a = np.random.default_rng(0).random(1_000_000)
    ts = []
    for _ in range(rounds):
        t = time.perf_counter()
        np.sort(a)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3


def _simulate_peak_gib(ranks: int, shards: int, regions: int) -> tuple[float, float]:
    """Peak RSS (GiB) and wall seconds of the whole `hpccloud simulate` command at this size."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hpccloud", "simulate", "--ranks", str(ranks), "--regions",
                    str(regions), "--shards", str(shards)], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest child so far: only meaningful if this one is the largest
    return max(peak, before) / 2**20, wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help=f"RANKSxSHARDS,... (default {DEFAULT_SIZES})")
    ap.add_argument("--regions", type=int, default=16)
    ap.add_argument("--planners", default="topo,greedy,even")
    ap.add_argument("--rounds", type=int, default=3,
                    help="timed plans per planner after the cold (first) one; the median is theirs")
    ap.add_argument("--no-simulate", action="store_true", help="skip the whole-command memory run")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    rows = []
    ref = _reference_ms()
    print(f"reference: np.sort of 1e6 float64, median {ref:.1f} ms")
    print(f"{'ranks':>8}{'shards':>9}{'planner':>8}{'wall_ms':>10}{'cpu_ms':>10}{'cold_ms':>10}"
          f"{'cold_cpu':>10}{'T/T*':>8}{'links_MB':>10}")
    for item in args.sizes.split(","):
        ranks, shards = (int(x) for x in item.lower().split("x"))
        regions = min(args.regions, ranks)
        p = make_problem("hetero-speed", ranks, regions, shards).warm()
        for name in args.planners.split(","):
            walls, cpus = [], []
            for _ in range(1 + args.rounds):  # the first (cold) plan is kept out of the median
                c = time.process_time()
                mp = plan_problem(p, name, PlanOptions(horizon_steps=20))
                cpus.append(time.process_time() - c)
                walls.append(mp.plan_seconds)
            row = {"ranks": ranks, "shards": shards, "regions": regions, "planner": name,
                   "wall_ms_median": float(np.median(walls[1:])) * 1e3,
                   "cpu_ms_median": float(np.median(cpus[1:])) * 1e3,
                   "rounds": args.rounds, "cold_wall_ms": walls[0] * 1e3, "cold_cpu_ms": cpus[0] * 1e3,
                   "ratio_to_bound": mp.ratio_to_bound, "link_table_bytes": p.links.nbytes,
                   "reference_sort_1e6_ms": ref}
            rows.append(row)
            print(f"{ranks:>8}{shards:>9}{name:>8}{row['wall_ms_median']:>10.0f}{row['cpu_ms_median']:>10.0f}"
                  f"{row['cold_wall_ms']:>10.0f}{row['cold_cpu_ms']:>10.0f}"
                  f"{mp.ratio_to_bound:>8.3f}{p.links.nbytes / 1e6:>10.2f}")
        if not args.no_simulate:
            gib, wall = _simulate_peak_gib(ranks, shards, regions)
            rows.append({"ranks": ranks, "shards": shards, "regions": regions, "simulate_peak_gib": gib,
                         "simulate_wall_s": wall})
            print(f"{ranks:>8}{shards:>9}  whole `hpccloud simulate` (every planner): peak {gib:.2f} GiB, {wall:.1f} s")
    if args.json:
        write_json_atomic(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
