"""Balancer benchmarks (pytest-benchmark): plan time at 10^5 shards × 1024 ranks, the balanced-map
fast path, and the quality figures printed beside them.

Run::

    python -m pytest benchmarks/test_balance_bench.py --benchmark-columns=median,iqr,rounds

Timing is reported, never asserted (the machine is shared; see BRIEF). Each timed
benchmark also times a reference in the same run — ``np.sort`` of 10^5 float64 —
and records the ratio in ``extra_info`` so a loaded machine shows as such.
Quality figures (makespan / T*, horizon totals) are deterministic given the seed
and are asserted here as in ``tests/balance``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from hpccloud.balance import PlanOptions, plan_problem
from hpccloud.balance.model import compute_s
from hpccloud.balance.scenarios import make_problem, simulate

RANKS, SHARDS, REGIONS = 1024, 100_000, 2


def _reference_ms(rounds: int = 15) -> float:
    a = np.random.default_rng(0).random(SHARDS)
    ts = []
    for _ in range(rounds):
        t = time.perf_counter()
        np.sort(a)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3


def _cpu_ms(p, opts, rounds: int = 7) -> float:
    """Median process CPU time of one topo plan: on a loaded shared machine, wall time
    mostly measures the wait for a core (5x CPU seen here at load 11 on 2 cores)."""
    ts = []
    for _ in range(rounds):
        t = time.process_time()
        plan_problem(p, "topo", opts)
        ts.append(time.process_time() - t)
    return float(np.median(ts)) * 1e3


@pytest.fixture(scope="module")
def hetero():
    return make_problem("hetero-speed", RANKS, REGIONS, SHARDS, seed=0).warm()


@pytest.fixture(scope="module")
def slow_link():
    return make_problem("two-region-slow-link", RANKS, REGIONS, SHARDS, seed=0).warm()


@pytest.mark.parametrize("scenario", ["hetero-speed", "two-region-slow-link"])
def test_topo_plans_1e5_shards_on_1024_ranks(benchmark, scenario, hetero, slow_link):
    p = hetero if scenario == "hetero-speed" else slow_link
    opts = PlanOptions(horizon_steps=100)
    mp = benchmark(plan_problem, p, "topo", opts)
    ref = _reference_ms()
    benchmark.extra_info.update(reference_sort_1e5_ms=ref, moves=len(mp.moves), cpu_ms=_cpu_ms(p, opts),
                                ratio_to_bound=mp.ratio_to_bound, gate_passed=mp.gate_passed)
    if benchmark.stats is not None:
        med_ms = benchmark.stats.stats.median * 1e3
        benchmark.extra_info["median_over_reference"] = med_ms / ref
    assert mp.gate_passed and mp.moves
    if scenario == "hetero-speed":
        assert mp.makespan_after_s <= 1.05 * mp.lower_bound_s


def test_balanced_map_is_recognised(benchmark, hetero):
    # contiguous blocks in proportion to measured speed, each shard's work scaled so every
    # rank's compute time is equal: T_now = T* up to a few µs of halo; topo must stop at once
    v = hetero.speed_units_per_s
    bounds = np.cumsum(v) / v.sum() * SHARDS
    owners = np.searchsorted(bounds, np.arange(SHARDS) + 0.5, side="right").astype(np.int64)
    count = np.bincount(owners, minlength=RANKS)
    work = (v / count)[owners] * 1e6
    balanced = hetero.with_work_units(work).with_owners(owners)
    mp = benchmark(plan_problem, balanced, "topo")
    benchmark.extra_info.update(reference_sort_1e5_ms=_reference_ms(),
                                ratio_to_bound=float(compute_s(balanced, owners).max() / mp.lower_bound_s))
    assert not mp.moves and not mp.gate_passed


def test_greedy_reference_plan_time(benchmark, hetero):
    mp = benchmark.pedantic(plan_problem, args=(hetero, "greedy"), rounds=3, iterations=1)
    benchmark.extra_info.update(reference_sort_1e5_ms=_reference_ms(), moves=len(mp.moves))


def test_quality_figures_at_scale():
    """Not timed: topo/T* on hetero-speed and topo/greedy horizon totals on the slow link, 10^5 × 1024."""
    hetero = {r["planner"]: r for r in simulate("hetero-speed", RANKS, REGIONS, SHARDS, horizon=100)}
    slow = {r["planner"]: r for r in simulate("two-region-slow-link", RANKS, REGIONS, SHARDS, horizon=100)}
    ratio = hetero["topo"]["makespan_s"] / hetero["topo"]["lower_bound_s"]
    totals = slow["topo"]["horizon_total_s"] / slow["greedy"]["horizon_total_s"]
    print(f"\nhetero-speed topo makespan / T* = {ratio:.4f}; "
          f"two-region-slow-link topo / greedy horizon_total_s = {totals:.4f}")
    assert ratio <= 1.05
    # topo's horizon total is the lowest of all planners; with the halo priced as it runs
    # (latencies overlap) greedy's scattered map is no longer charged one α per cut edge, so
    # the margin over greedy is ~0.92 here, not the 0.8 the per-edge model showed
    assert slow["topo"]["horizon_total_s"] <= min(r["horizon_total_s"] for r in slow.values())


def test_noisy_replan_of_own_output(benchmark, hetero):
    """Re-plan topo's own output with ±5 % noise on the work units (as the runner does)."""
    opts = PlanOptions(horizon_steps=100)
    first = plan_problem(hetero, "topo", opts)
    rng = np.random.default_rng(11)
    noisy = hetero.with_owners(first.owners_after).with_work_units(
        hetero.work_units * rng.uniform(0.95, 1.05, SHARDS))
    mp = benchmark(plan_problem, noisy, "topo", opts)
    benchmark.extra_info.update(reference_sort_1e5_ms=_reference_ms(), moves=len(mp.moves),
                                makespan_before_over_bound=mp.makespan_before_s / mp.lower_bound_s)
    print(f"\nnoisy re-plan: {len(mp.moves)} moves, before {mp.makespan_before_s / mp.lower_bound_s:.4f} T*")
    assert len(mp.moves) <= 0.01 * SHARDS


@pytest.fixture(scope="module")
def huge():
    """1.3·10^5 ranks in 16 regions, 10^6 shards: links per level, never rank × rank."""
    return make_problem("hetero-speed", 131072, 16, 1_000_000, seed=0).warm()


@pytest.fixture(scope="module")
def large():
    return make_problem("hetero-speed", 16384, 8, 1_000_000, seed=0).warm()


@pytest.mark.parametrize("size, planner", [("16384", "topo"), ("16384", "greedy"), ("16384", "even"),
                                           ("131072", "topo")])
def test_plans_1e6_shards_at_scale(benchmark, size, planner, large, huge):
    """Issue 16: topo < 2 s at 131 072 ranks (< 0.5 s at 16 384); greedy, even < 2 s at 16 384."""
    p = large if size == "16384" else huge
    opts = PlanOptions(horizon_steps=20)
    mp = benchmark.pedantic(plan_problem, args=(p, planner, opts), rounds=3, iterations=1, warmup_rounds=1)
    t = time.process_time()
    plan_problem(p, planner, opts)
    benchmark.extra_info.update(cpu_s=time.process_time() - t, reference_sort_1e5_ms=_reference_ms(),
                                moves=len(mp.moves), ratio_to_bound=mp.ratio_to_bound,
                                link_table_bytes=p.links.nbytes)
    assert p.links.nbytes < 64 * p.n_ranks  # O(P), not O(P²)
    if planner == "topo":
        assert mp.ratio_to_bound < 1.25
