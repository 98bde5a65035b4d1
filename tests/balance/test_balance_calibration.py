"""The calibrated cost model: terms recovered from noisy records; the gate decides on calibrated figures."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from balance_testutil import problems
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpccloud.balance import PlanOptions, lower_bound_s, plan_problem
from hpccloud.balance.bound import count_bound_s
from hpccloud.balance.calibration import (
    IDENTITY,
    ROUTES,
    Calibration,
    MigrationSample,
    StepSample,
    fit,
    fit_step_makespan,
    relative_error,
)
from hpccloud.balance.model import compute_s, halo_s, migration_schedule
from hpccloud.balance.problem import Problem
from hpccloud.balance.scenarios import make_problem
from hpccloud.errors import InvalidArgument


def test_step_terms_recovered_from_noisy_records():
    rng = np.random.default_rng(1)
    truth = Calibration(step_fixed_s=1.5e-3, per_shard_s=2e-4, compute_scale=1.25, halo_scale=0.6)
    samples = []
    for _ in range(40):  # 40 steps × 4 ranks, 3 % multiplicative noise on the achieved times
        c, h, n = rng.uniform(2e-3, 3e-2, 4), rng.uniform(0.0, 8e-3, 4), rng.integers(1, 40, 4)
        samples.append(StepSample(c, h, n, truth.step_s(c, h, n) * rng.lognormal(0.0, 0.03, 4)))
    got = fit(samples)
    for name in ("step_fixed_s", "per_shard_s", "compute_scale", "halo_scale"):
        assert getattr(got, name) == pytest.approx(getattr(truth, name), rel=0.15), name
    assert got.samples == 160
    pred = np.concatenate([got.step_s(s.compute_s, s.halo_s, s.n_shards) for s in samples])
    assert relative_error(pred, np.concatenate([s.achieved_s for s in samples])) < 0.05


def test_step_terms_recovered_from_step_walls_when_every_rank_reads_the_slowest():
    """A collective inside the step (k-means' reduction): every rank's own time is
    the slowest rank's, so per-rank times do not follow each rank's terms. Fitted
    on the steps' wall times against the model's slowest rank, the terms come
    back; fitted per rank, the compute term is lost."""
    rng = np.random.default_rng(4)
    truth = Calibration(step_fixed_s=1e-3, per_shard_s=2e-4, compute_scale=1.3, halo_scale=0.6)
    samples, walls = [], []
    for _ in range(6):  # 6 windows (maps) × 8 steps, 3 % noise on the step's wall time
        c, h, n = rng.uniform(2e-3, 3e-2, 4), rng.uniform(0.0, 8e-3, 4), rng.integers(1, 40, 4)
        for _ in range(8):
            wall = float(truth.step_s(c, h, n).max()) * rng.lognormal(0.0, 0.03)
            samples.append(StepSample(c, h, n, np.full(4, wall)))
            walls.append(wall)
    got = fit_step_makespan(samples, walls)
    assert got.compute_scale == pytest.approx(1.3, rel=0.15)
    assert got.per_shard_s == pytest.approx(2e-4, rel=0.15)
    assert got.halo_scale == pytest.approx(0.6, rel=0.25)
    # the fixed term (1 ms of a 5-40 ms step) is the least determined: the others' error lands there
    assert 0.0 <= got.step_fixed_s < 2.5e-3
    assert got.samples == 48
    pred = np.array([got.step_s(s.compute_s, s.halo_s, s.n_shards).max() for s in samples])
    assert relative_error(pred, np.array(walls)) < 0.05
    assert fit(samples).compute_scale < 0.8  # the per-rank fit: why the runner does not use it


def test_step_makespan_fit_keeps_the_prior_split_when_the_map_never_changes():
    """One map all run long: every step has the same terms, so only their sum is
    known; the fit scales towards the wall time without zeroing a term."""
    c, h, n = np.array([0.0058, 0.0053, 0.0026]), np.zeros(3), np.array([11.0, 10.0, 11.0])
    rng = np.random.default_rng(5)
    walls = list(0.0066 * rng.lognormal(0.0, 0.02, 40))
    got = fit_step_makespan([StepSample(c, h, n, np.full(3, w)) for w in walls], walls)
    assert got.compute_scale > 0.9
    pred = float(got.step_s(c, h, n).max())
    assert pred == pytest.approx(float(np.median(walls)), rel=0.03)
    assert fit_step_makespan([], []) == IDENTITY
    with pytest.raises(InvalidArgument, match="2 step samples but 1 wall"):
        fit_step_makespan([StepSample(c, h, n, c)] * 2, [0.1])


def test_migration_terms_recovered_from_noisy_records():
    rng = np.random.default_rng(2)
    route = np.array([1 / 8e9, 1 / 2e9, 1 / 2e8])  # same host, same region, across regions
    fixed_s, call_s = 4e-3, 3e-4
    samples = []
    for _ in range(30):
        b = rng.uniform(0, 6e7, 3) * (rng.random(3) < 0.8)
        calls = int(rng.integers(1, 60))
        t = (fixed_s + call_s * calls + float(b @ route)) * rng.lognormal(0.0, 0.03)
        samples.append(MigrationSample(tuple(b), calls, t, pack_s=2e-10 * b.sum(), plan_s=0.02,
                                       total_bytes=float(b.sum())))
    got = fit(migrations=samples)
    assert got.migration_fixed_s == pytest.approx(fixed_s, rel=0.3)
    assert got.per_call_s == pytest.approx(call_s, rel=0.3)
    assert np.allclose(got.route_s_per_byte, route, rtol=0.15)
    assert got.pack_s_per_byte == pytest.approx(2e-10)
    assert got.plan_fixed_s == pytest.approx(0.02)


def test_terms_no_sample_exercises_keep_the_prior():
    prior = Calibration(halo_scale=0.7, route_s_per_byte=(1e-9, float("nan"), 5e-9))
    c = np.array([0.01, 0.02])
    # no halo; compute proportional to shard count: the data cannot split them, the prior does
    got = fit([StepSample(c, np.zeros(2), np.array([1, 2]), c * 1.1)] * 3, prior=prior)
    assert got.halo_scale == 0.7
    assert got.compute_scale > 0.5  # the prior's split (compute, not dispatch) is kept near
    assert np.allclose(got.step_s(c, np.zeros(2), np.array([1, 2])), c * 1.1, rtol=1e-3)
    got = fit(migrations=[MigrationSample((0.0, 1e6, 0.0), 2, 1e-3)], prior=prior)
    assert got.route_s_per_byte[0] == 1e-9 and got.route_s_per_byte[2] == 5e-9
    assert np.isfinite(got.route_s_per_byte[1])


def test_calibration_json_round_trip_and_bad_values():
    cal = Calibration(step_fixed_s=1e-3, route_s_per_byte=(1e-10, float("nan"), 1e-8), rank_host=(0, 0, 1),
                      fresh_s_per_byte=1e-9, rank_core=(0, 1, 1), warm_io_bytes=(1e6, 0.0, 2e6), unpack_copies=1.0)
    again = Calibration.from_json(cal.to_json())
    assert again.to_json() == cal.to_json()
    assert cal.to_json()["route_s_per_byte"]["same_region"] is None
    with pytest.raises(InvalidArgument, match="step_fixed_s"):
        Calibration(step_fixed_s=-1.0)
    with pytest.raises(InvalidArgument, match="fresh_s_per_byte"):
        Calibration(fresh_s_per_byte=float("nan"))
    with pytest.raises(InvalidArgument, match="unknown key"):
        Calibration.from_json({"step_fixd_s": 1.0})


def test_routes_and_pair_times_use_achieved_throughput():
    p = make_problem("hetero-speed", 4, 2, 40)  # ranks 0, 1 in region 0; 2, 3 in region 1
    cal = Calibration(per_call_s=1e-3, route_s_per_byte=(1e-10, float("nan"), 1e-8), rank_host=(0, 0, 0, 1))
    src, dst = np.array([0, 0, 2]), np.array([1, 2, 3])
    assert cal.route_of(p, src, dst).tolist() == [0, 2, 1]
    t = cal.pair_s(p, src, dst, np.array([2, 1, 1]), np.array([1e6, 1e6, 1e6]))
    assert t[0] == pytest.approx(2e-3 + 1e-4) and t[1] == pytest.approx(1e-3 + 1e-2)
    # same region was never measured: the link model's α + n/β
    alpha, inv_beta = p.link_terms(np.array([2]), np.array([3]))
    assert t[2] == pytest.approx(alpha[0] + 1e6 * inv_beta[0])
    with pytest.raises(InvalidArgument, match="rank_host"):
        Calibration(rank_host=(0, 1)).route_of(p, src, dst)


def test_plan_prices_steps_and_migration_on_the_calibration():
    p = make_problem("hetero-speed", 8, 2, 160).warm()
    cal = Calibration(step_fixed_s=2e-3, per_shard_s=1e-4, compute_scale=1.2, halo_scale=0.5,
                      migration_fixed_s=0.05, per_call_s=1e-4, pack_s_per_byte=1e-10,
                      route_s_per_byte=(float("nan"), 2e-10, 2e-9), plan_fixed_s=0.01)
    mp = plan_problem(p, "greedy", PlanOptions(horizon_steps=50, calibration=cal))
    n = np.bincount(mp.owners_after, minlength=p.n_ranks)
    want = cal.step_s(compute_s(p, mp.owners_after), halo_s(p, mp.owners_after), n).max()
    assert mp.makespan_after_s == pytest.approx(want)
    sched, nbytes, _ = migration_schedule(p, p.owners, mp.owners_after, pair_s=lambda *a: cal.pair_s(p, *a))
    assert mp.migration_s == pytest.approx(sched + 0.05 + 1e-10 * nbytes)
    # the bound: the scaled compute bound, or the count bound with each shard's dispatch
    counted = count_bound_s(p.work_units, p.speed_units_per_s, 1e-4, 1.2)
    assert mp.lower_bound_s == pytest.approx(2e-3 + max(1.2 * p.memo("lower_bound_s", lower_bound_s), counted))
    assert counted > 1.2 * p.memo("lower_bound_s", lower_bound_s)  # whole shards: this one decides
    assert mp.lower_bound_s <= mp.makespan_after_s
    doc = mp.to_json(include_owners=False)
    assert doc["calibration"]["compute_scale"] == 1.2
    assert doc["predicted_rebalance_wall_s"] == pytest.approx(0.01 + mp.migration_s)


def test_a_costly_rebalance_closes_the_gate_that_raw_links_would_open():
    p = make_problem("hetero-speed", 8, 2, 160).warm()
    opts = PlanOptions(horizon_steps=20)
    raw = plan_problem(p, "topo", opts)
    assert raw.gate_passed and raw.moves
    gain_s = raw.makespan_before_s - raw.makespan_after_s
    cal = Calibration(migration_fixed_s=2.0 * gain_s * opts.horizon_steps)  # measured: moving costs that much
    mp = plan_problem(p, "topo", PlanOptions(horizon_steps=20, calibration=cal))
    assert not mp.gate_passed and not mp.moves


def test_pooled_cores_close_the_gate_on_moves_between_core_mates_only():
    # 4 ranks, two per core, each pair at half its core's speed; the ranks of core 0 hold
    # 12 and 4 shards, core 1's 8 and 8: rank by rank the step is 12, pooled per core 8
    # (both cores equal). Balancing rank 0 against rank 1 gains nothing pooled.
    p = Problem.uniform(work_units=np.ones(32), owners=[0] * 12 + [1] * 4 + [2] * 8 + [3] * 8,
                        speed_units_per_s=[1.0] * 4, alpha_s=0.0, beta_bytes_per_s=1e12)
    cal = Calibration(rank_core=(0, 0, 1, 1))
    per_rank = plan_problem(p, "topo", PlanOptions(horizon_steps=50, calibration=cal))
    assert per_rank.gate_passed and per_rank.moves
    pool = Calibration(rank_core=(0, 0, 1, 1), pool_solo=(2.0,) * 4)
    pooled = plan_problem(p, "topo", PlanOptions(horizon_steps=50, calibration=pool))
    assert not pooled.gate_passed and not pooled.moves
    # core 0 with 20 units against core 1's 12: pooled, moving work across cores still pays
    q = Problem.uniform(work_units=np.ones(32), owners=[0] * 16 + [1] * 4 + [2] * 6 + [3] * 6,
                        speed_units_per_s=[1.0] * 4, alpha_s=0.0, beta_bytes_per_s=1e12)
    across = plan_problem(q, "topo", PlanOptions(horizon_steps=50, calibration=pool))
    assert across.gate_passed
    core = np.array([0, 0, 1, 1])
    assert np.any(core[across.owners_after] != core[q.owners])  # work left core 0
    with pytest.raises(InvalidArgument, match="pool_solo"):
        Calibration(rank_core=(0, 0, 1, 1), pool_solo=(2.0, 0.5, 2.0, 2.0))
    with pytest.raises(InvalidArgument, match="rank_core names 3 ranks, the problem has 4"):
        plan_problem(q, "topo", PlanOptions(calibration=Calibration(rank_core=(0, 0, 1),
                                                                    pool_solo=(2.0, 2.0, 1.0))))


calibrations = st.builds(
    Calibration,
    step_fixed_s=st.floats(0, 1e-2), per_shard_s=st.floats(0, 1e-3), compute_scale=st.floats(0.2, 5.0),
    halo_scale=st.floats(0.0, 3.0), migration_fixed_s=st.floats(0, 10.0), per_call_s=st.floats(0, 1e-2),
    pack_s_per_byte=st.floats(0, 1e-8),
    route_s_per_byte=st.tuples(*[st.one_of(st.just(float("nan")), st.floats(1e-12, 1e-6))] * len(ROUTES)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=problems, cal=calibrations, horizon=st.sampled_from([1, 5, 100, 10_000]))
def test_gate_never_opens_when_calibrated_gain_times_horizon_is_below_calibrated_cost(p: Problem, cal, horizon):
    mp = plan_problem(p, "topo", PlanOptions(horizon_steps=horizon, calibration=cal))
    gain_s = mp.makespan_before_s - mp.makespan_after_s
    # the cost the gate compared is the calibrated one (schedule on achieved throughput + fixed + pack)
    if mp.moves:
        sched, nbytes, _ = migration_schedule(p, p.owners, mp.owners_after, pair_s=lambda *a: cal.pair_s(p, *a))
        assert mp.migration_s == pytest.approx(sched + cal.migration_extra_s(nbytes))
    if gain_s * horizon <= mp.migration_s:
        assert not mp.gate_passed and not mp.moves
    if mp.gate_passed:
        assert gain_s * horizon > mp.migration_s
    assert np.all(p.allowed[p.class_id, mp.owners_after])
    assert IDENTITY.samples == 0


def test_fresh_memory_is_priced_on_the_senders_then_the_receivers_busiest_core_group():
    p = make_problem("hetero-speed", 4, 2, 40).warm()
    before = p.owners.copy()
    after = before.copy()
    moved = np.flatnonzero(before == 0)[:3]  # three shards from rank 0: two to rank 2, one to rank 3
    after[moved] = [2, 2, 3]
    nb = p.nbytes_f64[moved]
    sent = np.array([nb.sum(), 0.0, 0.0, 0.0])
    received = np.array([0.0, 0.0, nb[:2].sum(), nb[2]])
    # nothing touched yet, every rank on its own core: rank 0 packs and sends, then the
    # busiest receiver's buffers fill
    cold = Calibration(fresh_s_per_byte=1e-9)
    assert cold.fresh_s(p, before, after, moved) == pytest.approx(1e-9 * (nb.sum() + received.max()))
    # ranks 2 and 3 share a core: they fault one after another
    shared = Calibration(fresh_s_per_byte=1e-9, rank_core=(0, 1, 2, 2))
    assert shared.fresh_s(p, before, after, moved) == pytest.approx(1e-9 * 2 * nb.sum())
    # an unpack that copies: the receivers touch their bytes twice
    copies = Calibration(fresh_s_per_byte=1e-9, rank_core=(0, 1, 2, 2), unpack_copies=1.0)
    assert copies.fresh_s(p, before, after, moved) == pytest.approx(1e-9 * 3 * nb.sum())
    # memory a rank touched in an earlier move is warm: only the bytes beyond it are fresh
    touched = sent + received
    warm = Calibration(fresh_s_per_byte=1e-9, rank_core=(0, 1, 2, 0),
                       warm_io_bytes=tuple(touched - [1e3, 0, 0, 0]))
    assert warm.fresh_s(p, before, after, moved) == pytest.approx(1e-9 * 1e3)
    assert Calibration(fresh_s_per_byte=1e-9, warm_io_bytes=tuple(touched)).fresh_s(p, before, after, moved) == 0.0
    # a rank half warm: half of each of its sides is fresh
    half = Calibration(fresh_s_per_byte=1e-9, warm_io_bytes=(0.0, 0.0, 0.5 * received[2], 0.0))
    assert half.fresh_s(p, before, after, moved) == pytest.approx(
        1e-9 * (nb.sum() + max(0.5 * received[2], received[3])))
    assert cold.fresh_s(p, before, before, np.zeros(0, np.int64)) == 0.0
    # the planners price it: the same plan costs the fresh bytes more when nothing is warm
    base = Calibration(migration_fixed_s=1e-3, route_s_per_byte=(1e-10,) * 3)
    opts = {"horizon_steps": 50}
    m0 = plan_problem(p, "greedy", PlanOptions(calibration=base, **opts))
    m1 = plan_problem(p, "greedy", PlanOptions(calibration=dataclasses.replace(base, fresh_s_per_byte=1e-9), **opts))
    assert m0.moves and np.array_equal(m0.owners_after, m1.owners_after)
    moved = np.flatnonzero(p.owners != m0.owners_after)
    sent = np.bincount(p.owners[moved], p.nbytes_f64[moved], p.n_ranks)
    received = np.bincount(m0.owners_after[moved], p.nbytes_f64[moved], p.n_ranks)
    assert m1.migration_s - m0.migration_s == pytest.approx(1e-9 * (sent.max() + received.max()))


def test_pooled_compute_is_shared_by_core_mates_and_its_scale_held_on_one_map():
    """``pool_solo``: ranks of one core group are priced on the group's compute (Σ C·v / Σ v,
    never below C / solo); on records of one map (every step the same shards per rank, a
    hot spot's wander the only change) the fit keeps compute_scale near 1 and finds the
    fixed and per-shard terms beside it."""
    core, solo = (0, 0, 0, 1), (3.0, 3.0, 3.0, 1.0)
    truth = Calibration(step_fixed_s=8e-4, per_shard_s=3e-5, compute_scale=1.0, halo_scale=0.0,
                        rank_core=core, pool_solo=solo)
    v = np.array([1.0, 1.0, 1.0, 3.0])
    pooled = truth.compute_as_run([6e-3, 3e-3, 0.0, 2e-3], v)
    np.testing.assert_allclose(pooled, [3e-3, 3e-3, 3e-3, 2e-3])
    assert truth.compute_as_run([6e-3, 3e-3, 0.0, 9e-3], v)[3] == 9e-3  # rank 3 alone on its core
    rng = np.random.default_rng(4)
    n = np.array([22.0, 12.0, 4.0, 26.0])
    steps, walls, windows = [], [], []
    for _window in range(4):  # 4 windows of 10 steps, one map
        for _ in range(10):
            c = np.array([3.5e-3, 2.5e-3, 1.0e-3, 2.0e-3]) * rng.uniform(0.7, 1.3, 4)
            c_run = truth.compute_as_run(c, v)
            wall = float(truth.step_s(c_run, np.zeros(4), n).max()) * rng.lognormal(0.0, 0.03)
            steps.append(StepSample(c_run, np.zeros(4), n, np.full(4, wall)))
            walls.append(wall)
        windows += [float(np.median(walls[-10:]))] * 10
    prior = Calibration(rank_core=core, pool_solo=solo)
    got = fit_step_makespan(steps, walls, prior=prior, window_s=windows)
    assert got.compute_scale == pytest.approx(1.0, abs=0.1)
    assert got.step_fixed_s + got.per_shard_s * 26 == pytest.approx(8e-4 + 3e-5 * 26, rel=0.35)
    assert got.pool_solo == solo and Calibration.from_json(got.to_json()).pool_solo == solo
    for bad in ({"pool_solo": solo}, {"rank_core": core, "pool_solo": (3.0, 3.0, 0.5, 1.0)},
                {"rank_core": core, "pool_solo": (3.0, 3.0)}):
        with pytest.raises(InvalidArgument, match="pool_solo"):
            Calibration(**bad)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=problems, seed=st.integers(0, 2**16))
def test_the_bound_holds_where_core_mates_share_their_compute(p: Problem, seed):
    """With pooled compute a shard runs faster than its rank's share and a rank may hold
    fewer whole shards than the count bound assumes: the bound topo stops at is the
    fractional one, below every map's pooled makespan."""
    rng = np.random.default_rng(seed)
    core = tuple(int(x) for x in rng.integers(0, max(1, p.n_ranks // 2), p.n_ranks))
    counts = np.bincount(core)
    cal = Calibration(step_fixed_s=1e-4, per_shard_s=rng.uniform(0, 1e-3), rank_core=core,
                      pool_solo=tuple(float(counts[c]) for c in core))
    mp = plan_problem(p, "topo", PlanOptions(horizon_steps=20, calibration=cal))
    assert mp.lower_bound_s <= mp.makespan_before_s * (1 + 1e-12)
    assert mp.lower_bound_s <= mp.makespan_after_s * (1 + 1e-12)
    for _ in range(3):  # any map that keeps residency
        owners = np.array([rng.choice(np.flatnonzero(p.allowed[c])) for c in p.class_id])
        other = plan_problem(p.with_owners(owners), "static", PlanOptions(calibration=cal))
        assert mp.lower_bound_s <= other.makespan_before_s * (1 + 1e-12)
