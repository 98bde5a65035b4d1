"""Spreading a plan's slow receptions: work, groups and residency kept; the busiest receiver never slower."""

from __future__ import annotations

import numpy as np
from balance_testutil import problems
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpccloud.balance import PlanOptions, plan_problem
from hpccloud.balance import planners as planners_mod
from hpccloud.balance.scenarios import make_problem
from hpccloud.balance.spread import spread_receptions


def _slow_receive_s(p, after):
    """Per rank: the Hockney time of the cross-group shards it receives."""
    group_of_rank, _ = p.groups
    moved = np.flatnonzero(p.owners != after)
    cross = moved[group_of_rank[p.owners[moved]] != group_of_rank[after[moved]]]
    alpha, inv_beta = p.link_terms(p.owners[cross], after[cross])
    return np.bincount(after[cross], weights=alpha + p.nbytes[cross] * inv_beta, minlength=p.n_ranks)


def _receive_s(p, after):
    """Per rank: the Hockney time of every shard it receives, the quantity the swaps bound (a
    swap may hand a rank a slow shard, as long as its receptions end before the busiest's did:
    counting the slow ones alone, that rank can look worse — hypothesis found one)."""
    moved = np.flatnonzero(p.owners != after)
    alpha, inv_beta = p.link_terms(p.owners[moved], after[moved])
    return np.bincount(after[moved], weights=alpha + p.nbytes[moved] * inv_beta, minlength=p.n_ranks)


def _random_map(p, seed):
    """Every shard on a random rank its class may live on (a plan to spread)."""
    rng = np.random.default_rng(seed)
    return np.array([rng.choice(np.flatnonzero(p.allowed[c])) for c in p.class_id], np.int64)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=problems, seed=st.integers(0, 2**32 - 1), equal=st.booleans())
def test_spread_keeps_work_groups_and_residency_and_never_slows_the_busiest_receiver(p, seed, equal):
    if equal:  # equal shards: the swaps can fire
        p = p.with_work_units(np.ones(p.n_shards))
    after = _random_map(p, seed)
    out = spread_receptions(p, after)
    group_of_rank, _ = p.groups
    assert out.dtype == np.int64 and out.shape == after.shape
    assert np.all(p.allowed[p.class_id, out])
    assert np.array_equal(group_of_rank[out], group_of_rank[after])
    assert np.allclose(np.bincount(out, weights=p.work_units, minlength=p.n_ranks),
                       np.bincount(after, weights=p.work_units, minlength=p.n_ranks))
    assert _receive_s(p, out).max(initial=0.0) <= _receive_s(p, after).max(initial=0.0) * (1 + 1e-12)
    # only shards that moved across groups, and the staying shards exchanged for them, change hands
    changed = np.flatnonzero(out != after)
    assert np.all((p.owners[changed] == after[changed]) | (group_of_rank[p.owners[changed]] != group_of_rank[after[changed]]))


def test_spread_is_a_no_op_without_moves_across_groups():
    p = make_problem("hetero-speed", 64, 1, 400, seed=0)
    after = np.roll(p.owners, 3)
    assert np.array_equal(spread_receptions(p, after), after)
    assert np.array_equal(spread_receptions(p, p.owners), p.owners)


def test_topo_spreads_a_run_that_lands_on_one_receiver(monkeypatch):
    """hetero-speed, 1024 ranks in 16 regions, seed 1: topo's plan across regions sends runs of
    shards that land on one rank each (19 cross-region receptions, 0.13 s); spread, the plan
    across regions beats staying inside them over the horizon, and ends near T*."""
    p = make_problem("hetero-speed", 1024, 16, 6400, seed=1).warm()
    opts = PlanOptions(horizon_steps=20)
    with_spread = plan_problem(p, "topo", opts)
    monkeypatch.setattr(planners_mod, "spread_receptions", lambda p, owners, **kw: owners)
    without = plan_problem(p, "topo", opts)
    assert with_spread.horizon_total_s < without.horizon_total_s
    assert with_spread.makespan_after_s < without.makespan_after_s
    group_of_rank, _ = p.groups
    crosses = group_of_rank[with_spread.owners_after] != group_of_rank[p.owners]
    assert crosses.any() and not np.any(group_of_rank[without.owners_after] != group_of_rank[p.owners])
    # no rank receives more than a few of the slow shards (one takes ~6.6 ms)
    assert _slow_receive_s(p, with_spread.owners_after).max() < 0.04
    assert with_spread.ratio_to_bound <= 1.05


def test_a_run_on_one_host_does_not_spread_its_migration():
    """Ranks of one host copy through one memory system (often on shared cores): spreading a
    migration over more of them does not make it faster, so topo leaves it alone there."""
    from hpccloud.balance.calibration import Calibration

    p = make_problem("hetero-speed", 1024, 16, 6400, seed=1).warm()
    one_host = plan_problem(p, "topo", PlanOptions(horizon_steps=20, calibration=Calibration(rank_host=(0,) * 1024)))
    hosts = plan_problem(p, "topo", PlanOptions(horizon_steps=20,
                                                calibration=Calibration(rank_host=tuple(range(1024)))))
    group_of_rank, _ = p.groups
    assert not np.any(group_of_rank[one_host.owners_after] != group_of_rank[p.owners])  # stays in its groups
    assert hosts.ratio_to_bound <= 1.05 < one_host.ratio_to_bound
