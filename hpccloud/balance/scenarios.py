"""Synthetic scenarios for ``hpccloud simulate``: every planner side by side, one process.

All numbers here are **synthetic** (provenance ``"synthetic"``), shaped like
measurements on real machines, never reported as measured:

* a field of ``S`` strips (1-D blocks) of 1024 × 1024 float64 cells: a shard
  is 8 MiB, its work is its cell count (1 048 576 units), a halo is one row
  (8 KiB) to each neighbouring strip;
* ranks split over ``G`` regions in contiguous blocks, and inside a region
  into nodes of 32 ranks; compute speed about 2·10^8 cells/s per rank (one
  core running a stencil);
* links per level (a :class:`~hpccloud.measure.levels.LinkTable`, O(P + G²)
  memory, so 131 072 ranks fit): on one node α ≈ 1 µs, β ≈ 10 GB/s; between
  nodes of a region α ≈ 3 µs, β ≈ 5 GB/s; between regions α ≈ 1 ms,
  β ≈ 1.25 GB/s, or in ``two-region-slow-link`` α ≈ 10 ms, β ≈ 125 MB/s
  (1 Gbit/s); every node and every ordered region pair gets ±20 % log-normal
  noise, not symmetric (probes measure each direction);
* the starting map gives every rank an equal contiguous block, blind to speed
  (what a speed-blind partitioner does).

Scenarios: ``hetero-speed`` (speeds spread ~×3), ``two-region-slow-link``
(region 0 twice as fast as region 1, slow WAN link), ``residency-mix`` (three
data classes with different allowed regions), ``drift`` (a hot spot moving
along the field; rebalance every ``horizon`` steps, the planner seeing the
previous epoch's work, as a real step loop does).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from hpccloud.balance.bound import lower_bound_s
from hpccloud.balance.model import loads_s
from hpccloud.balance.planners import PLANNERS, PlanOptions, plan_problem
from hpccloud.balance.problem import Problem
from hpccloud.errors import InvalidArgument
from hpccloud.measure.levels import LinkTable

SCENARIOS = ("hetero-speed", "two-region-slow-link", "residency-mix", "drift")
CELLS_PER_SHARD = 1024 * 1024
SHARD_BYTES = CELLS_PER_SHARD * 8
HALO_BYTES = 1024 * 8
RANK_SPEED = 2e8
#: ranks per node of the synthetic machines (one core each)
RANKS_PER_NODE = 32


def synthetic_speeds(units_per_s: np.ndarray) -> np.ndarray:
    """Rates through the runtime's ``SpeedModel`` (provenance ``"synthetic"``), as the runner reads them."""
    from hpccloud.measure.speed import SpeedModel

    return np.asarray(SpeedModel.synthetic(units_per_s).rate(), float)


def _regions(n_ranks: int, n_regions: int) -> np.ndarray:
    return (np.arange(n_ranks) * n_regions) // n_ranks


def _nodes(region: np.ndarray) -> np.ndarray:
    """Nodes of :data:`RANKS_PER_NODE` consecutive ranks, never across a region boundary."""
    first = np.searchsorted(region, region)  # first rank of each rank's region
    local = (np.arange(region.size) - first) // RANKS_PER_NODE
    new_node = np.concatenate([[True], (local[1:] != local[:-1]) | (region[1:] != region[:-1])])
    return np.cumsum(new_node) - 1


def _links(rng, region: np.ndarray, n_regions: int, inter_alpha_s: float, inter_beta: float) -> LinkTable:
    """Level figures: on-node, node to node inside a region, region to region (±20 % each)."""
    node = _nodes(region)
    N = int(node[-1]) + 1
    G = n_regions
    same = np.eye(G, dtype=bool)
    region_alpha = np.where(same, 3e-6, inter_alpha_s) * rng.lognormal(0.0, 0.2, (G, G))
    region_beta = np.where(same, 5e9, inter_beta) * rng.lognormal(0.0, 0.2, (G, G))
    return LinkTable.levels(rank_region=region, rank_node=node, region_alpha_s=region_alpha,
                            region_beta_bytes_per_s=region_beta,
                            node_alpha_s=1e-6 * rng.lognormal(0.0, 0.2, N),
                            node_beta_bytes_per_s=1e10 * rng.lognormal(0.0, 0.2, N), provenance="synthetic")


