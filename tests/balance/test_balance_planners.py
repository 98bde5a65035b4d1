"""Planner behaviour and the quality targets on the synthetic scenarios (deterministic given the seed)."""

from __future__ import annotations

import numpy as np
import pytest

from hpccloud.balance import PlanOptions, Problem, plan_problem
from hpccloud.balance import planners as planners_mod
from hpccloud.balance.calibration import Calibration
from hpccloud.balance.scenarios import make_problem, simulate
from hpccloud.errors import InvalidArgument, ResidencyError


def test_topo_balances_by_measured_speed_moving_only_boundary_shards():
    # 12 equal shards in two blocks; rank 1 is twice as fast -> it should hold 8
    p = Problem.uniform(work_units=np.ones(12), owners=[0] * 6 + [1] * 6, speed_units_per_s=[1.0, 2.0])
    mp = plan_problem(p, "topo")
    assert mp.owners_after.tolist() == [0] * 4 + [1] * 8   # the two shards next to rank 1 moved
    assert mp.gate_passed and len(mp.moves) == 2
    assert mp.makespan_after_s == pytest.approx(4.0, rel=1e-3)  # + a few µs of halo
    assert mp.lower_bound_s == pytest.approx(4.0)


def test_even_is_speed_blind_and_greedy_is_placement_blind():
    p = Problem.uniform(work_units=np.ones(12), owners=[0] * 12, speed_units_per_s=[1.0, 3.0])
    even = plan_problem(p, "even")
    assert np.bincount(even.owners_after, minlength=2).tolist() == [6, 6]
    greedy = plan_problem(p, "greedy")
    assert np.bincount(greedy.owners_after, minlength=2).tolist() == [3, 9]


def test_balanced_map_is_recognised_without_moves():
    p = Problem.uniform(work_units=np.ones(12), owners=[0] * 4 + [1] * 8, speed_units_per_s=[1.0, 2.0])
    mp = plan_problem(p, "topo")
    assert not mp.moves and not mp.gate_passed
    assert mp.makespan_after_s == mp.makespan_before_s


def test_gate_refuses_a_migration_that_does_not_pay_back_within_the_horizon():
    # gain 2 s per step; each moved shard costs 10 s on this link
    p = Problem.uniform(work_units=np.ones(12), owners=[0] * 6 + [1] * 6, speed_units_per_s=[1.0, 2.0],
                        alpha_s=10.0)
    short = plan_problem(p, "topo", PlanOptions(horizon_steps=5))
    assert not short.gate_passed and not short.moves
    long = plan_problem(p, "topo", PlanOptions(horizon_steps=50))
    assert long.gate_passed and long.moves
    assert (long.makespan_before_s - long.makespan_after_s) * 50 > long.migration_s


def test_residency_is_rechecked_on_every_plan(monkeypatch):
    p = Problem.uniform(work_units=np.ones(2), owners=[0, 0], speed_units_per_s=[1.0, 1.0])
    p = Problem(**{**{f: getattr(p, f) for f in p.__dataclass_fields__},
                   "allowed": np.array([[True, False]])})

    def rogue(problem, opts, before, bound):
        return planners_mod._evaluate(problem, np.array([0, 1]), problem.owners), True

    monkeypatch.setitem(planners_mod.PLANNERS, "rogue", rogue)
    with pytest.raises(ResidencyError, match="may not live on rank 1"):
        plan_problem(p, "rogue")
    with pytest.raises(InvalidArgument, match="unknown planner"):
        plan_problem(p, "nope")
    with pytest.raises(InvalidArgument, match="horizon_steps"):
        PlanOptions(horizon_steps=0)


def test_residency_mix_every_class_stays_home():
    p = make_problem("residency-mix", 48, 3, 3000, seed=2)
    for name in ("even", "greedy", "topo"):
        mp = plan_problem(p, name)
        assert np.all(p.allowed[p.class_id, mp.owners_after])
        assert mp.lower_bound_s <= mp.makespan_after_s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hetero_speed_topo_within_5_percent_of_the_lower_bound(seed):
    rows = {r["planner"]: r for r in simulate("hetero-speed", 256, 2, 25_600, horizon=100, seed=seed)}
    topo = rows["topo"]
    assert topo["makespan_s"] <= 1.05 * topo["lower_bound_s"], topo
    assert topo["makespan_s"] <= rows["greedy"]["makespan_s"]
    assert topo["n_moves"] < rows["greedy"]["n_moves"] / 2


