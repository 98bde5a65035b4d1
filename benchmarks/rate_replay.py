"""How well the planner's rank speeds predict the next window's, from kept run reports.

Reads the reports ``balance_matrix.py --keep DIR`` keeps (``WORKLOAD-LAYOUT-BALANCER-K.json``;
any folders, searched recursively) of the balancers that ran the speed probe
(greedy, metis, topo: their ``initial_placement.speed``). For each run it feeds
every plan's measured planner rates (``rates_units_per_s.planner``) through
:class:`hpccloud.measure.speed.RateEstimate` with the probe's rates as its prior,
as the runner does, and compares two predictions of the next window's relative
rates (log rates less their mean over the ranks) with what that window measured:

* ``window``: the newest window's rates as measured (the runner before the estimate);
* ``estimate``: the estimate's.

Per workload × layout it prints the median over plans (after the first) of the
rms error of each, and the median shrink ``B``. No MPI, no timing: the figures
depend only on the kept reports.

    python benchmarks/rate_replay.py DIR [DIR ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hpccloud.measure.speed import RateEstimate  # noqa: E402


def _centred_log(x: np.ndarray) -> np.ndarray:
    lx = np.log(x)
    return lx - lx.mean()


def replay(report: dict) -> list[tuple[float, float, float]] | None:
    """``(window rms error, estimate rms error, shrink)`` per plan after the first (None:
    the run had no probe or a plan without a rate on every rank)."""
    probe = (report.get("initial_placement") or {}).get("speed", {}).get("units_per_s", {})
    kernel = (report.get("initial_placement") or {}).get("speed", {}).get("reference_kernel")
    prior = probe.get(kernel) if kernel in probe else next(iter(probe.values()), None)
    if prior is None:
        return None
    rates = [np.array([np.nan if x is None else x for x in p["rates_units_per_s"]["planner"]], np.float64)
             for p in report.get("plans", [])]
    if len(rates) < 3 or not all(np.all(np.isfinite(r) & (r > 0)) for r in rates):
        return None
    est = RateEstimate(np.array([np.nan if x is None else x for x in prior], np.float64))
    out = []
    for t in range(len(rates) - 1):
        guess = est.add(rates[t])
        if t == 0:
            continue
        truth = _centred_log(rates[t + 1])
        out.append((float(np.sqrt(np.mean((_centred_log(rates[t]) - truth) ** 2))),
                    float(np.sqrt(np.mean((_centred_log(guess) - truth) ** 2))), est.shrink))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", help="folders of kept reports (searched recursively)")
    ap.add_argument("--json", default=None, metavar="OUT", help="write one row per cell here")
    args = ap.parse_args(argv)
    cells: dict[tuple[str, str], list[tuple[float, float, float]]] = defaultdict(list)
    runs = 0
    for d in args.dirs:
        for path in sorted(glob.glob(os.path.join(d, "**", "*-*-*-*.json"), recursive=True)):
            try:
                with open(path) as fh:
                    rep = json.load(fh)
            except (OSError, ValueError):
                continue
            rows = replay(rep) if isinstance(rep, dict) else None
            if rows:
                workload, layout = os.path.basename(path).split("-")[:2]
                cells[(workload, layout)] += rows
                runs += 1
    out = []
    print(f"{'workload':<11}{'layout':<7}{'plans':>6}{'window':>8}{'estimate':>9}{'shrink':>7}")
    for (w, lay), rows in sorted(cells.items()):
        a = np.array(rows)
        row = {"workload": w, "layout": lay, "plans": len(rows), "window_rms": float(np.median(a[:, 0])),
               "estimate_rms": float(np.median(a[:, 1])), "shrink": float(np.median(a[:, 2]))}
        out.append(row)
        print(f"{w:<11}{lay:<7}{len(rows):>6}{row['window_rms']:>8.3f}{row['estimate_rms']:>9.3f}"
              f"{row['shrink']:>7.2f}")
    better = sum(r["estimate_rms"] <= r["window_rms"] for r in out)
    print(f"{runs} runs; the estimate at least as near as the window in {better} of {len(out)} cells "
          "(medians over plans of the rms error of the next window's log rates less their mean)")
    if args.json:
        from hpccloud.commands.common import write_json_atomic

        write_json_atomic(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
