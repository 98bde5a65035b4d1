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
    benchmark.extra_info.update(reference_sort_1e5_ms=ref, moves=len(mp.moves),
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
    assert totals <= 0.8