@pytest.mark.parametrize("horizon", [20, 100])
def test_two_region_slow_link_topo_beats_greedy_over_the_horizon(horizon):
    rows = {r["planner"]: r for r in simulate("two-region-slow-link", 256, 2, 25_600, horizon=horizon, seed=0)}
    # the acceptance: topo's horizon total is the lowest of all planners (with latencies
    # that overlap and the level link table, greedy's scattered map is only ~5 % worse here)
    best_other = min(r["horizon_total_s"] for name, r in rows.items() if name != "topo")
    assert rows["topo"]["horizon_total_s"] <= best_other, rows


def test_simulator_rows_are_deterministic_and_complete():
    a = simulate("drift", 16, 2, 800, steps=40, horizon=10, seed=5)
    b = simulate("drift", 16, 2, 800, steps=40, horizon=10, seed=5)
    keys = {"scenario", "planner", "makespan_s", "lower_bound_s", "migration_bytes", "migration_s",
            "horizon_total_s", "plan_seconds"}
    assert [r["planner"] for r in a] == ["static", "even", "greedy", "metis", "topo"]
    for ra, rb in zip(a, b, strict=True):
        assert keys <= set(ra)
        assert ra["provenance"] == "synthetic"
        assert {k: v for k, v in ra.items() if k != "plan_seconds"} == \
               {k: v for k, v in rb.items() if k != "plan_seconds"}
        assert ra["lower_bound_s"] <= ra["makespan_s"]
    static = a[0]
    assert static["migration_bytes"] == 0
    assert static["horizon_total_s"] == pytest.approx(static["makespan_s"] * 40)


@pytest.mark.parametrize("scenario", ["hetero-speed", "two-region-slow-link"])
def test_topo_is_idempotent_and_holds_still_under_measurement_noise(scenario):
    # the runner re-plans every K steps on measured (noisy) work units: re-planning topo's
    # own output must not move, and ±5 % noise per shard must move little or nothing
    p = make_problem(scenario, 256, 2, 25_600, seed=3)
    first = plan_problem(p, "topo", PlanOptions(horizon_steps=100))
    assert first.gate_passed and first.ratio_to_bound <= 1.05
    again = plan_problem(p.with_owners(first.owners_after), "topo", PlanOptions(horizon_steps=100))
    assert not again.moves and not again.gate_passed
    rng = np.random.default_rng(7)
    for _ in range(3):
        noisy = p.with_owners(first.owners_after).with_work_units(
            p.work_units * rng.uniform(0.95, 1.05, p.n_shards))
        mp = plan_problem(noisy, "topo", PlanOptions(horizon_steps=100))
        assert len(mp.moves) <= 0.01 * p.n_shards, (len(mp.moves), mp.makespan_before_s / mp.lower_bound_s)
        assert mp.makespan_after_s <= mp.makespan_before_s


def test_drift_topo_with_the_window_before_beats_every_other_planner():
    """A hot spot that moves by its own width each epoch: the last window is a poor
    forecast, so topo plans on the motion-compensated one (``balance/forecast.py``)
    and must end below every baseline over the whole run, at 16 regions and at 2."""
    for regions in (16, 2):
        rows = {r["planner"]: r for r in simulate("drift", 512, regions, 3200, horizon=20)}
        topo = rows.pop("topo")["horizon_total_s"]
        assert topo <= min(r["horizon_total_s"] for r in rows.values()), (regions, topo, rows)


def test_forecast_follows_a_translating_load_and_ignores_a_still_one():
    from hpccloud.balance.forecast import forecast_work

    x = np.arange(400)
    blob = lambda c: 1.0 + 3.0 * np.exp(-(((x - c) / 15.0) ** 2))  # noqa: E731
    work, shift = forecast_work(blob(130), blob(100))
    assert shift == 30
    assert np.abs(work - blob(160)).max() < 1e-9  # where it will be
    assert forecast_work(blob(130), blob(130)) is None
    # a 2-D field numbered row by row: a move of (1, 2) tiles is a shift of gx + 2
    gy = gx = 16
    yy, xx = np.mgrid[0:gy, 0:gx]
    field = lambda cy, cx: (1.0 + 3.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0)).ravel()  # noqa: E731
    _, shift2 = forecast_work(field(7, 6), field(6, 4))
    assert shift2 == gx + 2


def test_layer_key_of_no_candidates_is_empty_and_topo_plans_when_a_flow_finds_none():
    """CI found it (hypothesis): a second flow out of a bucket an earlier flow had emptied."""
    from balance_testutil import assert_moves_are_the_owner_changes, random_problem

    from hpccloud.balance.planners import _layer_key

    assert _layer_key(np.zeros(0, np.int64), np.zeros(0, np.int64), 3.0).shape == (0,)
    p = random_problem(seed=9, n_shards=24, n_ranks=9, n_regions=3, n_classes=3, slow_factor=1.0)
    for horizon in (1, 20):
        assert_moves_are_the_owner_changes(p, plan_problem(p, "topo", PlanOptions(horizon_steps=horizon)))


