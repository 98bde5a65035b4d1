"""topo prices its candidates on several work scenarios (``PlanOptions.scenarios``).

A window's mean work is the wrong forecast for a load that grows or spreads
within the window (a zooming Mandelbrot view): the runner passes the window's
last steps as a second scenario, and topo decides on the mean over both.
"""

from __future__ import annotations

import numpy as np
import pytest
from balance_testutil import assert_moves_are_the_owner_changes, problems
from hypothesis import given, settings
from hypothesis import strategies as st

from hpccloud.balance import PlanOptions, Problem, plan_problem
from hpccloud.balance.model import loads_s
from hpccloud.errors import InvalidArgument

S, P = 64, 4
SPEED = np.array([1.0, 1.0, 1.0, 3.0])
SHARDS = np.arange(S)


def growing(t: int) -> np.ndarray:
    """A hot spot that widens and heats up step by step (a view zooming into detail)."""
    return 1.0 + 6.0 * (t / 10) * np.exp(-((SHARDS - 40.0) / (3 + 0.6 * t)) ** 2)


def achieved(owners: np.ndarray, steps: np.ndarray) -> float:
    """Mean per-step makespan of ``owners`` over the steps' real work."""
    return float(np.mean([(np.bincount(owners, weights=w, minlength=P) / SPEED).max() for w in steps]))


def test_the_window_end_as_a_scenario_plans_better_for_a_load_that_grows():
    window = np.array([growing(t) for t in range(10)])
    after = np.array([growing(t) for t in range(10, 20)])
    p = Problem.uniform(work_units=window.mean(0), owners=(SHARDS * P) // S, speed_units_per_s=SPEED)
    on_mean = plan_problem(p, "topo", PlanOptions(horizon_steps=10))
    both = plan_problem(p, "topo", PlanOptions(horizon_steps=10, scenarios=(window[-3:].mean(0),)))
    assert achieved(both.owners_after, after) < 0.9 * achieved(on_mean.owners_after, after)
    # and its prediction is nearer what came (the mean over the two scenarios)
    assert both.makespan_after_s > on_mean.makespan_after_s


def test_a_scenario_equal_to_the_work_changes_nothing():
    rng = np.random.default_rng(3)
    p = Problem.uniform(work_units=rng.uniform(1, 5, 40), owners=np.repeat(np.arange(4), 10),
                        speed_units_per_s=[1.0, 2.0, 1.0, 0.5])
    a = plan_problem(p, "topo", PlanOptions(horizon_steps=20))
    b = plan_problem(p, "topo", PlanOptions(horizon_steps=20, scenarios=(p.work_units.copy(),)))
    assert np.array_equal(a.owners_after, b.owners_after)
    assert a.makespan_after_s == b.makespan_after_s


def test_baselines_ignore_scenarios():
    rng = np.random.default_rng(4)
    p = Problem.uniform(work_units=rng.uniform(1, 5, 40), owners=np.zeros(40, int), speed_units_per_s=[1.0, 2.0])
    other = (rng.uniform(1, 5, 40),)
    for name in ("greedy", "metis", "even"):
        a = plan_problem(p, name, PlanOptions(horizon_steps=20))
        b = plan_problem(p, name, PlanOptions(horizon_steps=20, scenarios=other))
        assert np.array_equal(a.owners_after, b.owners_after), name


@pytest.mark.parametrize("bad", [np.ones((2, 3)), np.array([1.0, -1.0, 1.0]), np.array([1.0, np.nan, 2.0])])
def test_bad_scenarios_are_refused(bad):
    with pytest.raises(InvalidArgument, match=r"scenarios\[0\]"):
        PlanOptions(scenarios=(bad,))


def test_a_scenario_of_the_wrong_length_is_refused():
    p = Problem.uniform(work_units=np.ones(6), owners=np.zeros(6, int), speed_units_per_s=[1.0, 1.0])
    with pytest.raises(InvalidArgument, match="5 work units for 6 shards"):
        plan_problem(p, "topo", PlanOptions(scenarios=(np.ones(5),)))


@settings(max_examples=60, deadline=None)
@given(p=problems, horizon=st.sampled_from([1, 20, 10_000]), seed=st.integers(0, 2**31 - 1))
def test_topo_with_scenarios_keeps_shards_residency_and_its_gate_on_the_expected_figures(p, horizon, seed):
    """Every shard once where its class may live; the predicted step is the mean of the
    scenarios' makespans; a move happens only if the expected gain pays within the horizon."""
    rng = np.random.default_rng(seed)
    scen = p.work_units * rng.uniform(0.5, 2.0, p.n_shards)
    mp = plan_problem(p, "topo", PlanOptions(horizon_steps=horizon, scenarios=(scen,)))
    assert_moves_are_the_owner_changes(p, mp)
    after = mp.owners_after
    expected = np.mean([loads_s(q, after).max() for q in (p, p.with_work_units(scen))])
    assert mp.makespan_after_s == pytest.approx(expected, rel=1e-9)
    assert mp.makespan_after_s >= mp.lower_bound_s * (1 - 1e-9)
    if mp.moves:
        assert mp.gate_passed
        assert (mp.makespan_before_s - mp.makespan_after_s) * horizon > mp.migration_s - 1e-12
