"""The ``metis`` baseline: METIS k-way with speed targets, scratch-remap, residency repair."""

from __future__ import annotations

import os

import numpy as np
import pytest
from balance_testutil import problems
from hypothesis import HealthCheck, given, settings

from hpccloud.balance import PLANNERS, PlanOptions, plan_problem
from hpccloud.balance.metis import metis_owners, partition, remap, repair_residency
from hpccloud.balance.problem import Problem
from hpccloud.balance.scenarios import make_problem


def test_metis_is_registered_beside_the_other_planners():
    assert list(PLANNERS) == ["static", "even", "greedy", "metis", "topo"]


def test_partition_follows_speed_targets_and_keeps_a_chain_in_blocks():
    p = Problem.uniform(work_units=np.ones(120), owners=np.zeros(120, int), speed_units_per_s=[1.0, 2.0, 3.0])
    parts = partition(p.work_units, (p.edge_u, p.edge_v, p.edge_bytes), np.array([1.0, 2.0, 3.0]) / 6.0)
    counts = np.bincount(parts, minlength=3)
    assert np.allclose(counts, [20, 40, 60], atol=3), counts
    # a chain cut into 3 blocks cuts 2 edges (a little slack for METIS's refinement)
    assert int(np.count_nonzero(parts[1:] != parts[:-1])) <= 4


def test_a_part_too_small_to_fill_stays_empty_and_metis_prints_nothing(capfd):
    """Targets below two vertices' worth made METIS print "Cannot bisect a graph with 0
    vertices" on the job's stdout; such parts now stay empty and the rest share their targets."""
    p = Problem.uniform(work_units=np.ones(48), owners=np.zeros(48, int), speed_units_per_s=[1.0] * 4)
    frac = np.array([0.02, 0.0, 0.245, 0.735])
    parts = partition(p.work_units, (p.edge_u, p.edge_v, p.edge_bytes), frac)
    counts = np.bincount(parts, minlength=4)
    assert counts[0] == counts[1] == 0
    assert np.allclose(counts[2:], [12, 36], atol=3), counts
    out, err = capfd.readouterr()
    assert "***" not in out + err


@pytest.mark.parametrize("n_shards, n_ranks", [(3, 2), (5, 3), (7, 4), (15, 8)])
def test_fewer_than_two_shards_per_rank_still_spread_over_the_ranks(n_shards, n_ranks):
    """Found by an untuned sweep (spmv shards=7 on 4 ranks): every part was below the
    2-vertex floor, only the largest was kept, and metis put every shard on one rank."""
    p = Problem.uniform(work_units=np.ones(n_shards), owners=np.arange(n_shards) % n_ranks,
                        speed_units_per_s=np.ones(n_ranks))
    mp = plan_problem(p, "metis")
    assert np.unique(mp.owners_after).size == n_shards // 2
    assert mp.makespan_after_s <= mp.makespan_before_s + 1.0  # one shard above: the floor's price


def test_scratch_remap_gives_each_part_to_the_rank_that_holds_it():
    # the parts are the current blocks under other part numbers: nothing must move
    p = Problem.uniform(work_units=np.ones(30), owners=np.repeat([0, 1, 2], 10), speed_units_per_s=[1.0] * 3)
    parts = np.repeat([2, 0, 1], 10)
    rank_of_part = remap(parts, p.owners, np.arange(3), np.full(3, 10.0), p.work_units, p.nbytes_f64,
                         p.speed_units_per_s, 1e-9, horizon_steps=10)
    assert np.array_equal(rank_of_part[parts], p.owners)


def test_metis_on_a_balanced_map_moves_little():
    p = Problem.uniform(work_units=np.ones(400), owners=np.repeat(np.arange(4), 100),
                        speed_units_per_s=[1.0] * 4)
    owners = metis_owners(p, horizon_steps=10)
    assert np.count_nonzero(owners != p.owners) <= 40  # 10 %: only METIS's boundary choices differ


def test_residency_repair_sends_forbidden_shards_to_an_allowed_neighbour():
    p = make_problem("residency-mix", 8, 2, 256)
    home = p.class_names.index("home")
    bad = p.owners.copy()
    bad[p.class_id == home] = 7  # rank 7 is in region 1, where "home" may not live
    fixed = repair_residency(p, bad)
    assert np.all(p.allowed[p.class_id, fixed])
    assert np.array_equal(fixed[p.class_id != home], bad[p.class_id != home])


@pytest.mark.parametrize("scenario", ["hetero-speed", "residency-mix", "two-region-slow-link"])
def test_metis_balances_the_synthetic_scenarios(scenario):
    p = make_problem(scenario, 16, 2, 1600).warm()
    static = plan_problem(p, "static", PlanOptions(horizon_steps=20))
    mp = plan_problem(p, "metis", PlanOptions(horizon_steps=20))
    assert np.all(p.allowed[p.class_id, mp.owners_after])
    assert mp.makespan_after_s < static.makespan_after_s
    if scenario == "hetero-speed":
        assert mp.ratio_to_bound < 1.15


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=problems)
def test_metis_keeps_residency_and_every_shard_exactly_once(p):
    owners = metis_owners(p, horizon_steps=20)
    assert owners.shape == (p.n_shards,) and owners.dtype == np.int64
    assert np.all((owners >= 0) & (owners < p.n_ranks))
    assert np.all(p.allowed[p.class_id, owners])
    mp = plan_problem(p, "metis", PlanOptions(horizon_steps=20))
    assert np.array_equal(mp.owners_after, owners)
    assert sorted(m[0] for m in mp.moves) == np.flatnonzero(owners != p.owners).tolist()


def test_run_accepts_metis():
    from hpccloud.runner.options import balancer_names

    assert "metis" in balancer_names()


@pytest.mark.hpccloud_mpi(ranks=[3], timeout=300)
def test_metis_multi_rank_run_equals_single_rank(comm, tmp_path_factory):
    from mpi4py import MPI

    from hpccloud.comm.topology import load_topology
    from hpccloud.io.hdf5 import read_catalogue
    from hpccloud.runner import RunConfig, run

    def cfg(balancer, out):
        return RunConfig(workload="stencil2d", params={"n": 96, "grid": 6, "hot_sweeps": 3, "period": 6},
                         steps=6, rebalance_every=2, balancer=balancer, output=out, quiet=True,
                         probe_sizes=(8, 4096))

    folder = comm.bcast(str(tmp_path_factory.mktemp("metis")) if comm.Get_rank() == 0 else None)
    ref = None
    if comm.Get_rank() == 0:
        rep = run(MPI.COMM_SELF, load_topology(None, MPI.COMM_SELF), cfg("static", os.path.join(folder, "ref")))
        ref = (rep["output"]["catalogue"], rep["summary"])
    ref_cat, ref_summary = comm.bcast(ref)
    rep = run(comm, load_topology(None, comm), cfg("metis", os.path.join(folder, "metis")))
    assert len(rep["plans"]) == 2
    if comm.Get_rank() == 0:
        np.testing.assert_array_equal(read_catalogue(rep["output"]["catalogue"]), read_catalogue(ref_cat))
        assert rep["summary"] == ref_summary
