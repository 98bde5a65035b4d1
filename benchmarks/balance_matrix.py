"""Every balancer × every workload × several unequal rank layouts, side by side (real runs).

Each cell is ``hpccloud run`` under ``mpiexec``, one rank per ``taskset``-pinned
process, so ranks that share a core are slower for real (nothing is simulated).
Layouts (``--layouts``; or ``NAME=core:core:...``, one core per rank):

* ``3+1``: rank 0 alone on core 1, ranks 1-3 share core 0 (``hetero_ranks.py``'s);
* ``1+3``: ranks 0-2 share core 0, rank 3 alone on core 1 (the fast rank in the
  other region of the default topology);
* ``2+1``: three ranks, ranks 0 and 1 share core 0, rank 2 alone;
* ``netns``: when run as root with the prerequisites, 2 + 2 ranks in network
  namespaces joined by a shaped link (5 ms, 100 Mbit/s; ``hpccloud.testing.netns``),
  unpinned.

Balancers run interleaved within a round (static, even, greedy, metis, topo,
static, ...) so machine drift hits all alike; ``--runs`` rounds (default 3). Per
cell it prints the medians of: total time, its spread over the runs ((slowest −
fastest) / median: the noise a ratio between balancers must clear), its ratio to
static's and to the best other balancer's in the layout (``total_vs_best_other``), busy
max/mean (per-rank busy time over the run; ``core_busy_max_over_mean``: the same
on each rank's share of the cores, see :func:`hpccloud.report.core_busy`;
``busy_per_core_max_over_mean``: each core's busy time, the CPU time of ranks that
share cores pooled on them, :func:`hpccloud.report.busy_per_core`), and
the model's error —
``step_pred_err``: median over plans after the first of
``|makespan_after_s − achieved_step_s_after| / achieved``; ``migration_pred_err``:
the same for ``migration_s`` against ``achieved_migration_s`` over the plans after
the first that moved (the plans the run summary's ``model_error`` counts; it used to
count the first plan's move too).
``--json OUT`` writes one row per cell (medians) with those keys and ``runs``.

A balancer the run command does not accept yet (e.g. ``metis`` before the runner
lists it) is reported as skipped, not failed.

    python benchmarks/balance_matrix.py [--runs 3] [--workloads stencil2d,kmeans]
        [--layouts 3+1,1+3] [--balancers static,topo] [--param n=4096] [--json OUT]
    python benchmarks/balance_matrix.py --quick     # small sizes, 1 run: checks the pipeline
    python benchmarks/balance_matrix.py --keep DIR  # keep each run's report (hpccloud report DIR/x.json)

This machine has 2 cores shared by many users: one full matrix is long (5
workloads × 4 layouts × 5 balancers × 3 runs); run a few cells at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hpccloud.commands.common import write_json_atomic  # noqa: E402
from hpccloud.testing.mpi_pytest import child_env, mpiexec_path, run_group  # noqa: E402

WORKLOADS = ("stencil2d", "kmeans", "particles", "mandelbrot", "spmv")
BALANCERS = ("static", "even", "greedy", "metis", "topo")
LAYOUTS = {"3+1": (1, 0, 0, 0), "1+3": (0, 0, 0, 1), "2+1": (0, 0, 1)}
#: --quick: sizes that run in seconds (the multi-rank tests' sizes)
QUICK_PARAMS = {
    "stencil2d": ("n=256", "grid=4"),
    "particles": ("n=3000", "grid=4"),
    "kmeans": ("n=6000", "shards=12"),
    "mandelbrot": ("n=96", "grid=4", "max_iter=80"),
    "spmv": ("n=3000", "shards=12"),
}
KEYS = ("workload", "layout", "balancer", "total_s", "busy_max_over_mean", "step_pred_err",
        "migration_pred_err")


def runnable_balancers(wanted: list[str]) -> tuple[list[str], list[str]]:
    """``(accepted, skipped)``: the balancers ``hpccloud run`` accepts on this branch."""
    from hpccloud.runner.options import balancer_names

    known = balancer_names()

    return [b for b in wanted if b in known], [b for b in wanted if b not in known]


def _median(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and x == x]
    return float(statistics.median(xs)) if xs else float("nan")


def model_errors(report: dict) -> tuple[float, float]:
    """``(step_pred_err, migration_pred_err)`` of one run report (see the module notes)."""
    step, mig = [], []
    for plan in report.get("plans", [])[1:]:  # after the first window: the models are the run's own
        a = plan.get("achieved_step_s_after")
        if a and plan.get("makespan_after_s") is not None:
            step.append(abs(plan["makespan_after_s"] - a) / a)
    for plan in report.get("plans", [])[1:]:  # as the step's, and as the run's summary counts it
        a = plan.get("achieved_migration_s")
        if a and plan.get("n_moves"):
            mig.append(abs(plan["migration_s"] - a) / a)
    return _median(step), _median(mig)


def command(balancer: str, workload: str, args, out: str) -> list[str]:
    params = QUICK_PARAMS[workload] if args.quick else ()
    params = (*params, *args.param)
    return [sys.executable, "-m", "hpccloud", "run", "--workload", workload, "--balancer", balancer,
            "--steps", str(args.steps), "--rebalance-every", str(args.rebalance_every), "--quiet",
            "--json", out, *(f"--param={p}" for p in params)]


def launch_pinned(cores: tuple[int, ...], cmd: list[str], timeout_s: float):
    argv = [mpiexec_path()]
    for i, core in enumerate(cores):
        if i:
            argv.append(":")
        argv += ["-n", "1", shutil.which("taskset") or "taskset", "-c", str(core), *cmd, "--threads", "1"]
    return run_group(argv, timeout_s, env=child_env(len(cores), {"NUMBA_NUM_THREADS": "1"}))


def one_run(layout: str, balancer: str, workload: str, args, folder: str, k: int, net=None) -> dict:
    out = os.path.join(folder, f"{workload}-{layout}-{balancer}-{k}.json")
    cmd = command(balancer, workload, args, out)
    t0 = time.perf_counter()
    if net is not None:
        res = net.run_mpi(cmd, timeout_s=args.timeout, env=child_env(net.nranks))
    else:
        res = launch_pinned(LAYOUTS[layout], cmd, args.timeout)
    if res.returncode != 0:
        raise SystemExit(f"{workload}/{layout}/{balancer} failed ({res.returncode}):\n"
                         f"{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    with open(out) as fh:
        rep = json.load(fh)
    step_err, mig_err = model_errors(rep)
    return {"workload": workload, "layout": layout, "balancer": balancer, "total_s": float(rep["total_s"]),
            "busy_max_over_mean": rep.get("busy_max_over_mean"),
            "core_busy_max_over_mean": rep.get("core_busy_max_over_mean"),
            "busy_per_core_max_over_mean": rep.get("busy_per_core_max_over_mean"), "step_pred_err": step_err,
            "migration_pred_err": mig_err, "bytes_moved": int(rep.get("bytes_moved", 0)),
            "job_wall_s": time.perf_counter() - t0}


def cells(runs: list[dict]) -> list[dict]:
    """Median per (workload, layout, balancer), with the total's ratio to static's."""
    out = []
    for key in dict.fromkeys((r["workload"], r["layout"], r["balancer"]) for r in runs):
        mine = [r for r in runs if (r["workload"], r["layout"], r["balancer"]) == key]
        row = dict(zip(("workload", "layout", "balancer"), key, strict=True))
        for f in ("total_s", "busy_max_over_mean", "core_busy_max_over_mean", "busy_per_core_max_over_mean",
                  "step_pred_err",
                  "migration_pred_err", "bytes_moved"):
            row[f] = _median([r.get(f) for r in mine])
        row["runs"] = len(mine)
        totals = [float(r["total_s"]) for r in mine]
        row["total_s_runs"] = totals
        # how far the runs of one cell lie apart: a ratio between balancers within it is noise
        row["total_spread"] = (max(totals) - min(totals)) / row["total_s"] if row["total_s"] else float("nan")
        out.append(row)
    for row in out:
        same = [r for r in out if (r["workload"], r["layout"]) == (row["workload"], row["layout"])]
        static = next((r["total_s"] for r in same if r["balancer"] == "static"), None)
        row["total_vs_static"] = row["total_s"] / static if static else float("nan")
        others = [r["total_s"] for r in same if r["balancer"] != row["balancer"]]
        row["total_vs_best_other"] = row["total_s"] / min(others) if others and min(others) > 0 else float("nan")
    return out


def print_cells(rows: list[dict]) -> None:
    print(f"{'workload':<11}{'layout':<7}{'balancer':<9}{'runs':>5}{'total s':>9}{'spread':>7}{'/static':>8}"
          f"{'/best':>6}{'busy max/mean':>14}{'core busy':>10}{'per core':>9}{'step err':>9}{'migr err':>9}{'moved MB':>9}")
    for r in rows:
        print(f"{r['workload']:<11}{r['layout']:<7}{r['balancer']:<9}{r['runs']:>5}{r['total_s']:>9.2f}"
              f"{r.get('total_spread', float('nan')):>7.2f}{r['total_vs_static']:>8.2f}"
              f"{r.get('total_vs_best_other', float('nan')):>6.2f}{r['busy_max_over_mean']:>14.3f}"
              f"{r.get('core_busy_max_over_mean', float('nan')):>10.3f}"
              f"{r.get('busy_per_core_max_over_mean', float('nan')):>9.3f}{r['step_pred_err']:>9.2f}"
              f"{r['migration_pred_err']:>9.2f}{r['bytes_moved'] / 1e6:>9.1f}")
    print("medians over runs; spread: (slowest - fastest run) / median, the cell's own noise; "
          "/best: total time over the best other balancer's in the same layout")
    print("/static: total time over static's in the same layout; busy: per-rank "
          "kernel wall time; core busy: the same on each rank's share of the cores (CPU time / "
          "cores where ranks share them); per core: each core's busy time (core-mates' CPU time "
          "pooled); errors: |predicted - achieved| / achieved over the plans after the first "
          "(migration: those that moved)")


def netns_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    from hpccloud.testing import netns

    missing = netns.missing_prerequisites(need_nfqueue=not netns.kernel_has_netem())
    return ("missing " + "; ".join(missing)) if missing else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--layouts", default=",".join([*LAYOUTS, "netns"]),
                    help="names from the module notes, or NAME=core:core:... (one core per rank)")
    ap.add_argument("--balancers", default=",".join(BALANCERS))
    ap.add_argument("--runs", type=int, default=3, help="rounds (balancers interleaved in each)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rebalance-every", type=int, default=10)
    ap.add_argument("--param", action="append", default=[], metavar="K=V",
                    help="workload parameter for every run (repeatable)")
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 run, 6 steps: a pipeline check")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per mpiexec")
    ap.add_argument("--json", default=None, metavar="OUT", help="write one row per cell here")
    ap.add_argument("--keep", default=None, metavar="DIR",
                    help="keep every run's report JSON in DIR (default: a temp folder, removed)")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.steps, args.rebalance_every = 1, 6, 2
    layouts = []
    for spec in args.layouts.split(","):
        name, _, cores = spec.partition("=")
        if cores:
            LAYOUTS[name] = tuple(int(c) for c in cores.split(":"))
        layouts.append(name)
    balancers, skipped = runnable_balancers(args.balancers.split(","))
    if skipped:
        print(f"skipped (hpccloud run does not accept them on this branch): {', '.join(skipped)}")
    runs = []
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hpcc-matrix-") as scratch:
        folder = args.keep or scratch
        for layout in layouts:
            net = None
            if layout == "netns":
                reason = netns_reason()
                if reason:
                    print(f"layout netns skipped: {reason}")
                    continue
                from hpccloud.testing import netns

                net = netns.RegionalNet((2, 2), delay_ms=5.0, rate_mbit=100.0).__enter__()
            elif layout not in LAYOUTS:
                raise SystemExit(f"--layouts: unknown layout {layout!r}; use one of {sorted(LAYOUTS)} "
                                 "or NAME=core:core:...")
            try:
                for workload in args.workloads.split(","):
                    for k in range(args.runs):
                        for b in balancers:
                            runs.append(one_run(layout, b, workload, args, folder, k, net))
            finally:
                if net is not None:
                    net.__exit__(None, None, None)
    rows = cells(runs)
    print_cells(rows)
    if args.json:  # NaN (no plan moved, no plan after the first) as null: strict JSON
        write_json_atomic(args.json, [{k: (None if isinstance(v, float) and v != v else v)
                                       for k, v in r.items()} for r in rows])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
