"""Set-up stage: the job's state on one rank, up to the data being in place.

Order (every step collective, every failure the same error on every rank)::

    workload and its shard map (declared classes) ── effective halo classes and
    the policy of *this* topology ── classes no rank may hold refused ── what
    the workload's own collectives would send where it may not live refused
    (``Workload.refuse_residency``) ── output folders claimed ── key
    file ── kernels compiled (rank 0 first) ── core groups ── links (probe or
    --profile, checked against this topology) ── then one of:
      restart: the checkpoint's map placed under this topology and rank count,
               each rank reads only its shards                 (checkpointing.py)
      fresh:   greedy/topo/metis place shards by a speed probe before data exists;
               the data is generated or read (--input) where it belongs

Whatever reaches a rank is checked against the policy before it is kept
(:func:`hpccloud.runner.residency.check_held`).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from hpccloud.balance import PlanOptions, plan
from hpccloud.comm.agree import agree, bcast_result
from hpccloud.comm.bufpool import BufferPool
from hpccloud.comm.validate import validate_run
from hpccloud.errors import ConfigError, InvalidArgument
from hpccloud.measure.cores import discover_cores
from hpccloud.measure.speed import RateEstimate, SpeedModel
from hpccloud.policy import Policy
from hpccloud.runner.calibrate import Calibrator
from hpccloud.runner.options import RunConfig
from hpccloud.runner.residency import check_held, halo_closed, place_resident
from hpccloud.runner.window import spread_steps
from hpccloud.trace import Tracer
from hpccloud.workloads import make_workload

if TYPE_CHECKING:
    from hpccloud.comm.validate import RunClaims
    from hpccloud.io.checkpoint import CheckpointWriter
    from hpccloud.measure.cores import CoreShares
    from hpccloud.measure.links import LinkModel
    from hpccloud.measure.probe import TransportProbeResult
    from hpccloud.shards import ShardMap


class Job:
    """The state of one run on one rank; the stages read and update it.

    Attributes
    ----------
    comm, topology, cfg, rank, size : the job's communicator, topology and options.
    run_id : one id for the whole job (rank 0's, broadcast), written into every output.
    wl : the workload; policy : residency rules of this topology (with halo classes).
    shard_map : identical on every rank; local : ``{shard id: stored array}`` of this rank.
    links, speed, cores : the measured models; key : AES-GCM key or None.
    pool : buffers of shards that left, reused for shards that arrive.
    start_step : the first step this run computes (> 0 after a restart).
    steps, plans, audit : the records the report is built from.
    """

    def __init__(self, comm, topology, cfg: RunConfig):
        self.comm, self.topology, self.cfg = comm, topology, cfg
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.run_id = comm.bcast(uuid.uuid4().hex if self.rank == 0 else None)
        self.wl = make_workload(cfg.workload, cfg.params, cfg.seed)
        self.policy = Policy.from_topology(topology)
        self.pool = BufferPool()    # shards sent away become warm receive buffers
        self.wl.pool = self.pool    # ... and warm arrays for the shards that arrive
        self.wl.policy = self.policy
        self.speed = SpeedModel(self.size, reference_kernel=self.wl.kernel)
        self.key: bytes | None = None
        self.tracer = Tracer(enabled=False)  # run() installs the --trace one
        self.local: dict[int, np.ndarray] = {}
        self.start_step = 0
        self.initial_placement: dict[str, Any] | None = None
        self.transport_probe: TransportProbeResult | None = None
        self.restarted_from: dict[str, Any] | None = None
        # a restart's checked manifest and its speed model (runner.checkpointing.open_restart,
        # before any compile or probe; restarted_from is set there too)
        self.restart_manifest: dict[str, Any] = {}
        self.restart_speed: SpeedModel | None = None
        self.steps: list[dict[str, Any]] = []
        self.plans: list[dict[str, Any]] = []
        self.deferred: list[int] = []  # rebalance points skipped (step counts; see loop.Deferral)
        self.audit: list[dict[str, Any]] = []
        self.setup_s: dict[str, float] = {}
        self.checkpoints: list[dict[str, Any]] = []  # seconds the loop spent on each
        self.measured_work = False  # the map's work units are a window's measurement
        self.recent_work: list[np.ndarray] = []  # the window before's work units, for topo
        self.scenario_work: list[np.ndarray] = []  # the last window's end, for topo
        # the planner's rank speeds from the windows' rates (made at the first rebalance,
        # with the speeds known then as its prior: the probe's, or a restart's)
        self.rate_estimate: RateEstimate | None = None
        self.ckpt_writer: CheckpointWriter | None = None  # made at the first checkpoint
        self.claims: RunClaims | None = None  # the validation pass's run id, config digest and folder locks
        # set by use_map and prepare (declared here, assigned there)
        self.shard_map: ShardMap
        self.compile_s: dict[str, float]
        self.cores: CoreShares
        self.calibrator: Calibrator
        self.links: LinkModel | None

    def use_map(self, shard_map) -> None:
        """Adopt a shard map with declared classes: effective halo classes, this topology's
        policy, and owners moved where the data may live."""
        if self.wl.halo:
            shard_map, self.policy = halo_closed(shard_map, self.topology)
            self.wl.policy = self.policy
        self.shard_map = place_resident(shard_map, self.policy)
        self.wl.refuse_residency(self.shard_map, self.policy)

    def check_local(self) -> None:
        """This rank holds only shards the map gives it, in regions their classes allow."""
        check_held(self.shard_map, self.policy, self.rank, self.local)


def prepare(comm, topology, cfg: RunConfig) -> Job:
    """Collective: build the job and put its data in place (see the module docstring)."""
    t0 = time.perf_counter()
    job = agree(comm, lambda: Job(comm, topology, cfg))
    agree(comm, lambda: job.use_map(job.wl.shard_map(job.size)))
    # everything that can be checked before any work: input, memory, output targets, disk
    job.claims = validate_run(comm, cfg, job.wl, run_id=job.run_id, shard_map=job.shard_map,
                              region_names=topology.region_names)
    try:
        key_file = cfg.key_file
        if key_file:
            from hpccloud.keys import load_key

            job.key = agree(comm, lambda: load_key(key_file, warn=job.rank == 0))
        if cfg.restart:  # a checkpoint this run cannot restart from is refused before any work
            from hpccloud.runner.checkpointing import open_restart

            open_restart(job)
        from hpccloud.compile import warm_up

        plans = job.size > 1 and cfg.balancer not in ("static", "even")  # a planner that moves shards
        planner_s: dict[str, float] = {}
        meanwhile = None
        if job.size > 1:
            from hpccloud.balance.warm import warm_planner

            # rank 0 plans every rebalance: it loads the planner's compiled code while the
            # others load the kernel (it would only wait there); the run's first plan no longer
            # pays it (topo: 40-60 ms of a no-move plan that costs 2-10 ms afterwards). static
            # and even too: their plans are priced on the same model, and their first
            # rebalance paid 16 and 53 ms more than their later ones (a cold cache: 1.9 s)
            def meanwhile():
                planner_s[f"planner:{cfg.balancer}"] = warm_planner(cfg.balancer)

        job.compile_s = {**warm_up([job.wl.kernel, *job.wl.helper_kernels], comm=comm, meanwhile=meanwhile), **planner_s}
        import numba

        job.cores = discover_cores(comm, numba.get_num_threads())
        job.links = None
        if cfg.restart and not cfg.profile:  # the same ranks on the same hosts: the saved links
            from hpccloud.runner.checkpointing import saved_links

            job.links = saved_links(job)
        job.links = job.links or _links(job)
        if job.size > 1:
            from hpccloud.measure.probe import probe_transport

            # what one transport call costs on these ranks (and the transport set up before
            # the first migration): the gate's price of a migration's fixed part until the
            # job's own migrations are enough to fit it
            # ... and with a shard of the job's median size: the per-byte prices of the first
            # migration (transport, pack and unpack) before the job has moved anything itself
            sizes = job.shard_map.nbytes()
            job.transport_probe = probe_transport(comm, topology, key=job.key,
                                                  shard_bytes=int(np.median(sizes)) if sizes.size else 0)
        job.setup_s["models"] = time.perf_counter() - t0
        if cfg.restart:
            from hpccloud.runner.checkpointing import restart

            restart(job)
        else:
            if cfg.initial_placement and plans:
                _place_initially(job)
            if cfg.input:
                _read_input(job)
            else:
                job.local = {s.id: job.wl.initial(s) for s in job.shard_map.shards_on(job.rank)}
        agree(comm, job.check_local)
        _calibrator(job, plans)
        job.setup_s["total"] = time.perf_counter() - t0
    except BaseException:
        # refused or failed before the loop: nothing was written, so folders this job
        # created go again (rank 0 holds the claims; elsewhere there are none)
        job.claims.abandon()
        raise
    return job


def _pool_solo(job: Job) -> tuple[float, ...]:
    """``Calibration.pool_solo`` for this job (set once, on its calibrator, at setup): per
    rank, its speed with its core group's cores to itself over its speed while the group
    computes; empty where no ranks share cores or the workload's step holds blocking
    collectives (a rank done early spins on its core)."""
    cores = job.cores
    if job.wl.spinning_collectives or not np.any(cores.oversubscribed):
        return ()
    alone = np.minimum(np.asarray(cores.threads, np.float64), cores.group_cores)
    return tuple(float(x) for x in alone / cores.cores_per_rank())


def _calibrator(job: Job, plans: bool) -> None:
    """The run's calibrator, on the priors measured so far: the transport probe's per-call
    cost, throughput, copy and fresh-memory rates, and (where shards will move) the
    workload's own pack and unpack timed on its data (:func:`~hpccloud.measure.probe.probe_packing`;
    without it, two plain copies per byte)."""
    probe = job.transport_probe
    priors = {} if probe is None else {"migration_fixed_s": probe.fixed_s, "per_call_s": probe.per_call_s,
                                       "route_s_per_byte": probe.s_per_byte,
                                       "pack_s_per_byte": 2.0 * probe.copy_s_per_byte,
                                       "fresh_s_per_byte": probe.fresh_s_per_byte}
    if plans and probe is not None:
        from hpccloud.measure.probe import probe_packing

        packing = probe_packing(job.comm, job.wl, job.shard_map, job.local)
        job.transport_probe = dataclasses.replace(probe, pack_s_per_byte=packing)
        if np.isfinite(packing):
            priors["pack_s_per_byte"] = packing
    job.calibrator = Calibrator(job.cores.hosts, job.topology.rank_region, rank_core=job.cores.group,
                                unpack_copies=job.wl.unpack_copies, pool_solo=_pool_solo(job),
                                **priors)


def _place_initially(job: Job) -> None:
    """Place the shards by measured rank speeds before any data exists: nothing moves.

    Every rank runs the workload's kernel at once for a short window
    (:func:`~hpccloud.measure.probe.probe_speed`, rated like the steps: CPU time ×
    cores for ranks that share cores); the shards carry the workload's estimate of
    their first step's work; the run's balancer plans from the map as built. The
    data is then created (or read) where the plan puts it.
    """
    from hpccloud.measure.probe import probe_speed

    t0 = time.perf_counter()
    # the probe's working set is a rank's share of the data, so it sits in the same level
    # of the memory hierarchy as the steps' will (a small in-cache probe flatters the
    # ranks whose cache is not shared): a rank's share of the map's work units, which are
    # the kernel's (spmv's non-zeros: sized by its rows, 1/16 of them, its probe ran in
    # cache at 1.9-2x the steps' rate)
    units = int(job.shard_map.work_units().sum()) // job.size
    job.speed = probe_speed(job.comm, job.wl.kernel, n_units=int(np.clip(units, 1 << 16, 1 << 22)),
                            window_s=0.2, cores=job.cores, inputs=job.wl.probe_inputs())
    opts = PlanOptions(horizon_steps=max(1, job.cfg.steps))
    steps = estimate_steps(job.cfg, job.start_step)

    def place():  # on the root only: an estimate may run the kernel on samples of every shard
        est = job.wl.work_forecast(job.shard_map.shards, steps).mean(axis=0)
        return plan(job.shard_map.with_work_units(est), job.links, job.speed, job.policy, opts,
                    planner=job.cfg.balancer)

    p = bcast_result(job.comm, place)
    job.shard_map = job.shard_map.with_owners(p.owners_after, version=job.shard_map.version)
    rec = p.to_json()
    for key in ("owners_before", "moves", "migration_s", "migration_bytes", "gate_passed",
                "horizon_total_s", "resource_cost"):
        rec.pop(key, None)
    job.initial_placement = {**rec, "n_placed_off_even": len(p.moves),
                             "speed": job.speed.to_json(), "seconds": time.perf_counter() - t0}


def estimate_steps(cfg: RunConfig, start: int, most: int = 4) -> list[int]:
    """The steps whose estimated work the initial placement is planned on: those it holds
    for, up to the first rebalance (the whole run without one), ``most`` of them evenly
    spread. A load that moves (a zoom, a sweeping hot spot) is placed for where it will
    be while the placement stands, not only where it starts.

    >>> estimate_steps(RunConfig(steps=60, rebalance_every=10), 0)
    [0, 1, 2]
    >>> estimate_steps(RunConfig(steps=20, rebalance_every=0), 4)
    [4, 9, 14, 19]
    """
    from hpccloud.runner.loop import next_rebalance

    end = next_rebalance(cfg, start)
    end = cfg.steps if end is None else min(end, cfg.steps)
    return spread_steps(list(range(start, max(end, start + 1))), most)


def _links(job: Job):
    """The link model: a fresh probe, or ``--profile`` checked against this job."""
    from hpccloud.measure.links import LinkModel
    from hpccloud.measure.probe import probe_links

    path = job.cfg.profile
    if not path:
        names = list(job.topology.region_names)  # sampled per level (issue 16), not every pair
        return probe_links(job.comm, job.cfg.probe_sizes,
                           rank_region=[names.index(g) for g in job.topology.rank_region],
                           hosts=list(job.topology.hosts)).model

    def load() -> dict[str, Any]:
        from hpccloud.io.profile import load_profile, read_profile_doc

        prof = load_profile(path)  # every key checked, one message naming it
        if len(prof["rank_regions"]) != job.size:
            raise ConfigError(f"{path}: measured on {len(prof['rank_regions'])} ranks, this job "
                              f"has {job.size}. Fix: probe again with this rank count")
        for r, (got, want) in enumerate(zip(job.topology.rank_region, prof["rank_regions"],
                                            strict=True)):
            if got != want:
                raise ConfigError(f"{path}: ranks[{r}].region is {want!r} but "
                                  f"{job.topology.source} maps rank {r} to {got!r}. Fix: pass "
                                  "the --topology file the probe ran with, or probe again")
        return read_profile_doc(path)

    doc = bcast_result(job.comm, load)
    return agree(job.comm, lambda: LinkModel.from_json(doc, path))


def _read_input(job: Job) -> None:
    from hpccloud.io.hdf5 import read_shards

    def read() -> dict[int, np.ndarray]:
        if job.wl.name not in ("stencil2d", "kmeans", "spmv"):
            raise InvalidArgument(f"--input: workload {job.wl.name!r} does not read an input "
                                  "array. Fix: use stencil2d, kmeans or spmv")
        path = job.cfg.input
        assert path is not None  # prepare reads an input only when --input is given
        return read_shards(path, job.cfg.input_dataset, job.shard_map, job.rank,
                           allow_nonfinite=job.cfg.allow_nonfinite)

    data = agree(job.comm, read)
    job.local = {sid: job.wl.unpack(job.shard_map.shards[sid], arr) for sid, arr in data.items()}
