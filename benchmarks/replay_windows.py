"""Replay a drifting workload's real per-step work through the planners, offline.

A real run on this 2-core machine swings 10-35 % between sessions; this replay
does not. It computes every shard's work units at every step with the
workload's own kernels (``mandelbrot``: the iterations its tiles really take as
the view zooms; ``stencil2d``: cells × sweeps as the hot spot circles), then
runs the balancers as the runner does: every ``--window`` steps a planner sees
the window's mean work per shard (and, for topo, the window before and the
window's last third as a scenario, as the runner passes them), and the next
window is charged what its steps really cost on the planned map — the mean of
the per-step makespans, each rank's exact work over its speed plus the model's
halo time on the synthetic links — plus the planned migration. Per-step
framework costs (dispatch per shard, synchronisation, the transport's per-call
cost) are not charged: a scattered map that cuts many halo edges looks better
here than it runs (compare ``balance_matrix.py``'s real runs).

Speeds follow a ``--layout`` of ranks on cores (``3+1``: rank 0 alone, ranks
1-3 sharing one core, each at a third of its speed); ranks fall into
``--regions`` contiguous even blocks, as in the default topology (shards of a
class other than ``public`` may live in the first region only); links are
synthetic (one host, 2 µs, 5 GB/s). ``--noise`` multiplies each shard's per-step work by
``1 + noise · N(0, 1)`` before the planners see it (timing noise; the charged
work stays exact). Rows: total seconds per planner, its ratio to the best,
and per-window step times. ``topo-mean`` is topo planning on the window's mean
alone (no scenarios), to show what the scenario pricing changes.

    python benchmarks/replay_windows.py --workload mandelbrot --layout 3+1
    python benchmarks/replay_windows.py --workload stencil2d --layout 1+3 --noise 0.05 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hpccloud.balance import PlanOptions, Problem, plan_problem  # noqa: E402
from hpccloud.balance.model import halo_s  # noqa: E402
from hpccloud.measure.levels import LinkTable  # noqa: E402
from hpccloud.runner.window import recent_steps  # noqa: E402
from hpccloud.workloads import make_workload  # noqa: E402

WORKLOADS = ("mandelbrot", "stencil2d")
LAYOUTS = {"3+1": (1, 0, 0, 0), "1+3": (0, 0, 0, 1), "2+1": (0, 0, 1), "1+1": (0, 1)}
PLANNERS = ("static", "greedy", "metis", "topo", "topo-mean")


def work_per_step(name: str, ranks: int, steps: int, params: dict) -> tuple[np.ndarray, object]:
    """``(W, shard_map)``: ``W[t, s]`` the work units of shard ``s`` at step ``t``."""
    wl = make_workload(name, params)
    sm = wl.shard_map(ranks)
    W = np.zeros((steps, len(sm)))
    for t in range(steps):
        for sh in sm.shards:
            if name == "stencil2d":  # cells × sweeps: what its compute reports, without the halo
                W[t, sh.id] = wl.work_estimate(sh, t)
            else:
                _, W[t, sh.id] = wl.compute(sh, wl.initial(sh), t)
    return W, sm


def replay(W: np.ndarray, sm, cores: tuple[int, ...], window: int, noise: float, seed: int,
           regions: int = 2, planners=PLANNERS) -> list[dict]:
    P = len(cores)
    S = W.shape[1]
    G = max(1, min(regions, P))
    share = np.array([cores.count(c) for c in cores], float)
    rate = (1.0 / share) * W[0].sum() / 0.05  # a first step of ~50 ms on one core
    region = (np.arange(P) * G) // P
    names = tuple(dict.fromkeys(sm.data_classes())) or ("public",)
    class_id = np.array([names.index(c) for c in sm.data_classes()], np.int64)
    allowed = np.array([np.ones(P, bool) if c == "public" else region == 0 for c in names])
    u, v, hb = sm.halo_edges()
    links = LinkTable.levels(rank_region=region, rank_node=region, region_alpha_s=np.full((G, G), 2e-6),
                             region_beta_bytes_per_s=np.full((G, G), 5e9), node_alpha_s=np.full(G, 2e-6),
                             node_beta_bytes_per_s=np.full(G, 5e9), provenance="synthetic")

    def problem(work, owners):
        return Problem(work_units=work, nbytes=np.asarray(sm.nbytes(), np.int64), owners=owners,
                       class_id=class_id, allowed=allowed,
                       edge_u=np.asarray(u, np.int64), edge_v=np.asarray(v, np.int64),
                       edge_bytes=np.asarray(hb, float), speed_units_per_s=rate, links=links,
                       rank_region=region, region_names=tuple(f"region-{g}" for g in range(G)),
                       price_per_core_hour=np.full(P, 0.03), egress_per_gb=np.zeros((G, G)),
                       class_names=names, provenance="synthetic")

    rows = []
    for name in planners:
        rng = np.random.default_rng(seed)  # every planner sees the same noise
        planner = "topo" if name.startswith("topo") else name
        owners = np.asarray(sm.owners(), np.int64)
        for c in range(len(names)):  # start where each class may live (as the runner's placement)
            bad = (class_id == c) & ~allowed[c, owners]
            owners[bad] = np.flatnonzero(allowed[c])[np.arange(bad.sum()) % allowed[c].sum()]
        total = 0.0
        per_window, moves = [], []
        before = None
        for e in range(W.shape[0] // window):
            if e > 0:
                seen = W[(e - 1) * window:e * window] * (1 + noise * rng.standard_normal((window, S)))
                seen = np.maximum(seen, 0.0)
                mean = seen.mean(0)
                scen = () if name == "topo-mean" else (seen[-recent_steps(window):].mean(0),)
                mp = plan_problem(problem(mean, owners), planner,
                                  PlanOptions(horizon_steps=window, scenarios=scen,
                                              recent_work=() if before is None else (before,)))
                before = mean
                owners = mp.owners_after
                total += mp.migration_s
                moves.append(len(mp.moves))
            steps = W[e * window:(e + 1) * window]
            halo = halo_s(problem(steps[0], owners), owners)  # the model's: synthetic links
            makespans = np.stack([np.bincount(owners, weights=w, minlength=P) / rate + halo
                                  for w in steps]).max(1)
            per_window.append(float(makespans.mean()))
            total += float(makespans.sum())
        rows.append({"planner": name, "total_s": total, "window_step_s": per_window, "moves": moves})
    best = min(r["total_s"] for r in rows)
    for r in rows:
        r["ratio_to_best"] = r["total_s"] / best
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", choices=WORKLOADS, default="mandelbrot")
    ap.add_argument("--layout", choices=sorted(LAYOUTS), default="3+1")
    ap.add_argument("--regions", type=int, default=2, help="contiguous even blocks of ranks")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--window", type=int, default=10, help="steps between rebalances")
    ap.add_argument("--noise", type=float, default=0.0, help="relative noise on the work the planners see")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--param", action="append", default=[], help="workload parameter KEY=VALUE")
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args(argv)
    if a.steps < 2 * a.window or a.window < 1:
        ap.error("--steps must cover at least two windows of --window >= 1 steps")
    params = dict(kv.split("=", 1) for kv in a.param)
    W, sm = work_per_step(a.workload, len(LAYOUTS[a.layout]), a.steps, params)
    rows = replay(W, sm, LAYOUTS[a.layout], a.window, a.noise, a.seed, a.regions)
    print(f"{a.workload} layout {a.layout}, {a.regions} regions, {a.steps} steps, window {a.window}, "
          f"noise {a.noise}")
    for r in rows:
        print(f"{r['planner']:<10} total {r['total_s']:8.3f} s  x best {r['ratio_to_best']:.3f}  "
              f"window steps {' '.join(f'{x:.3f}' for x in r['window_step_s'])}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "provenance": "synthetic speeds and links; exact work", "rows": rows},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