def _even_blocks(n_shards: int, ranks: np.ndarray) -> np.ndarray:
    """Contiguous equal blocks of shards over ``ranks`` (in that order)."""
    return ranks[(np.arange(n_shards) * ranks.size) // n_shards]


def make_problem(scenario: str, ranks: int, regions: int, shards: int, seed: int = 0) -> Problem:
    """Build one synthetic scenario (see the module notes)."""
    if scenario not in SCENARIOS:
        raise InvalidArgument(f"--scenario: unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if ranks < 1 or regions < 1 or regions > ranks or shards < 1:
        raise InvalidArgument(f"need ranks >= regions >= 1 and shards >= 1 (got ranks={ranks}, "
                              f"regions={regions}, shards={shards})")
    rng = np.random.default_rng(seed)
    link_rng = np.random.default_rng([seed, 1])  # links drawn apart: speeds and classes keep their draws
    region = _regions(ranks, regions)
    names = tuple(f"region-{g}" for g in range(regions))
    if scenario == "two-region-slow-link":
        speed = RANK_SPEED * np.where(region == 0, 1.0, 0.5) * rng.lognormal(0.0, 0.05, ranks)
        links = _links(link_rng, region, regions, 1e-2, 1.25e8)
    else:
        spread = 0.4 if scenario != "drift" else 0.2
        speed = RANK_SPEED * rng.lognormal(0.0, spread, ranks)
        links = _links(link_rng, region, regions, 1e-3, 1.25e9)
    speed = synthetic_speeds(speed)

    class_names: tuple[str, ...] = ("public",)
    allowed = np.ones((1, ranks), bool)
    class_id = np.zeros(shards, np.int64)
    owners = _even_blocks(shards, np.arange(ranks))
    if scenario == "residency-mix":
        # public anywhere; "home" only in region 0; "restricted" in regions 0..ceil(G/2)-1.
        class_names = ("public", "home", "restricted")
        half = max(1, (regions + 1) // 2)
        allowed = np.stack([np.ones(ranks, bool), region == 0, region < half])
        # classes come in runs of shards (datasets), not shard by shard
        run = max(1, shards // 64)
        runs = rng.choice(3, size=-(-shards // run), p=[0.6, 0.15, 0.25])
        class_id = np.repeat(runs, run)[:shards].astype(np.int64)
        owners = np.empty(shards, np.int64)
        for c in range(3):  # each class in contiguous even blocks over its allowed ranks
            idx = np.flatnonzero(class_id == c)
            owners[idx] = _even_blocks(idx.size, np.flatnonzero(allowed[c])) if idx.size else idx
    u = np.arange(shards - 1, dtype=np.int64)
    price = 0.03 + 0.01 * region.astype(float)
    egress = np.where(np.eye(regions, dtype=bool), 0.0, 0.05)
    return Problem(
        work_units=np.full(shards, float(CELLS_PER_SHARD)), nbytes=np.full(shards, SHARD_BYTES, np.int64),
        owners=owners.astype(np.int64), class_id=class_id, allowed=allowed,
        edge_u=u, edge_v=u + 1, edge_bytes=np.full(u.size, float(HALO_BYTES)),
        speed_units_per_s=speed, links=links,
        rank_region=region.astype(np.int64), region_names=names, price_per_core_hour=price,
        egress_per_gb=egress, class_names=class_names, provenance="synthetic")


def drift_work(n_shards: int, epoch: int, n_epochs: int) -> np.ndarray:
    """Work per shard in one epoch: a ×4 hot spot drifting from 20 % to 80 % of the field.

    It moves less than its own width per epoch, so the previous epoch's
    measurement is a useful (not a perfect) forecast.
    """
    pos = np.arange(n_shards) / max(n_shards, 1)
    centre = 0.2 + 0.6 * epoch / max(n_epochs - 1, 1)
    width = max(0.1, 0.6 / max(n_epochs - 1, 1))
    return CELLS_PER_SHARD * (1.0 + 3.0 * np.exp(-(((pos - centre) / width) ** 2)))


def _row(scenario, planner, p, **kw) -> dict:
    row = {"scenario": scenario, "planner": planner, "ranks": p.n_ranks, "regions": p.n_regions,
           "shards": p.n_shards, "provenance": p.provenance}
    row.update(kw)
    return row


def simulate(scenario: str, ranks: int, regions: int, shards: int, *, steps: int = 200,
             horizon: int = 20, seed: int = 0, planners=None) -> list[dict]:
    """Run every planner on one scenario; one JSON-ready row per planner.

    For the static scenarios a plan is made once and ``horizon_total_s`` is
    ``makespan_after × horizon + migration_s``. For ``drift`` the run lasts
    ``steps`` steps, rebalancing every ``horizon`` steps; every total is summed
    over the epochs and ``makespan_s`` is the mean per-step makespan achieved.
    """
    names = list(planners or PLANNERS)
    p0 = make_problem(scenario, ranks, regions, shards, seed).warm()
    opts = PlanOptions(horizon_steps=horizon)
    rows = []
    if scenario != "drift":
        for name in names:
            mp = plan_problem(p0, name, opts)
            rows.append(_row(scenario, name, p0, makespan_before_s=mp.makespan_before_s,
                             makespan_s=mp.makespan_after_s, lower_bound_s=mp.lower_bound_s,
                             ratio_to_bound=mp.ratio_to_bound, n_moves=len(mp.moves),
                             migration_bytes=mp.migration_bytes, migration_s=mp.migration_s,
                             horizon_steps=horizon, horizon_total_s=mp.horizon_total_s,
                             imbalance_after=mp.imbalance_after, resource_cost=mp.resource_cost,
                             gate_passed=mp.gate_passed, plan_seconds=mp.plan_seconds))
        return rows
    n_epochs = max(1, steps // horizon)
    works = [drift_work(shards, e, n_epochs) for e in range(n_epochs)]
    for name in names:
        owners = p0.owners
        tot = mig_s = plan_s = 0.0
        mig_b = moves = 0
        makespans, bounds = [], []
        for e in range(n_epochs):
            seen = p0.with_work_units(works[max(e - 1, 0)]).with_owners(owners)
            # what a run knows: the last window's work and the one before (every planner
            # gets it; topo prices its candidates on both)
            recent = (works[e - 2],) if e >= 2 else ()
            t0 = time.perf_counter()
            mp = plan_problem(seen, name, dataclasses.replace(opts, recent_work=recent))
            plan_s += time.perf_counter() - t0
            owners = mp.owners_after
            actual = p0.with_work_units(works[e])
            makespan = float(loads_s(actual, owners).max())
            makespans.append(makespan)
            bounds.append(lower_bound_s(actual))
            tot += makespan * horizon + mp.migration_s
            mig_s += mp.migration_s
            mig_b += mp.migration_bytes
            moves += len(mp.moves)
        rows.append(_row(scenario, name, p0, makespan_s=float(np.mean(makespans)),
                         lower_bound_s=float(np.mean(bounds)),
                         ratio_to_bound=float(np.mean(np.array(makespans) / np.array(bounds))),
                         n_moves=moves, migration_bytes=mig_b, migration_s=mig_s,
                         horizon_steps=horizon, epochs=n_epochs, steps=n_epochs * horizon,
                         horizon_total_s=tot, plan_seconds=plan_s))
    return rows


def format_table(rows: list[dict]) -> str:
    """Side-by-side text table of simulator rows."""
    head = (f"{'scenario':<22}{'planner':<8}{'makespan_s':>12}{'T/T*':>8}{'moves':>9}"
            f"{'migr_GB':>10}{'migr_s':>10}{'horizon_total_s':>17}{'plan_ms':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['scenario']:<22}{r['planner']:<8}{r['makespan_s']:>12.4f}{r['ratio_to_bound']:>8.3f}"
                     f"{r['n_moves']:>9}{r['migration_bytes'] / 1e9:>10.2f}{r['migration_s']:>10.3f}"
                     f"{r['horizon_total_s']:>17.2f}{r['plan_seconds'] * 1e3:>10.1f}")
    return "\n".join(lines)