def test_layer_key_takes_every_ranks_outermost_shard_first():
    from hpccloud.balance.planners import _layer_key, _take_by_work

    # three ranks of one group hold blocks 0-3, 4-7, 8-11; the receiving group lies to the right
    cand = np.arange(12)
    owner = np.repeat([0, 1, 2], 4)
    key = _layer_key(cand, owner, centre=20.0)
    taken = _take_by_work(cand, key, np.ones(12), 3.0)
    assert sorted(taken.tolist()) == [3, 7, 11]  # one shard from each rank, the end facing right
    taken = _take_by_work(cand, key, np.ones(12), 5.0)
    assert sorted(taken.tolist()) == [3, 6, 7, 10, 11]  # then the next layer, nearest first
    # facing left: the low ends
    assert sorted(_take_by_work(cand, _layer_key(cand, owner, centre=-5.0), np.ones(12), 3.0).tolist()) == [0, 4, 8]


@pytest.mark.parametrize("scenario", ["hetero-speed", "residency-mix"])
def test_a_level_above_t_star_sheds_only_the_groups_above_it(scenario):
    """``_rebalance(level=…)``: the groups above ``T* × (1 + level)`` shed just down to it and
    the others take it in below it, so less work crosses between groups than meeting T*."""
    from hpccloud.balance.bound import fractional_bound_s, residency_rules

    p = make_problem(scenario, 64, 8, 6_400, seed=11)
    before = planners_mod._evaluate(p, p.owners)
    opts = PlanOptions(horizon_steps=20)
    group_of_rank, _ = p.groups
    K = int(group_of_rank.max()) + 1
    _, rule_groups, rule_work, group_speed, _ = residency_rules(p)
    t_star = fractional_bound_s(rule_groups, rule_work, group_speed)
    work_in = lambda owners: np.bincount(group_of_rank[owners], p.work_units, K)  # noqa: E731
    start = work_in(p.owners)
    crossed = {}
    for level in (0.0, 0.02, 0.05):
        owners = planners_mod._rebalance(p, opts, before, cross_region=True, halo_aware=False,
                                         level=level)
        assert np.all(p.allowed[p.class_id, owners])
        end = work_in(owners)
        cap = t_star * (1.0 + level) * group_speed
        # shard granularity: a group may end one shard above its cap
        assert np.all(end <= np.maximum(cap, start) + p.work_units.max() * (1 + 1e-9))
        if level > 0:  # a group at or under the level sends nothing away
            under = start <= cap
            left = np.bincount(group_of_rank[p.owners], p.work_units * (group_of_rank[owners] != group_of_rank[p.owners]), K)
            assert np.all(left[under] == 0.0), (level, left[under])
        crossed[level] = float(p.work_units[group_of_rank[owners] != group_of_rank[p.owners]].sum())
    assert crossed[0.05] < crossed[0.02] < crossed[0.0], crossed


def test_hetero_speed_at_1024_ranks_and_16_regions_topo_within_5_percent_on_a_seed_that_stayed():
    """Seed 11 (not a seed the planner was built on): staying inside the groups won the
    horizon total at 1.070 x T*, meeting T* moved 3.6x the bytes; a level between the two
    wins both (1.009 x T*, the lowest total of every planner)."""
    rows = {r["planner"]: r for r in simulate("hetero-speed", 1024, 16, 102_400, horizon=20, seed=11)}
    topo = rows.pop("topo")
    assert topo["makespan_s"] <= 1.05 * topo["lower_bound_s"], topo
    assert topo["horizon_total_s"] <= min(r["horizon_total_s"] for r in rows.values())


@pytest.mark.parametrize("planner", ["static", "even", "greedy", "metis"])
def test_a_baseline_decides_on_the_measured_work_and_is_priced_on_the_forecast(planner):
    """``priced_on``: the map is the planner's own on the measured work; its predicted
    step times are those of the forecast (mean over its steps, like topo's scenarios)."""
    p = Problem.uniform(work_units=np.ones(12), owners=[0] * 6 + [1] * 6,
                        speed_units_per_s=[1.0, 1.0])
    grow = np.r_[np.full(6, 3.0), np.ones(6)]  # the first half's work triples next window
    steps = (np.r_[np.full(6, 2.0), np.ones(6)], np.r_[np.full(6, 4.0), np.ones(6)])
    plain = plan_problem(p, planner)
    priced = plan_problem(p, planner, PlanOptions(priced_on=(grow, *steps)))
    assert priced.owners_after.tolist() == plain.owners_after.tolist()
    assert plain.makespan_before_s == pytest.approx(6.0)
    # per step: rank 0 does 12 then 24 units at speed 1 -> the mean of the maxima is 18
    assert priced.makespan_before_s == pytest.approx(18.0)
    if not len(priced.moves):
        assert priced.makespan_after_s == pytest.approx(18.0)
    # topo plans on its own forecast instead: priced_on is not for it
    assert plan_problem(p, "topo", PlanOptions(priced_on=(grow,))).makespan_before_s == \
        pytest.approx(6.0)
    with pytest.raises(InvalidArgument, match="priced_on"):
        PlanOptions(priced_on=(np.array([1.0, -1.0]),))


