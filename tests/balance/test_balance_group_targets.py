"""The group targets' closed form for two groups against the LP it replaces."""

from __future__ import annotations

import numpy as np
import pytest

from hpccloud.balance.bound import (
    _lp_group_targets,
    _two_group_targets,
    fractional_bound_s,
    group_targets,
)


def _instance(rng, n_pinned: int):
    """Rules 0..n_pinned-1 pinned to one group each, the last one free in both."""
    rows = [[True, False] if rng.random() < 0.5 else [False, True] for _ in range(n_pinned)]
    rule_groups = np.array([*rows, [True, True]], bool)
    rule_work = rng.uniform(0.1, 10.0, n_pinned + 1)
    group_speed = rng.uniform(0.5, 5.0, 2)
    share = rng.uniform(0.0, 1.0)
    current = np.zeros(rule_groups.shape)
    current[:n_pinned] = np.where(rule_groups[:n_pinned], rule_work[:n_pinned, None], 0.0)
    current[-1] = [share * rule_work[-1], (1.0 - share) * rule_work[-1]]
    return rule_groups, rule_work, group_speed, current


@pytest.mark.parametrize("n_pinned", [1, 2, 3])
def test_the_closed_form_is_the_lps_optimum(n_pinned):
    rng = np.random.default_rng(n_pinned)
    checked = 0
    for _ in range(200):
        rule_groups, rule_work, group_speed, current = _instance(rng, n_pinned)
        t_star = fractional_bound_s(rule_groups, rule_work, group_speed) * (1.0 + rng.choice([0.0, 0.05, 0.3]))
        two = _two_group_targets(rule_groups, rule_work, group_speed, current, t_star)
        assert two is not None
        lp = _lp_group_targets(rule_groups, rule_work, group_speed, current, t_star)
        assert two == pytest.approx(lp, rel=1e-7, abs=1e-9 * rule_work.sum())
        assert group_targets(rule_groups, rule_work, group_speed, current, t_star) is not None
        checked += 1
    assert checked == 200


def test_other_cases_are_left_to_the_lp():
    speed = np.array([1.0, 1.0, 1.0])
    three = np.array([[True, True, True], [True, False, False]])
    work, cur = np.array([3.0, 1.0]), np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert _two_group_targets(three, work, speed, cur, 2.0) is None  # three groups
    both = np.array([[True, True], [True, True]])
    cur2 = np.array([[1.0, 2.0], [0.5, 0.5]])
    assert _two_group_targets(both, np.array([3.0, 1.0]), speed[:2], cur2, 2.0) is None  # two free rules
    x = group_targets(both, np.array([3.0, 1.0]), speed[:2], cur2, 2.0)  # ... the LP answers
    assert x.sum(axis=1) == pytest.approx([3.0, 1.0]) and np.all(x.sum(axis=0) <= 2.0 * (1 + 1e-9))


def test_infeasible_is_refused_by_the_lp():
    rule_groups = np.array([[True, False], [True, True]])
    rule_work, speed = np.array([10.0, 1.0]), np.array([1.0, 1.0])
    cur = np.array([[10.0, 0.0], [1.0, 0.0]])
    assert _two_group_targets(rule_groups, rule_work, speed, cur, 5.0) is None  # group 0 alone needs 10
    with pytest.raises(RuntimeError, match="group-target LP failed"):
        group_targets(rule_groups, rule_work, speed, cur, 5.0)
