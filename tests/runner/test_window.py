"""The measurement window's per-shard work: the window's mean and its last third."""

from __future__ import annotations

import numpy as np
import pytest

from hpccloud.runner.window import RECENT_PART, Window


class _TwoRanks:
    """A sum over two ranks as this rank sees it: its own rows plus a fixed other rank's.

    ``other`` maps the other rank's shards to their (window mean, last third) seconds.
    """

    def __init__(self, other):
        self.other = other

    def Iallreduce(self, send, recv, op=None):  # noqa: N802 - mpi4py's name
        from mpi4py import MPI

        recv[...] = send
        for sid, (w, r) in self.other.items():
            recv[0, sid] += w
            recv[1, sid] += r
        return MPI.REQUEST_NULL  # complete at once: the sleeping wait returns at its first test


def test_shard_work_is_the_window_mean_and_the_last_third_times_the_rank_rate():
    w = Window()
    for k in range(9):  # shard 0 grows 1, 2, ... 9 ms per step; shard 1 stays at 4 ms
        w.add({}, {0: (k + 1) * 1e-3, 1: 4e-3})
    other = {2: (2e-3, 3e-3)}  # rank 1's shard 2: window mean 2 ms, last third 3 ms
    window, recent = w.shard_work(_TwoRanks(other), 3, owners=np.array([0, 0, 1]),
                                  wall=np.array([1000.0, np.nan]), fallback=np.array([1.0, 500.0]))
    last = 9 // RECENT_PART
    assert window.tolist() == pytest.approx([5.0, 4.0, 1.0])
    assert recent.tolist() == pytest.approx([np.mean(np.arange(10 - last, 10)), 4.0, 1.5])


def test_a_one_step_window_has_its_step_as_the_recent_work():
    w = Window()
    w.add({}, {0: 2e-3})
    window, recent = w.shard_work(_TwoRanks({}), 1, owners=np.array([0]), wall=np.array([100.0, 1.0]),
                                  fallback=np.ones(2))
    assert window.tolist() == recent.tolist() == pytest.approx([0.2])
    w.reset()
    assert not w.shard_steps and not w.steps


def test_shard_work_is_the_shards_cpu_time_where_the_rank_has_a_cpu_rate():
    # rank 0 shares its core: one of its two equal shards was switched out for another
    # rank's 4 ms time slice in the middle of most of its calls; CPU time does not see it
    w = Window()
    for k in range(10):
        w.add({}, {0: 1e-3 + (4e-3 if k % 3 else 0.0), 1: 1e-3}, {0: 1e-3, 1: 1e-3})
    other = {2: (2e-3, 2e-3)}  # rank 1: wall seconds only (no CPU rate)
    window, recent = w.shard_work(_TwoRanks(other), 3, owners=np.array([0, 0, 1]),
                                  wall=np.array([200.0, 500.0]), fallback=np.ones(2),
                                  cpu=np.array([1000.0, np.nan]))
    assert window.tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert recent.tolist() == pytest.approx([1.0, 1.0, 1.0])
    # without CPU figures the wall clock's time slices are the shard's work
    wall_window, _ = w.shard_work(_TwoRanks(other), 3, owners=np.array([0, 0, 1]),
                                  wall=np.array([200.0, 500.0]), fallback=np.ones(2))
    assert wall_window[0] > 3 * wall_window[1]


def test_a_rank_with_a_shard_without_cpu_samples_is_measured_by_wall_time_alone():
    w = Window()
    for _ in range(4):
        w.add({}, {0: 2e-3, 1: 1e-3}, {0: 2e-3})  # shard 1's CPU time was not recorded
    window, _ = w.shard_work(_TwoRanks({}), 2, owners=np.array([0, 0]), wall=np.array([100.0]),
                             fallback=np.ones(1), cpu=np.array([300.0]))
    assert window.tolist() == pytest.approx([0.2, 0.1])  # both by wall: the rank's units add up
