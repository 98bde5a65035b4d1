"""Rebalance points skipped while plans find nothing to move (``runner.loop.Deferral``), no MPI."""

from hpccloud.runner.loop import Deferral


def steps(active_s, n=10):
    return [{"active_s": active_s}] * n


def test_idle_plans_double_the_gap_and_a_move_resets_it():
    d = Deferral()
    d.planned(0, steps(0.010))
    assert not d.skip(steps(0.010))  # one idle plan: every point still taken
    skipped = []
    for _ in range(3):  # idle plans 2, 3, 4: skip 1, then 3, then 7 points
        d.planned(0, steps(0.010))
        n = 0
        while d.skip(steps(0.010)):
            n += 1
        skipped.append(n)
    assert skipped == [1, 3, 7]
    d.planned(5, steps(0.010))  # a plan that moves: back to every point
    assert d.idle == 0 and not d.skip(steps(0.010))


def test_a_drifting_step_time_takes_the_point_after_all():
    d = Deferral()
    noisy = [{"active_s": 0.010 + 0.0002 * (i % 3)} for i in range(10)]
    d.planned(0, noisy)
    d.planned(0, noisy)
    assert d.band is not None and d.band[0] < 0.010 < d.band[1]
    assert not d.skip(steps(0.012))  # slower by 20 %: outside the band, plan now
    assert d.skips_left == 0 and not d.skip(steps(0.010))
    d.planned(0, noisy)  # idle again (3 in a row): the band is the new window's
    assert d.skip(steps(0.0101)) and not d.skip(steps(0.008))  # faster counts as drift too


def test_nothing_is_skipped_without_a_judged_window():
    d = Deferral()
    d.planned(0, [])
    d.planned(0, [])
    assert not d.skip(steps(0.010))
    d.planned(0, steps(0.010))
    d.planned(0, steps(0.010))
    assert not d.skip([])


def test_a_move_that_saves_less_than_its_plan_costs_counts_as_idle():
    d = Deferral()
    d.planned(0, steps(0.010))
    # moved, predicted 1 ms a step over 10 steps less a 9 ms move: 1 ms, below a 15 ms plan
    d.planned(4, steps(0.010), net_s=0.001, gain_s=0.001, plan_s=0.015)
    assert d.idle == 2
    assert d.skip(steps(0.009))  # the step the move predicted: in the band
    d = Deferral()
    d.planned(0, steps(0.010))
    d.planned(4, steps(0.010), net_s=0.020, gain_s=0.003, plan_s=0.015)  # saves more than the plan
    assert d.idle == 0 and not d.skip(steps(0.010))