def test_a_plan_prices_each_map_once_and_keeps_no_memo_after_it(monkeypatch):
    """Within one plan a map priced again is served from the plan's memo (the same
    figures as pricing it anew); outside a plan nothing is kept, also after a failure."""
    p = make_problem("residency-mix", ranks=6, regions=2, shards=48, seed=3)
    cal = Calibration(step_fixed_s=1e-4, per_shard_s=1e-5, halo_scale=2.0)
    other = np.roll(p.owners, 5)
    token = planners_mod._EVALS.set({})
    try:
        a = planners_mod._evaluate(p, other.copy(), p.owners, cal)
        assert planners_mod._evaluate(p, other.copy(), p.owners, cal) is a
        b = planners_mod._evaluate(p, other.copy(), None, cal)  # without the move: its own entry
        assert b is not a and b.migration_s == 0.0 and a.migration_s > 0.0
        assert planners_mod._evaluate(p, other.copy(), p.owners, None) is not a  # another model
    finally:
        planners_mod._EVALS.reset(token)
    fresh = planners_mod._evaluate_now(p, other, p.owners, cal)
    assert (fresh.makespan_s, fresh.migration_s, fresh.migration_bytes) == (
        a.makespan_s, a.migration_s, a.migration_bytes)
    np.testing.assert_array_equal(fresh.loads, a.loads)

    priced = []
    real = planners_mod._evaluate_now

    def counting(q, owners, before, c):
        priced.append((id(q), owners.tobytes(), None if before is None else before.tobytes(), id(c)))
        return real(q, owners, before, c)

    monkeypatch.setattr(planners_mod, "_evaluate_now", counting)
    opts = PlanOptions(calibration=cal, scenarios=(p.work_units * 1.5,))
    p = p.with_owners(plan_problem(p, "topo", opts).owners_after)  # near balanced: a polish too
    priced.clear()
    planners_mod._plan(p, "topo", opts, 0.0)  # the plan's work without plan_problem's memo
    repeated = len(priced) - len(set(priced))
    assert repeated > 0
    priced.clear()
    mp = plan_problem(p, "topo", opts)
    assert priced and len(priced) == len(set(priced))
    assert planners_mod._EVALS.get() is None
    p.check_residency(mp.owners_after)

    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(planners_mod, "_evaluate_now", broken)
    with pytest.raises(RuntimeError, match="boom"):
        plan_problem(p, "topo", PlanOptions(calibration=cal))
    assert planners_mod._EVALS.get() is None


def test_the_pooled_bound_equals_the_bound_of_the_ranks_at_their_speeds_alone():
    """Core-mates pooled (``pool_solo``): T* is the fractional bound at each rank's speed
    alone (or the total work over the total speed), read from the problem's own cached
    rules; priced on a copy of the problem at those speeds, it is the same."""
    import dataclasses

    from hpccloud.balance.bound import fractional_bound_s, residency_rules

    p = make_problem("residency-mix", ranks=8, regions=2, shards=64, seed=5)
    # the classes that may not leave their region carry most of the work
    home = np.isin(p.class_id, [p.class_names.index("home"), p.class_names.index("restricted")])
    p = p.with_work_units(np.where(home, 20.0, 1.0) * p.work_units)
    solo = np.array([2.0, 2.0, 1.0, 3.0, 3.0, 3.0, 1.0, 1.0])
    cal = Calibration(rank_core=(0, 0, 1, 2, 2, 2, 3, 4), pool_solo=tuple(solo))
    alone = dataclasses.replace(p, speed_units_per_s=p.speed_units_per_s * solo)
    want = max(fractional_bound_s(*residency_rules(alone)[1:4]),
               float(p.work_units.sum() / p.speed_units_per_s.sum()))
    assert planners_mod._bound_s(p, cal) == pytest.approx(want, rel=1e-12)
    assert want > float(p.work_units.sum() / p.speed_units_per_s.sum())  # the rules decided it
