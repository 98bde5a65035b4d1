"""Property tests: every planner conserves shards and residency; T* is a true lower bound; the gate holds."""

from __future__ import annotations

import numpy as np
from balance_testutil import assert_moves_are_the_owner_changes, problems
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpccloud.balance import PLANNERS, PlanOptions, plan_problem
from hpccloud.balance.bound import lp_bound_s, residency_rules
from hpccloud.balance.model import loads_s, migration_lower_bound_s

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(p=problems, horizon=st.sampled_from([1, 5, 100, 10_000]))
def test_every_planner_keeps_every_shard_once_and_never_breaks_residency(p, horizon):
    for name in PLANNERS:
        mp = plan_problem(p, name, PlanOptions(horizon_steps=horizon))
        after = mp.owners_after
        assert after.shape == (p.n_shards,) and after.dtype == np.int64
        assert np.all((after >= 0) & (after < p.n_ranks))
        assert np.all(p.allowed[p.class_id, after]), name
        # the moves are exactly the owner changes, each shard at most once
        ids = [m[0] for m in mp.moves]
        assert len(ids) == len(set(ids))
        replay = p.owners.copy()
        for s, src, dst in mp.moves:
            assert replay[s] == src and src != dst
            replay[s] = dst
        assert np.array_equal(replay, after)
        assert mp.migration_bytes == int(p.nbytes[ids].sum())
        assert mp.migration_s >= migration_lower_bound_s(p, p.owners, after) - 1e-12
        if name == "static":
            assert not mp.moves


@SETTINGS
@given(p=problems)
def test_lower_bound_never_above_any_plan(p):
    for name in PLANNERS:
        mp = plan_problem(p, name)
        lb = mp.lower_bound_s
        assert lb <= mp.makespan_after_s * (1 + 1e-9) + 1e-12, (name, lb, mp.makespan_after_s)
        assert lb <= mp.makespan_before_s * (1 + 1e-9) + 1e-12
        assert np.isclose(mp.makespan_after_s, float(loads_s(p, mp.owners_after).max()))


@SETTINGS
@given(p=problems)
def test_enumerated_bound_equals_highs_lp(p):
    from hpccloud.balance.bound import fractional_bound_s

    _, groups, work, speed, _ = residency_rules(p)
    enum = fractional_bound_s(groups, work, speed)
    if work.size and work.sum() > 0:
        assert np.isclose(enum, lp_bound_s(groups, work, speed), rtol=1e-6)


@SETTINGS
@given(p=problems, horizon=st.sampled_from([1, 3, 50, 10_000]))
def test_topo_moves_only_when_the_gate_says_yes(p, horizon):
    mp = plan_problem(p, "topo", PlanOptions(horizon_steps=horizon))
    gain = mp.makespan_before_s - mp.makespan_after_s
    if mp.gate_passed:
        assert mp.moves and gain * horizon > mp.migration_s
    else:
        assert not mp.moves and mp.migration_s == 0 and np.array_equal(mp.owners_after, p.owners)
        assert mp.makespan_after_s == mp.makespan_before_s


@SETTINGS
@given(p=problems, horizon=st.sampled_from([1, 20, 10_000]), shift=st.integers(-3, 3),
       seed=st.integers(0, 2**31 - 1))
def test_topo_with_recent_windows_keeps_shards_and_residency_and_its_gate(p, horizon, shift, seed):
    """With an earlier window's work (a load that moved, or noise), topo still places every
    shard once where its class may live, and moves only when the gain it predicts — on the
    work it planned for, forecast or measured — pays for the migration within the horizon."""
    rng = np.random.default_rng(seed)
    recent = (np.roll(p.work_units, -shift) * rng.uniform(0.9, 1.1, p.n_shards),)
    mp = plan_problem(p, "topo", PlanOptions(horizon_steps=horizon, recent_work=recent))
    assert_moves_are_the_owner_changes(p, mp)
    assert abs(mp.forecast_shift) < p.n_shards
    if mp.moves:
        assert mp.gate_passed
        assert (mp.makespan_before_s - mp.makespan_after_s) * horizon > mp.migration_s - 1e-12


@SETTINGS
@given(n_shards=st.integers(1, 60), speeds=st.lists(st.floats(0.05, 20.0), min_size=1, max_size=9),
       work=st.floats(0.1, 1e6), seed=st.integers(0, 2**16),
       per_shard=st.sampled_from([0.0, 1e-4, 0.3]), scale=st.sampled_from([1.0, 0.5, 0.0]))
def test_count_bound_is_the_whole_shard_optimum_for_equal_shards(n_shards, speeds, work, seed,
                                                                 per_shard, scale):
    """Equal shards on ranks of any speeds, each shard costing rank r
    ``per_shard + scale · w / v_r``: the count bound is the optimum (earliest-finish
    assignment, exact for equal jobs on uniform machines), never above any map, and
    never below the fractional bound."""
    from hpccloud.balance.bound import count_bound_s

    v = np.array(speeds)
    cost = per_shard + scale * work / v
    bound = count_bound_s(np.full(n_shards, work), v, per_shard, scale)
    if per_shard == 0 and scale == 0:
        assert bound == 0.0
        return
    finish = np.zeros(v.size)  # earliest finish: each shard where it would end first
    for _ in range(n_shards):
        r = int(np.argmin((finish + 1) * cost))
        finish[r] += 1
    optimum = float((finish * cost).max())
    assert np.isclose(bound, optimum, rtol=1e-9)
    assert bound >= n_shards / (1 / cost).sum() * (1 - 1e-12)
    owners = np.random.default_rng(seed).integers(0, v.size, n_shards)
    assert bound <= (np.bincount(owners, minlength=v.size) * cost).max() * (1 + 1e-12)


@SETTINGS
@given(n_shards=st.integers(1, 60), speeds=st.lists(st.floats(0.05, 20.0), min_size=2, max_size=9),
       work=st.floats(0.1, 1e6), seed=st.integers(0, 2**16))
def test_topos_whole_shard_candidate_reaches_the_count_bound_moving_only_the_surplus(
        n_shards, speeds, work, seed):
    """topo's count-split candidate on equal shards in one group: it finishes at the
    count bound, and a rank gives up shards only beyond its count-bound share."""
    from hpccloud.balance.bound import count_bound_s
    from hpccloud.balance.planners import _count_split
    from hpccloud.balance.problem import Problem

    v = np.array(speeds)
    owners = np.random.default_rng(seed).integers(0, v.size, n_shards)
    p = Problem.uniform(work_units=np.full(n_shards, work), owners=owners, speed_units_per_s=v)
    new = _count_split(p, owners)
    assert new.shape == owners.shape and new.min() >= 0 and new.max() < v.size
    t = count_bound_s(p.work_units, v)
    counts = np.bincount(new, minlength=v.size)
    assert (counts * work / v).max() <= t * (1 + 1e-9)
    share = np.floor(t * v / work * (1 + 1e-9))
    surplus = np.maximum(np.bincount(owners, minlength=v.size) - share, 0).sum()
    assert int((new != owners).sum()) <= surplus
