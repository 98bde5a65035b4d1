"""Link and speed probes: a bounded sample of pairs per level of the machine, and every rank's rate.

Link probe
    The pairs to measure come from :func:`link_probe_schedule`, a pure function
    of (rank → region, rank → node), so its cost can be checked at any size
    without MPI. Per level it measures a bounded sample, both directions:

    * **on-node**: ``k`` rank pairs of every node with two ranks or more;
      round ``j`` holds pair ``j`` of every node (never two pairs on one node);
    * **node-to-node in a region**: ``k`` rounds of the circle method over each
      region's nodes (a perfect matching per round: every node in one pair);
    * **region-to-region**: the circle method over regions (``G − 1`` rounds for
      even ``G``, ``G`` for odd), and for each matched region pair ``k`` rank
      pairs on different nodes, one after another (they would share the link).

    Rounds: ``k_on + k_node + k_region · R(G)`` with ``R(G) = G − 1`` or ``G``;
    pairs: at most ``k_on · N + k_node · N / 2 + k_region · G (G − 1) / 2`` for
    ``N`` nodes — no growth with ranks, and none with nodes in time when pairs
    run concurrently. Each measured pair costs
    :func:`messages_per_pair` point-to-point messages. Every other pair takes
    its level's median (see :mod:`hpccloud.measure.levels`); the job's own
    transfers refine the pairs they use (``LinkModel.add_sample``), as before.
    ``full=True`` (and, by default, a call that gives no regions, as the
    runner's) measures every ordered pair in ``P − 1`` rounds (``P`` for odd
    ``P``), the circle method over ranks: without regions a sample could miss
    the pairs between two regions the planner later asks for.

    In each pair both directions are measured at every size: rank ``a`` sends
    ``n`` bytes, ``b`` answers with 8 bytes, and the one-way time is
    ``rtt(n) − rtt(8) / 2``. Medians of repeats after warm-up become samples
    of the :class:`~hpccloud.measure.links.LinkModel`, which fits α and β per pair.

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
from hpccloud.measure.levels import LEVEL_NAMES, level_counts, node_index
from hpccloud.measure.links import LinkModel
from hpccloud.measure.speed import SpeedModel

#: message sizes of the link probe, 8 B … 4 MiB
DEFAULT_SIZES = (8, 64, 512, 4096, 32768, 262144, 1 << 20, 4 << 20)
_ACK_BYTES = 8
_TAG = 7301
#: sample pairs per level (on-node, node-to-node, region-to-region) of the sampled probe
DEFAULT_PAIRS_PER_LEVEL = 2


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


def circle_round(n: int, r: int) -> list[tuple[int, int]]:
    """Round ``r`` of the circle method over ``n`` items: a matching, O(n), no other round built.

    Over ``r = 0 .. R − 1`` (``R = n − 1`` for even ``n``, ``n`` for odd) every
    unordered pair appears exactly once.

    >>> circle_round(4, 0), circle_round(3, 1)
    ([(0, 3), (1, 2)], [(0, 2)])
    """
    m = n if n % 2 == 0 else n + 1  # a dummy item m - 1 for odd n
    pairs = [(r % (m - 1), m - 1)]
    for i in range(1, m // 2):
        pairs.append(((r + i) % (m - 1), (r - i) % (m - 1)))
    return sorted((min(a, b), max(a, b)) for a, b in pairs if a < n and b < n)


@dataclass(frozen=True)
class ProbeSchedule:
    """Which rank pairs the link probe measures, in rounds (see the module notes).

    Attributes
    ----------
    rounds : each round a list of unordered pairs ``(a, b)``, ``a < b``, no rank
        twice; both directions of every pair are measured.
    level : level name of each scheduled pair (``"on-node"``, ``"node-to-node"``,
        ``"region-to-region"``).
    rank_region, rank_node : the grouping the schedule was made for.
    full : every pair (the circle method over ranks) rather than a sample.
    """

    rounds: tuple[tuple[tuple[int, int], ...], ...]
    level: dict
    rank_region: np.ndarray = field(repr=False)
    rank_node: np.ndarray = field(repr=False)
    full: bool = False

    @property
    def n_pairs(self) -> int:
        """Unordered pairs measured (each in both directions)."""
        return sum(len(r) for r in self.rounds)

    def messages(self, sizes, skip: int = 3, repeats=None) -> int:
        """Point-to-point messages (``Send`` calls, all ranks) the probe sends: pairs × per pair."""
        return self.n_pairs * messages_per_pair(sizes, skip, repeats)

    def to_json(self) -> dict:
        """Which pairs were measured (by level) and how many were inferred from each level."""
        measured: dict[str, int] = {}
        for lvl in self.level.values():
            measured[lvl] = measured.get(lvl, 0) + 2  # both directions
        total = level_counts(self.rank_region, self.rank_node)
        return {
            "mode": "full" if self.full else "sampled per level",
            "rounds": len(self.rounds),
            "measured_pairs": [[a, b, self.level[(a, b)]] for rnd in self.rounds for a, b in rnd],
            "measured_ordered_pairs_by_level": {k: measured.get(k, 0) for k in LEVEL_NAMES[1:]},
            "inferred_ordered_pairs_by_level": {k: total[k] - measured.get(k, 0) for k in LEVEL_NAMES[1:]},
            "inferred_from": "the median over the measured pairs of the same level: on-node -> that node's "
                             "pairs, node-to-node -> that node pair's, else that region pair's",
        }


def messages_per_pair(sizes, skip: int = 3, repeats=None) -> int:
    """Messages of one measured pair: 2 directions × Σ sizes (skip + repeats) × (message + answer)."""
    repeats = repeats or repeats_for
    sizes = sorted({int(x) for x in sizes} | {_ACK_BYTES})
    return 2 * sum(skip + repeats(n) for n in sizes) * 2


def link_probe_schedule(rank_region, rank_node, pairs_per_level: int = DEFAULT_PAIRS_PER_LEVEL,
                        full: bool = False) -> ProbeSchedule:
    """The link probe's pairs for ranks grouped into nodes and regions (pure; see the module notes).

    >>> s = link_probe_schedule([0, 0, 1, 1], [0, 0, 1, 1], pairs_per_level=1)
    >>> s.rounds, s.level[(0, 2)]
    ((((0, 1), (2, 3)), ((0, 2),)), 'region-to-region')
    """
    region = np.asarray(rank_region, np.int64)
    node = node_index(region, np.asarray(rank_node).tolist())
    P = region.size
    level_code = {(0, 0): "on-node", (0, 1): "on-node", (1, 1): "node-to-node", (1, 0): "region-to-region"}
    if full:
        all_rounds = tuple(tuple(r) for r in round_robin_rounds(P))
        all_lv = {(a, b): level_code[(int(node[a] != node[b]), int(region[a] == region[b]))]
                  for rnd in all_rounds for a, b in rnd}
        return ProbeSchedule(all_rounds, all_lv, region, node, True)
    k = max(1, int(pairs_per_level))
    order = np.argsort(node, kind="stable")
    n_nodes = int(node.max()) + 1 if P else 0
    start = np.searchsorted(node[order], np.arange(n_nodes + 1))
    ranks_of = [order[start[i]:start[i + 1]].tolist() for i in range(n_nodes)]
    node_region = np.zeros(n_nodes, np.int64)
    node_region[node] = region
    rounds: list[list[tuple[int, int]]] = []
    lv: dict[tuple[int, int], str] = {}

    def add(rnd: list[tuple[int, int]], name: str) -> None:
        rnd = sorted({(min(a, b), max(a, b)) for a, b in rnd} - set(lv))
        if rnd:
            rounds.append(rnd)
            lv.update((pr, name) for pr in rnd)

    # on-node: round j holds the j-th pair of every node (first round of the circle method on it)
    for j in range(k):
        rnd = []
        for rs in ranks_of:
            pairs = circle_round(len(rs), 0) if len(rs) >= 2 else []
            if j < len(pairs):
                rnd.append((rs[pairs[j][0]], rs[pairs[j][1]]))
        add(rnd, "on-node")
    # node-to-node inside each region: k rounds of the circle method over its nodes
    nodes_of_region = [np.flatnonzero(node_region == g).tolist() for g in range(int(region.max()) + 1 if P else 0)]
    for j in range(k):
        rnd = []
        for ns in nodes_of_region:
            if len(ns) >= 2 and j < (len(ns) - 1 if len(ns) % 2 == 0 else len(ns)):
                for x, y in circle_round(len(ns), j):
                    a, b = ranks_of[ns[x]], ranks_of[ns[y]]
                    rnd.append((a[j % len(a)], b[j % len(b)]))
        add(rnd, "node-to-node")
    # region to region: matched region pairs at once, their k samples one after another
    G = len(nodes_of_region)
    for r in range(G - 1 if G % 2 == 0 else G):
        pairs = circle_round(G, r)
        for j in range(k):
            rnd = []
            for ga, gb in pairs:
                na, nb = nodes_of_region[ga], nodes_of_region[gb]
                if na and nb:
                    a, b = ranks_of[na[j % len(na)]], ranks_of[nb[j % len(nb)]]
                    rnd.append((a[(j // len(na)) % len(a)], b[(j // len(nb)) % len(b)]))
            add(rnd, "region-to-region")
    return ProbeSchedule(tuple(tuple(r) for r in rounds), lv, region, node, False)


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
    schedule: ProbeSchedule | None = None


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
                repeats=repeats_for, *, rank_region=None, hosts=None,
                pairs_per_level: int = DEFAULT_PAIRS_PER_LEVEL, full: bool | None = None) -> LinkProbeResult:
    """Measure the pairs of :func:`link_probe_schedule`; collective. Returns the same model on every rank.

    Parameters
    ----------
    rank_region : region index of every rank (the topology's); default: one region.
    hosts : node name of every rank; default: each rank's ``MPI.Get_processor_name()``.
    pairs_per_level : sample pairs per level (see the module notes).
    full : measure every ordered pair; default: only when no ``rank_region`` is given
        (what the runner has always had; pass the topology's regions to sample).
    """
    from hpccloud.threads import cores_available, ranks_on_this_node

    rank, size = comm.Get_rank(), comm.Get_size()
    sizes = tuple(sorted({int(s) for s in sizes} | {_ACK_BYTES}))
    if concurrent is None:
        fits = ranks_on_this_node(comm) <= cores_available()
        concurrent = bool(comm.allreduce(int(fits), op=_min_op()))
    if full is None:
        full = rank_region is None
    if hosts is None:
        from mpi4py import MPI

        hosts = comm.allgather(MPI.Get_processor_name())
    region = np.zeros(size, np.int64) if rank_region is None else np.asarray(rank_region, np.int64)
    node = node_index(region, hosts)
    schedule = link_probe_schedule(region, node, pairs_per_level, full=full)
    buf = np.zeros(max(sizes), dtype=np.uint8)
    ack = np.zeros(_ACK_BYTES, dtype=np.uint8)
    local: dict[tuple[int, int], list[float]] = {}
    t_start = time.perf_counter()
    sleeping_barrier(comm)
    for pairs in schedule.rounds:
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
    model = LinkModel(size, provenance="measured", rank_region=region, rank_node=node)
    for (src, dst), times in sorted(merged.items()):
        for n, t in zip(sizes, times, strict=True):
            model.add_sample(src, dst, n, t, source="probe")
    model.refit()
    seconds = comm.allreduce(time.perf_counter() - t_start, op=_max_op())
    return LinkProbeResult(model, sizes, merged, concurrent, seconds, schedule)


def probe_speed(comm, kernel: str = "stencil2d", n_units: int = 1 << 20,
                window_s: float = 0.3, cores=None, inputs: dict | None = None) -> SpeedModel:
    """Every rank runs ``kernel`` for ``window_s`` at the same time; collective.

    Compiles on rank 0 first (others then load Numba's cache), so the window
    times only steady-state runs. With ``cores`` (a
    :class:`~hpccloud.measure.cores.CoreShares`), ranks that share cores are
    rated by CPU time × the cores they get, as the runner rates them. ``inputs``:
    keyword arguments for the kernel's ``make_inputs`` (the workload's
    :meth:`~hpccloud.workloads.base.Workload.probe_inputs`).
    """
    import inspect

    import kernels

    spec = kernels.get(kernel)
    args = spec.make_inputs(n_units, np.float64, seed=comm.Get_rank(), **(inputs or {}))
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
    rows = np.array(comm.allgather((done / elapsed, done / cpu if cpu > 0 else np.nan, cpu)))
    rates = planner_rates(rows[:, 0], rows[:, 1], cores, cpu_s=rows[:, 2])
    model = SpeedModel(comm.Get_size(), reference_kernel=kernel, provenance="measured")
    model.set_rates(kernel, rates)
    return model


#: data class of the transport probe's synthetic shards: a name no topology file can
#: declare ('+' is reserved), allowed in every region (the bytes are the probe's own)
PROBE_CLASS = "probe+transport"


@dataclass(frozen=True)
class TransportProbeResult:
    """What a migration's move costs on this job's ranks when (almost) nothing moves.

    ``fixed_s`` is the median over rounds of the slowest rank's wall time of a
    move of one 8-byte shard, timed as a migration is (the barriers around the
    transport call, the plan's agreement, the data round, the verdict, the
    closing gather, the Python around them, and on ranks that share cores the
    waits for a core between those rounds); ``rounds_s`` are those rounds.
    ``ring_s`` is the same with every rank passing an 8-byte shard to the next
    (the median after ``warmup`` untimed rounds, which also set the transport up).
    """

    fixed_s: float
    rounds_s: tuple[float, ...]
    warmup: int
    provenance: str = "measured"
    #: bytes of the shard-sized rounds (0: none), and what they measured: the transfers'
    #: seconds per byte (as their receivers timed them), and the slowest rank's of copying
    #: a shard into new memory
    #: (a migration's pack and unpack are such copies)
    shard_bytes: int = 0
    s_per_byte: float = float("nan")
    copy_s_per_byte: float = float("nan")
    ring_s: float = float("nan")
    #: the slowest rank's CPU seconds per byte of memory it writes for the first time, beyond
    #: rewriting it (:func:`fresh_memory_s_per_byte`): a migration's first bytes pay it
    fresh_s_per_byte: float = float("nan")
    #: the workload's own pack and unpack per byte moved (:func:`probe_packing`; NaN: not probed)
    pack_s_per_byte: float = float("nan")
    #: what each further shard of one rank adds to a move (NaN: not probed): the slowest
    #: rank's median wall time of :data:`PROBE_BURST_SHARDS` 8-byte shards moved from one
    #: rank to the next, less ``fixed_s``, per shard beyond the first; ``burst_s`` that median
    per_call_s: float = float("nan")
    burst_s: float = float("nan")

    def to_json(self) -> dict:
        def num(x: float) -> float | None:
            return float(x) if np.isfinite(x) else None

        return {"fixed_s": self.fixed_s, "rounds_s": list(self.rounds_s), "warmup": self.warmup,
                "provenance": self.provenance, "what": "slowest rank's wall time of one move "
                "(barrier, transport call, barrier, closing gather) of one 8-byte shard, median "
                "of the rounds", "ring_s": num(self.ring_s),
                "shard_bytes": self.shard_bytes, "s_per_byte": num(self.s_per_byte),
                "copy_s_per_byte": num(self.copy_s_per_byte),
                "fresh_s_per_byte": num(self.fresh_s_per_byte),
                "pack_s_per_byte": num(self.pack_s_per_byte),
                "per_call_s": num(self.per_call_s), "burst_s": num(self.burst_s)}


#: rank 0 works this long before it releases each round of :func:`probe_transport`, as a
#: migration's plan does (2-10 ms measured): the other ranks' wait has gone to sleep
#: (:data:`~hpccloud.comm.wait.SPIN_S`) and each must wake to take part, as in a
#: migration. Released at once, the ranks were still polling and a one-shard round read
#: ~1.1 ms on 3+1 ranks on 2 cores, where the job's one-shard migrations spent 2.5-6 ms
PLAN_STANDIN_S = 2e-3

#: the shard-sized rounds of :func:`probe_transport` move at most this much per rank
PROBE_SHARD_BYTES_MAX = 8 << 20

#: shards one rank moves at once in the burst rounds of :func:`probe_transport` (the per-call cost)
PROBE_BURST_SHARDS = 8


def probe_transport(comm, topology, *, key=None, rounds: int = 5, warmup: int = 2,
                    shard_bytes: int = 0) -> TransportProbeResult:
    """Time the shard transport's per-call cost on this job's ranks; collective.

    Every rank holds one 8-byte shard of the synthetic class :data:`PROBE_CLASS`
    and passes it to the next rank, ``warmup + rounds`` times (the first calls
    also set up what the transport keeps per communicator, so a job's first
    real migration does not pay for it; ``ring_s``); then one shard alone walks
    on around the ring for ``rounds`` more (``fixed_s``: what moving a shard
    costs before its bytes count). The bytes are the probe's own, so the
    class may live anywhere; the job's residency rules never see them, and
    they are not written to the audit log. With ``key`` the moves that cross a
    region border are sealed, as the job's will be.

    With ``shard_bytes`` (the job's typical shard, capped at
    :data:`PROBE_SHARD_BYTES_MAX`; the same on every rank) the ring is walked
    again ``1 + rounds`` times with a shard of that size: the transfers'
    seconds per byte, as their receivers timed them, are what the job's first
    migrations are priced on before its own are measured (``s_per_byte``);
    and each rank times copying such a shard into new memory, as a migration's
    pack and unpack do (``copy_s_per_byte``, the slowest rank's median), and
    writing memory it never touched before (``fresh_s_per_byte``: what a
    migration's first bytes pay on top).
    """
    import dataclasses

    from mpi4py import MPI

    from hpccloud.comm.transport import execute_aligned
    from hpccloud.comm.wait import sleeping_allgather, sleeping_bcast
    from hpccloud.policy import Policy
    from hpccloud.shards import block_1d
    from hpccloud.topology import DataClass

    size, rank = comm.Get_size(), comm.Get_rank()
    regions = frozenset(topology.rank_region)
    policy = Policy(dataclasses.replace(
        topology, data_classes={PROBE_CLASS: DataClass(PROBE_CLASS, regions, False)}))

    def ring(elements: int, rounds: int, every_rank: bool = True, burst: int = 1):
        """Pass one shard of ``elements`` float64 per rank to the next rank ``rounds`` times
        (or, without ``every_rank``, one shard alone, round after round one rank further;
        with ``burst`` > 1 every rank holds that many shards and one rank's all move together);
        yield each round's wall time on this rank and the payload that arrived.

        A round is timed over the span a migration's model prices (see
        :func:`hpccloud.runner.rebalance.migrate`): from the plan's broadcast
        releasing the ranks, through the transport between its two barriers,
        to the closing gather of the move's figures. Timed over ``execute``
        alone it read 0.6-0.8 ms on 3+1 ranks on 2 cores, where a one-shard
        migration spent 3.5-5.9 ms: the barriers' waits for a shared core
        were outside it.
        """
        n = size * burst
        shard_map = block_1d(n * elements, n, "<f8", size, data_class=PROBE_CLASS)
        shard_map = shard_map.with_owners(np.arange(n, dtype=np.int64) // burst, version=0)
        local = {sid: np.full(elements, float(sid)) for sid in range(rank * burst, (rank + 1) * burst)}
        for _ in range(rounds):
            after = shard_map.owners().copy()
            if every_rank:
                after = (after + 1) % size
            else:
                after[:burst] = (after[:burst] + 1) % size
            if rank == 0:  # the plan takes a while: the other ranks' wait goes to sleep
                until = time.perf_counter() + PLAN_STANDIN_S
                while time.perf_counter() < until:
                    pass
            sleeping_bcast(comm, None)  # released as the plan's broadcast releases them
            t0 = time.perf_counter()
            shard_map, local, records, _, _ = execute_aligned(comm, shard_map, local, after,
                                                              policy, key=key)
            sleeping_allgather(comm, np.zeros(3))  # the move's closing gather
            yield time.perf_counter() - t0, (local.get(rank) if every_rank else None), records

    def slowest(seconds) -> np.ndarray:
        out = np.empty(len(seconds))
        comm.Allreduce(np.asarray(seconds, np.float64), out, op=MPI.MAX)
        return out

    # every rank moving at once, then one shard alone: a migration of a few shards (topo's
    # usual) costs more than the ring (measured 0.4-0.55 ms against 0.17-0.23 for the
    # transport call alone on 3+1 ranks on 2 cores): the ranks with nothing to move spin in
    # the call's rounds on the cores the two movers need
    ring_s = float(np.median(slowest([t for t, _, _ in ring(1, warmup + rounds)])[warmup:]))
    timed = slowest([t for t, _, _ in ring(1, rounds, every_rank=False)])
    fixed = float(np.median(timed))
    # one rank's PROBE_BURST_SHARDS shards moving together: what each call adds (the
    # calibrator's prior, until the job's own moves measure it). Fitted from the job's first
    # move alone it read 1.57x the later moves' (median over 283 matrix runs; > 2x in 40 %):
    # the first move pays one-time costs, and one noisy move at 2 ms a call closed the gate
    # on every later plan of a stencil2d run
    burst_s = per_call = float("nan")
    if size > 1:
        burst_s = float(np.median(slowest([t for t, _, _ in ring(1, 1 + rounds, every_rank=False,
                                                                   burst=PROBE_BURST_SHARDS)])[1:]))
        per_call = max(0.0, burst_s - fixed) / (PROBE_BURST_SHARDS - 1)
    nbytes = min(int(shard_bytes), PROBE_SHARD_BYTES_MAX) // 8 * 8
    if nbytes <= 0:
        return TransportProbeResult(fixed, tuple(float(x) for x in timed), warmup, ring_s=ring_s,
                                    per_call_s=per_call, burst_s=burst_s)
    # the first round is not timed: it meets the size's first buffers. Seconds per byte as
    # the calibrator takes them from a migration's transfers (each timed by its receiver,
    # the same records on every rank): a difference of two rounds' wall times read 4x the
    # job's transfers now and then on ranks sharing cores. After each timed round, the
    # shard that just arrived is copied into new memory (a pack or an unpack)
    copies = np.zeros(rounds)
    timed_records = []
    for i, (_, arr, records) in enumerate(ring(nbytes // 8, 1 + rounds)):
        if i:
            timed_records += records
            t0 = time.perf_counter()
            np.copyto(np.empty_like(arr), arr)
            copies[i - 1] = time.perf_counter() - t0
    copy_s, fresh = slowest([np.median(copies), fresh_memory_s_per_byte()])  # the slowest rank's
    moved = sum(float(r.nbytes) for r in timed_records)
    per_byte = sum(float(r.seconds) for r in timed_records) / moved if moved > 0 else float("nan")
    return TransportProbeResult(fixed, tuple(float(x) for x in timed), warmup, shard_bytes=nbytes,
                                s_per_byte=per_byte, copy_s_per_byte=float(copy_s) / nbytes,
                                ring_s=ring_s, fresh_s_per_byte=float(fresh),
                                per_call_s=per_call, burst_s=burst_s)


#: shards each rank packs and unpacks in :func:`probe_packing`
PACK_PROBE_SHARDS = 3


def probe_packing(comm, wl, shard_map, local, shards: int = PACK_PROBE_SHARDS,
                  passes: int = 2) -> float:
    """The workload's own pack and unpack, in CPU seconds per byte moved, as a warm
    migration pays them: the slowest rank's median over up to ``shards`` of its shards
    in the last of ``passes``; collective (NaN: no rank holds a shard).

    Each shard makes the round trip a migration makes of it, buffers as the
    migration handles them (:func:`hpccloud.runner.rebalance.migrate`): ``pack``;
    the payload copied into a receive buffer from the workload's pool (the
    transport's part: not timed) and given back to the pool; ``forget`` and
    ``unpack`` (the workload rebuilds what it keeps per shard); the rebuilt array
    given to the pool as a departed shard's would be. The shard's own array stays
    as it was. The first pass meets memory never touched before, which the model
    prices apart (``fresh_s_per_byte``); the last is timed.

    The transport probe's ``copy_s_per_byte`` prices two plain copies; a
    workload's unpack can do far more: spmv regenerates a shard's CSR rows (~24
    bytes written per byte received) and spent 0.3-0.8 ms unpacking each 50 kB
    shard, 10-20x two copies, so its migrations were priced at a quarter to a
    half of what they took (first moves 4.1 ms for 17.8). Thread CPU time, so
    ranks that share a core each read their own cost.
    """
    from hpccloud.comm.agree import agree
    from hpccloud.comm.wait import sleeping_allgather

    # a workload's pack or unpack that fails on one rank fails the probe on every rank
    mine = agree(comm, lambda: _round_trips_s_per_byte(wl, shard_map, local, shards, passes))
    every = sleeping_allgather(comm, [mine])[:, 0]
    return float(np.nanmax(every)) if np.isfinite(every).any() else float("nan")


def _round_trips_s_per_byte(wl, shard_map, local, shards: int, passes: int) -> float:
    """This rank's part of :func:`probe_packing`: the median per byte of the last pass
    (NaN: no shard here)."""
    pool = wl.pool

    def give(a, *live) -> None:
        if pool is not None and not any(np.may_share_memory(a, b) for b in live):
            pool.give(a)

    sids = sorted(local)[:max(0, int(shards))]
    per: list[float] = []
    for _ in range(max(1, int(passes))):  # the last pass's figures are kept
        per = []
        for sid in sids:
            shard, arr = shard_map.shards[sid], local[sid]
            c0 = time.thread_time()
            payload = np.asarray(wl.pack(shard, arr))
            c1 = time.thread_time()
            received = wl.empty(payload.shape, payload.dtype)  # the transport's receive buffer
            np.copyto(received, payload)
            give(payload, arr)  # sent
            c2 = time.thread_time()
            wl.forget(sid)
            back = wl.unpack(shard, received)
            c3 = time.thread_time()
            if not np.may_share_memory(back, received):
                give(received, arr)
            if wl.recycle_departed:
                give(back, arr)
            if payload.nbytes > 0:
                per.append(((c1 - c0) + (c3 - c2)) / payload.nbytes)
    return float(np.median(per)) if per else float("nan")


#: bytes of each of :func:`fresh_memory_s_per_byte`'s rounds
FRESH_PROBE_BYTES = 2 << 20


def fresh_memory_s_per_byte(nbytes: int = FRESH_PROBE_BYTES, rounds: int = 3) -> float:
    """CPU seconds per byte of writing memory this process touches for the first time,
    beyond rewriting it: the kernel's page faults (median of ``rounds``).

    A migration's first bytes land in such memory (receive buffers, packed and
    unpacked copies before the buffer pool and the heap hold any): on this
    machine ~0.55-0.8 ns per byte (4 KiB pages), against ~0.05 for memory
    already touched. CPU time, so ranks that share a core each read their own
    cost (the model adds up the ranks of a core). Each round maps fresh
    anonymous memory, so no allocator can hand back pages touched before.

    >>> 0 <= fresh_memory_s_per_byte(1 << 20, rounds=1) < 1e-6
    True
    """
    import mmap

    out = []
    for _ in range(rounds):
        with mmap.mmap(-1, nbytes) as mm:
            a = np.frombuffer(mm, np.uint8)
            c0 = time.process_time()
            a.fill(1)
            c1 = time.process_time()
            a.fill(2)
            c2 = time.process_time()
            del a  # the mapping closes only without views
        out.append(max(0.0, (c1 - c0) - (c2 - c1)) / nbytes)
    return float(np.median(out))


def _min_op():
    from mpi4py import MPI

    return MPI.MIN


def _max_op():
    from mpi4py import MPI

    return MPI.MAX
