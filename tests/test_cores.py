"""Core groups from hosts and CPU affinities, and the rates the planner gets from them."""

import numpy as np
import pytest

from hpccloud.measure.cores import CoreShares, discover_cores, planner_rates, this_cpus


def test_ranks_pinned_to_one_core_form_a_group_and_split_it():
    cs = CoreShares.from_ranks(["n"] * 4, [{1}, {0}, {0}, {0}], [1, 1, 1, 1])
    assert cs.group.tolist() == [0, 1, 1, 1]
    np.testing.assert_allclose(cs.cores_per_rank(), [1, 1 / 3, 1 / 3, 1 / 3])
    assert cs.oversubscribed.tolist() == [False, True, True, True]


def test_overlap_is_transitive_and_hosts_separate_groups():
    # 0-1 overlap on cpu 1, 1-2 on cpu 2: one group of 3 cpus; rank 3 has the same cpus
    # on another host, so it is a group of its own
    cs = CoreShares.from_ranks(["a", "a", "a", "b"], [{0, 1}, {1, 2}, {2}, {0, 1, 2}], [2, 2, 2, 2])
    assert cs.group.tolist() == [0, 0, 0, 1]
    assert cs.group_cores.tolist() == [3, 3, 3, 3]
    assert cs.group_threads.tolist() == [6, 6, 6, 2]
    np.testing.assert_allclose(cs.cores_per_rank(), [1, 1, 1, 2])
    assert cs.oversubscribed.tolist() == [True, True, True, False]


def test_ranks_with_their_own_cores_keep_wall_rates():
    cs = CoreShares.from_ranks(["a", "a"], [{0}, {1}], [1, 1])
    wall, cpu = np.array([3.0, 5.0]), np.array([30.0, 50.0])
    assert planner_rates(wall, cpu, cs).tolist() == [3.0, 5.0]
    assert planner_rates(wall, cpu, None).tolist() == [3.0, 5.0]


def test_oversubscribed_ranks_get_cpu_rate_times_their_cores():
    # 4 ranks, 3 cores: ranks 0 and 1 pinned to cores {0, 1} alike, rank 2 to {1, 2}, rank 3
    # to {2}: one group (the sets overlap), but only 0 and 1 are twins
    cs = CoreShares.from_ranks(["a"] * 4, [{0, 1}, {0, 1}, {1, 2}, {2}], [1, 1, 1, 1])
    got = planner_rates(np.array([1.0, 2.0, 3.0, np.nan]), np.array([9.0, 6.0, 4.0, np.nan]), cs)
    np.testing.assert_allclose(got[2], 4.0 * 3 / 4)
    assert np.isnan(got[3])  # no measurement: the caller falls back to its previous rate


def test_twins_get_their_pooled_rate_by_cpu_seconds():
    """Twins (one host, CPU set, threads) run at one speed: what one window's time slices
    gave each is noise, so each gets their units over their CPU seconds, and a twin without
    a shard the same."""
    cs = CoreShares.from_ranks(["a"] * 4, [{0}, {0}, {0}, {1}], [1, 1, 1, 1])
    wall, cpu = np.array([3.0, 2.0, np.nan, 7.0]), np.array([12.0, 6.0, np.nan, 7.5])
    got = planner_rates(wall, cpu, cs, cpu_s=np.array([1.0, 2.0, 0.0, 1.0]))
    np.testing.assert_allclose(got, [8.0 / 3, 8.0 / 3, 8.0 / 3, 7.0])  # (12 + 12) / 3 s on 1/3 core
    # equal weights without the CPU seconds
    np.testing.assert_allclose(planner_rates(wall, cpu, cs)[:3], 3.0)


def _groups_pairwise(hosts, cpus):
    """The groups by definition: ranks joined where host and a CPU are shared, transitively."""
    n = len(hosts)
    label = list(range(n))
    changed = True
    while changed:
        changed = False
        for i in range(n):
            for j in range(n):
                if hosts[i] == hosts[j] and cpus[i] & cpus[j] and label[j] > label[i]:
                    label[j], changed = label[i], True
    order = {x: k for k, x in enumerate(sorted(set(label)))}
    return [order[x] for x in label]


def test_groups_match_the_pairwise_definition():
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(1, 12))
        hosts = [str(h) for h in rng.integers(0, 3, n)]
        cpus = [set(rng.choice(6, int(rng.integers(1, 3)), replace=False).tolist()) for _ in range(n)]
        cs = CoreShares.from_ranks(hosts, cpus, [1] * n)
        assert cs.group.tolist() == _groups_pairwise(hosts, cpus), (hosts, cpus)


def test_groups_of_a_hundred_thousand_ranks():
    # 1,000 nodes of 100 ranks, each on a core of its own but the last two of a node pinned
    # together: the groups come without a rank-by-rank table (10^10 pairs)
    hosts = [f"n{r // 100}" for r in range(100_000)]
    cpus = [{min(r % 100, 98)} for r in range(100_000)]
    cs = CoreShares.from_ranks(hosts, cpus, [1] * 100_000)
    assert cs.group.max() == 99 * 1000 - 1
    assert int(cs.oversubscribed.sum()) == 2 * 1000
    assert cs.group[98] == cs.group[99] != cs.group[97]


def test_bad_lengths_are_refused():
    with pytest.raises(ValueError, match="one entry per rank"):
        CoreShares.from_ranks(["a", "b"], [{0}], [1, 1])


@pytest.mark.hpccloud_mpi(ranks=[2, 3], timeout=60)
def test_discovery_is_the_same_on_every_rank(comm):
    cs = discover_cores(comm, 1)
    docs = comm.allgather(cs.to_json())
    assert all(d == docs[0] for d in docs)
    assert sorted(cs.cpus[comm.Get_rank()]) == sorted(this_cpus())
    assert len(cs.hosts) == comm.Get_size() and set(cs.threads) == {1}
