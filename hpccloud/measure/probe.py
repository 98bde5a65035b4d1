"""Link and speed probes: measure every ordered rank pair and every rank's compute rate.

Link probe
    Pairs are scheduled in rounds by the circle method (round-robin pairing):
    P − 1 rounds for even P, P for odd P (one rank sits out each round), so pairs
    that run at the same time never share a rank. In each pair both directions
    are measured at every size: rank ``a`` sends ``n`` bytes, ``b`` answers with
    8 bytes, and the one-way time is ``rtt(n) − rtt(8) / 2``. Medians of repeats
    after warm-up become samples of the :class:`~hpccloud.measure.links.LinkModel`,
    which fits α and β per ordered pair.

    When a node has more ranks than cores, concurrent pairs would time-share
    the cores and read time slices instead of links, so pairs then run one at a
    time while the other ranks wait in a *sleeping* barrier (``Ibarrier`` polled
    with ``time.sleep``), leaving the cores to the pair being measured.

Speed probe
    Every rank runs the reference kernel on its own data at the same time for a
    fixed wall-clock window and counts the work units it completed, so ranks
    that share a core measure the speed they really get.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from hpccloud.comm.wait import sleeping_barrier
from hpccloud.measure.cores import planner_rates
from hpccloud.measure.links import LinkModel
from hpccloud.measure.speed import SpeedModel

#: message sizes of the link probe, 8 B … 4 MiB
DEFAULT_SIZES = (8, 64, 512, 4096, 32768, 262144, 1 << 20, 4 << 20)
_ACK_BYTES = 8
_TAG = 7301


def round_robin_rounds(size: int) -> list[list[tuple[int, int]]]:
    """Pairings of ``size`` ranks in rounds; no rank appears twice in a round.

    Every unordered pair appears exactly once over all rounds.

    >>> round_robin_rounds(4)
    [[(0, 3), (1, 2)], [(0, 2), (1, 3)], [(0, 1), (2, 3)]]
    >>> len(round_robin_rounds(5))
    5
    """
    n = size if size % 2 == 0 else size + 1  # a dummy rank for odd sizes
    ranks = list(range(n))
    rounds = []
    for _ in range(n - 1):
        pairs = []
        for i in range(n // 2):
            a, b = ranks[i], ranks[n - 1 - i]
            if a < size and b < size:
                pairs.append((min(a, b), max(a, b)))
        rounds.append(sorted(pairs))
        ranks = [ranks[0], ranks[-1], *ranks[1:-1]]  # rotate all but the first
    return rounds


def repeats_for(nbytes: int) -> int:
    """Timed repeats per size: many for small messages, fewer for large ones."""
    if nbytes <= 32768:
        return 30
    if nbytes <= 262144:
        return 20
    return 10


@dataclass
class LinkProbeResult:
    model: LinkModel
    sizes: tuple[int, ...]
    #: (src, dst) -> list of median one-way seconds, by size
    one_way_s: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    concurrent_pairs: bool = True
    seconds: float = 0.0


def _pingpong(comm, peer: int, initiator: bool, nbytes: int, buf: np.ndarray, ack: np.ndarray,
              skip: int, reps: int) -> float:
    """Median round trip of ``nbytes`` out and an 8-byte answer back (initiator side)."""
    times = []
    msg = buf[:nbytes]
    for k in range(skip + reps):
        if initiator:
            t0 = time.perf_counter()
            comm.Send(msg, dest=peer, tag=_TAG)
            comm.Recv(ack, source=peer, tag=_TAG)
            if k >= skip:
                times.append(time.perf_counter() - t0)
        else:
            comm.Recv(msg, source=peer, tag=_TAG)
            comm.Send(ack, dest=peer, tag=_TAG)
    return float(np.median(times)) if times else float("nan")


def probe_links(comm, sizes=DEFAULT_SIZES, skip: int = 3, concurrent: bool | None = None,
                repeats=repeats_for) -> LinkProbeResult:
    """Measure every ordered pair of ``comm``; collective. Returns the same model on every rank."""
    from hpccloud.threads import cores_available, ranks_on_this_node

    rank, size = comm.Get_rank(), comm.Get_size()
    sizes = tuple(sorted({int(s) for s in sizes} | {_ACK_BYTES}))
    if concurrent is None:
        fits = ranks_on_this_node(comm) <= cores_available()
        concurrent = bool(comm.allreduce(int(fits), op=_min_op()))
    buf = np.zeros(max(sizes), dtype=np.uint8)
    ack = np.zeros(_ACK_BYTES, dtype=np.uint8)
    local: dict[tuple[int, int], list[float]] = {}
    t_start = time.perf_counter()
    sleeping_barrier(comm)
    for pairs in round_robin_rounds(size):
        groups = [pairs] if concurrent else [[p] for p in pairs]
        for group in groups:
            for a, b in group:
                if rank not in (a, b):
                    continue
                peer = b if rank == a else a
                for src, dst in ((a, b), (b, a)):
                    rtts = [_pingpong(comm, peer, rank == src, n, buf, ack,
                                      skip, repeats(n)) for n in sizes]
                    if rank == src:
                        half_ack = rtts[sizes.index(_ACK_BYTES)] / 2.0
                        # the answer takes about rtt(8)/2; under noise rtt(n) can read
                        # below rtt(8), and then half the round trip is the better guess
                        local[(src, dst)] = [max(r - half_ack, r / 2.0) if n != _ACK_BYTES else half_ack
                                             for r, n in zip(rtts, sizes, strict=True)]
            if not concurrent:
                sleeping_barrier(comm)
        if concurrent:
            sleeping_barrier(comm)
    merged: dict[tuple[int, int], list[float]] = {}
    for part in comm.allgather(local):
        merged.update(part)
    model = LinkModel(size, provenance="measured")
    for (src, dst), times in sorted(merged.items()):
        for n, t in zip(sizes, times, strict=True):
            model.add_sample(src, dst, n, t, source="probe")
    model.refit()
    seconds = comm.allreduce(time.perf_counter() - t_start, op=_max_op())
    return LinkProbeResult(model, sizes, merged, concurrent, seconds)


def probe_speed(comm, kernel: str = "stencil2d", n_units: int = 1 << 20,
                window_s: float = 0.3, cores=None) -> SpeedModel:
    """Every rank runs ``kernel`` for ``window_s`` at the same time; collective.

    Compiles on rank 0 first (others then load Numba's cache), so the window
    times only steady-state runs. With ``cores`` (a
    :class:`~hpccloud.measure.cores.CoreShares`), ranks that share cores are
    rated by CPU time × the cores they get, as the runner rates them.
    """
    import inspect

    import kernels

    spec = kernels.get(kernel)
    args = spec.make_inputs(n_units, np.float64, seed=comm.Get_rank())
    units_per_call = float(spec.work_units(*args))
    kwargs = {}
    if "out" in inspect.signature(spec.kernel).parameters and len(args) == 1:
        kwargs["out"] = np.empty_like(args[0])  # steady state: the runner reuses its outputs
    if comm.Get_rank() == 0:
        spec.kernel(*args, **kwargs)
    sleeping_barrier(comm)
    if comm.Get_rank() != 0:
        spec.kernel(*args, **kwargs)
    sleeping_barrier(comm)
    done, t0, c0 = 0.0, time.perf_counter(), time.process_time()
    while True:
        spec.kernel(*args, **kwargs)
        done += units_per_call
        elapsed = time.perf_counter() - t0
        if elapsed >= window_s:
            break
    cpu = time.process_time() - c0
    rows = np.array(comm.allgather((done / elapsed, done / cpu if cpu > 0 else np.nan)))
    rates = planner_rates(rows[:, 0], rows[:, 1], cores)
    model = SpeedModel(comm.Get_size(), reference_kernel=kernel, provenance="measured")
    model.set_rates(kernel, rates)
    return model


def _min_op():
    from mpi4py import MPI

    return MPI.MIN


def _max_op():
    from mpi4py import MPI

    return MPI.MAX
