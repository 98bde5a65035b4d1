"""The report's busy time on each rank's share of the cores (ranks that share cores)."""

import numpy as np
import pytest

from hpccloud.measure.cores import CoreShares
from hpccloud.report import core_busy

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
