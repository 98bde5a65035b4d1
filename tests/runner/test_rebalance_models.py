"""The rebalance stage's models from a window: the shards' work is measured in CPU time."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from hpccloud.measure.speed import SpeedModel
from hpccloud.runner.rebalance import measured_models
from hpccloud.runner.window import Window
from hpccloud.shards import block_1d


class _OneRank:
    """A communicator of one rank for the window's sleeping allreduce."""

    def Iallreduce(self, send, recv, op=None):  # noqa: N802 - mpi4py's name
        from mpi4py import MPI

        recv[...] = send
        return MPI.REQUEST_NULL


def test_the_planners_shard_work_is_what_the_shards_cost_in_cpu_time_not_the_time_slices():
    # one rank on a shared core, two equal shards of 100 units; the first shard's calls
    # were mostly cut by a core-mate's 4 ms time slice, which its wall time holds
    speed = SpeedModel(1, "kmeans")
    speed.set_rates("kmeans", [1e5])
    job = SimpleNamespace(size=1, cores=None, speed=speed, wl=SimpleNamespace(kernel="kmeans"),
                          rate_estimate=None, comm=_OneRank(), measured_work=False,
                          shard_map=block_1d(200, 2, np.float64, 1))
    window = Window()
    for k in range(9):
        wall = {0: 1e-3 + (4e-3 if k % 3 else 0.0), 1: 1e-3}
        cpu = {0: 1e-3, 1: 1e-3}
        window.add({"work_units": [200.0], "busy_s": [sum(wall.values())],
                    "busy_cpu_s": [sum(cpu.values())]}, wall, cpu)
    measured_models(job, window)
    assert job.shard_map.work_units().tolist() == pytest.approx([100.0, 100.0])
    assert job.measured_work
