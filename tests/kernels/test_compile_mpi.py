"""hpccloud.compile.warm_up under real mpiexec: rank 0 compiles, barrier, the others load."""

import pytest

from hpccloud.compile import warm_up
from hpccloud.errors import InvalidArgument


def test_warm_up_single_process():
    seconds = warm_up(["triad", "sum"])
    assert set(seconds) == {"triad", "sum"}
    assert all(s >= 0.0 for s in seconds.values())


@pytest.mark.hpccloud_mpi(ranks=[1, 3], timeout=180)
def test_warm_up_mpi(comm):
    import kernels

    seconds = warm_up(["triad", "stencil2d", "sum"], comm=comm)
    assert set(seconds) == {"triad", "stencil2d", "sum"}
    assert all(s >= 0.0 for s in seconds.values())
    # after the warm-up every rank computes the same thing
    spec = kernels.get("stencil2d")
    (tile,) = spec.make_inputs(400, seed=7)
    digests = comm.allgather(spec.kernel(tile).tobytes())
    assert all(d == digests[0] for d in digests)
    # a bad name on one rank fails on every rank with the same message, nobody hangs
    names = ["triad", "no_such_kernel"] if comm.Get_rank() == comm.Get_size() - 1 else ["triad"]
    with pytest.raises(InvalidArgument) as info:
        warm_up(names, comm=comm)
    messages = comm.allgather(str(info.value))
    assert len(set(messages)) == 1 and "no_such_kernel" in messages[0], messages
