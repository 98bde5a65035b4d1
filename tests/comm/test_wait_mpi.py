"""The sleeping waits under real mpiexec: they complete, move the bytes, and sleep while they wait."""

import time

import numpy as np
import pytest

from hpccloud.comm.wait import sleeping_allgather, sleeping_barrier, sleeping_waitall


@pytest.mark.hpccloud_mpi(ranks=[2, 3], timeout=120)
def test_sleeping_waitall_moves_the_messages_of_a_late_peer(comm):
    rank, size = comm.Get_rank(), comm.Get_size()
    right, left = (rank + 1) % size, (rank - 1) % size
    for delay in (0.0, 0.002, 0.05):  # inside the spin, a few sleeps, many sleeps
        send = np.full(300, rank + delay)
        recv = np.empty(300)
        sleeping_barrier(comm)
        if rank == 0:
            time.sleep(delay)  # rank 0 is late: the others wait in their sleeping phase
        reqs = [comm.Irecv(recv, left, 7), comm.Isend(send, right, 7)]
        sleeping_waitall(reqs)
        assert np.array_equal(recv, np.full(300, left + delay))
    rows = sleeping_allgather(comm, [rank, 2.0 * rank])
    assert rows.tolist() == [[r, 2.0 * r] for r in range(size)]


@pytest.mark.hpccloud_mpi(ranks=[2], timeout=120)
def test_a_long_wait_sleeps_instead_of_spinning(comm):
    """Rank 1 waits ~0.4 s for rank 0: the wait's CPU time stays well under its wall time
    (polls back to back only briefly after each sleep); the step's wait on a shared core
    (``backoff``: sleeps growing to 1 ms) polls a few % of the time. A loaded machine
    only lowers the ratios (longer sleeps), so the margins hold there too."""
    from hpccloud.comm.wait import STEP_WAIT_BACKOFF

    rank = comm.Get_rank()
    buf = np.zeros(8)
    for backoff, most in ((None, 0.7), (STEP_WAIT_BACKOFF, 0.25)):
        sleeping_barrier(comm)
        if rank == 0:
            time.sleep(0.4)
            comm.Send(buf, 1, 3)
            ratio = 0.0
        else:
            c0, t0 = time.process_time(), time.perf_counter()
            sleeping_waitall([comm.Irecv(buf, 0, 3)], backoff=backoff)
            ratio = (time.process_time() - c0) / (time.perf_counter() - t0)
        ratio = comm.bcast(ratio, root=1)
        assert ratio < most, f"the waiting rank used {ratio:.0%} of a core while it waited (backoff {backoff})"


@pytest.mark.hpccloud_mpi(ranks=[2, 3], timeout=120)
def test_sleeping_bcast_is_bcast(comm):
    from hpccloud.comm.wait import sleeping_bcast

    rank = comm.Get_rank()
    for root in range(comm.Get_size()):
        obj = {"root": root, "a": np.arange(1000.0), "s": "é" * 10} if rank == root else None
        got = sleeping_bcast(comm, obj, root=root)
        assert got["root"] == root and got["s"] == "é" * 10
        assert np.array_equal(got["a"], np.arange(1000.0))
    assert sleeping_bcast(comm, b"" if rank == 0 else None) == b""


@pytest.mark.hpccloud_mpi(ranks=[2, 3], timeout=120)
def test_sleeping_allreduce_sums_a_late_ranks_rows(comm):
    from hpccloud.comm.wait import sleeping_allreduce

    rank, size = comm.Get_rank(), comm.Get_size()
    rows = np.zeros((2, size))
    rows[:, rank] = (rank + 1.0, 10.0 * rank)  # each rank owns one column, as shards do
    if rank == 0:
        time.sleep(0.02)  # the others wait in the sleeping phase
    got = sleeping_allreduce(comm, rows)
    assert got.tolist() == [[r + 1.0 for r in range(size)], [10.0 * r for r in range(size)]]
    assert rows[0, rank] == rank + 1.0  # the input is left as it was


def test_a_wait_that_backs_off_doubles_its_sleeps_up_to_the_cap(monkeypatch):
    """Without ``max_sleep_s`` every sleep is ``poll_s``; with it the sleeps double to the cap,
    and the wait still ends at the first poll that finds the requests done."""
    import hpccloud.comm.wait as wait

    def run(**kw):
        polls = {"n": 0}

        def poll(requests, seconds):
            polls["n"] += 1
            return polls["n"] > 9  # the spin and eight bursts find nothing

        sleeps = []
        monkeypatch.setattr(wait, "_poll", poll)
        monkeypatch.setattr(wait.time, "sleep", sleeps.append)
        wait.sleeping_waitall(["request"], poll_s=1e-5, **kw)
        return sleeps

    assert run() == [1e-5] * 9
    assert run(max_sleep_s=2e-4) == pytest.approx([1e-5, 2e-5, 4e-5, 8e-5, 1.6e-4, 2e-4, 2e-4, 2e-4, 2e-4])


def test_a_step_wait_sleeps_a_part_of_what_it_has_waited(monkeypatch):
    """With ``backoff`` each sleep is that part of the time waited so far (the spin counted),
    from ``poll_s`` up to the long-wait cap: a wait ends at most that part of itself late."""
    import hpccloud.comm.wait as wait

    clock = {"t": 0.0}
    polls = {"n": 0}

    def poll(requests, seconds):
        polls["n"] += 1
        return polls["n"] > 60

    def sleep(s):
        sleeps.append(s)
        clock["t"] += s

    sleeps: list[float] = []
    monkeypatch.setattr(wait, "_poll", poll)
    monkeypatch.setattr(wait.time, "sleep", sleep)
    monkeypatch.setattr(wait.time, "monotonic", lambda: clock["t"])
    wait.sleeping_waitall(["request"], poll_s=1e-5, spin_s=2e-4, backoff=0.1)
    assert sleeps[0] == 1e-5
    waited = np.cumsum(sleeps)[:-1]
    assert sleeps[1:] == pytest.approx(np.minimum(np.maximum(1e-5, 0.1 * (waited + 2e-4)),
                                                  wait.LONG_WAIT_SLEEP_S).tolist())
    assert max(sleeps) == wait.LONG_WAIT_SLEEP_S  # 60 sleeps reach the cap
    assert all(b >= a for a, b in zip(sleeps, sleeps[1:], strict=False))
