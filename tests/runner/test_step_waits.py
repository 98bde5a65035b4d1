"""Which ranks back off while the step waits for its slowest rank (the runner's :class:`Stepper`)."""

from types import SimpleNamespace

import pytest

from hpccloud.comm.wait import STEP_WAIT_BACKOFF
from hpccloud.measure.cores import CoreShares
from hpccloud.runner.step import Stepper
from hpccloud.workloads import make_workload


@pytest.mark.parametrize(("cores", "backs_off"), [
    (CoreShares.from_ranks(["a"] * 3, [{1}, {0}, {0}], [1, 1, 1]), [False, True, True]),
    (CoreShares.from_ranks(["a"] * 2, [{0}, {1}], [1, 1]), [False, False]),
    (CoreShares.from_ranks(["a", "b"], [{0}, {0}], [1, 1]), [False, False]),  # two hosts
])
def test_only_ranks_of_an_oversubscribed_core_back_off_in_the_step_wait(cores, backs_off):
    for rank, expected in enumerate(backs_off):
        job = SimpleNamespace(cores=cores, wl=make_workload("kmeans", {}), rank=rank)
        assert Stepper(job).wait_backoff == (STEP_WAIT_BACKOFF if expected else None)
