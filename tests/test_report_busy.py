"""The report's busy time on each rank's share of the cores (ranks that share cores)."""

import numpy as np
import pytest

from hpccloud.measure.cores import CoreShares
from hpccloud.report import busy_per_core, core_busy

STEPS = [{"busy_s": [1.0, 1.0, 1.0, 3.0], "busy_cpu_s": [1.0, 0.9, 1.1, 2.9]},
         {"busy_s": [2.0, 1.0, 1.0, 3.0], "busy_cpu_s": [1.0, 1.0, 1.0, 3.1]}]


def test_ranks_sharing_a_core_count_their_cpu_time_over_their_share():
    cs = CoreShares.from_ranks(["h"] * 4, [{0}, {0}, {0}, {1}], [1] * 4)
    got = core_busy(STEPS, cs, 4)
    # ranks 0-2 share core 0 (a third each): CPU seconds x 3; rank 3 has core 1: wall seconds
    assert got.tolist() == pytest.approx([6.0, 5.7, 6.3, 6.0])


def test_ranks_with_cores_of_their_own_keep_their_wall_time():
    cs = CoreShares.from_ranks(["h"] * 4, [{0}, {1}, {2}, {3}], [1] * 4)
    assert core_busy(STEPS, cs, 4).tolist() == pytest.approx([3.0, 2.0, 2.0, 6.0])
    assert core_busy(STEPS, None, 4).tolist() == pytest.approx([3.0, 2.0, 2.0, 6.0])


def test_a_rank_without_cpu_time_and_a_run_without_steps():
    cs = CoreShares.from_ranks(["h"] * 2, [{0}, {0}], [1, 1])
    st = [{"busy_s": [0.5, 0.0], "busy_cpu_s": [0.25, 0.0]}]
    assert core_busy(st, cs, 2).tolist() == pytest.approx([0.5, 0.0])
    assert core_busy([], cs, 2).tolist() == [0.0, 0.0]
    assert np.array_equal(core_busy([{"busy_s": [1.0, 2.0]}], cs, 2), [2.0, 4.0])  # no CPU column: wall time stands in


def test_per_core_busy_pools_the_ranks_that_share_a_core():
    cs = CoreShares.from_ranks(["h"] * 4, [{0}, {0}, {0}, {1}], [1] * 4)
    # core 0 holds ranks 0-2: 1.0 + 0.9 + 1.1 + 1.0 + 1.0 + 1.0 CPU seconds, whatever their split;
    # core 1 is rank 3's own: its wall seconds
    assert busy_per_core(STEPS, cs, 4).tolist() == pytest.approx([6.0, 6.0])
    uneven = [{"busy_s": [0.1, 0.1, 5.0, 6.0], "busy_cpu_s": [0.5, 0.5, 5.0, 6.0]}]
    assert core_busy(uneven, cs, 4).max() / core_busy(uneven, cs, 4).mean() > 1.5  # the split shows
    assert busy_per_core(uneven, cs, 4).tolist() == pytest.approx([6.0, 6.0])  # the cores are level


def test_per_core_busy_counts_every_core_of_a_group_and_every_thread_of_a_rank():
    # ranks 0-2 share cores 0 and 1 (3 threads on 2 cores); rank 3 runs 2 threads on cores 2-3
    cs = CoreShares.from_ranks(["h"] * 4, [{0, 1}, {0, 1}, {0, 1}, {2, 3}], [1, 1, 1, 2])
    st = [{"busy_s": [9.0, 9.0, 9.0, 2.0], "busy_cpu_s": [2.0, 2.0, 4.0, 4.0]}]
    assert busy_per_core(st, cs, 4).tolist() == pytest.approx([4.0, 4.0, 2.0, 2.0])
    # no core figures: each rank is a core, its wall time
    assert busy_per_core(st, None, 4).tolist() == pytest.approx([9.0, 9.0, 9.0, 2.0])
    assert busy_per_core([], cs, 4).tolist() == [0.0, 0.0, 0.0, 0.0]


def test_per_core_busy_of_ranks_that_float_over_all_cores_is_level_by_construction():
    # 4 unpinned ranks on a 2-core node: one group, so both cores read the group's mean
    cs = CoreShares.from_ranks(["h"] * 4, [{0, 1}] * 4, [1] * 4)
    got = busy_per_core([{"busy_s": [3.0, 1.0, 1.0, 1.0], "busy_cpu_s": [3.0, 1.0, 1.0, 1.0]}], cs, 4)
    assert got.tolist() == pytest.approx([3.0, 3.0])
