"""The step loop: halo exchange, timed kernels, measured models, rebalancing, checkpoints.

One call of :func:`run` is one job. Every rank runs it; it returns the report
(the same dict on every rank). The loop, per step::

    halo exchange ── workload.begin_step ── kernel on every local shard (each
    timed, wall clock and CPU) ── workload.end_step ── sleeping allgather of
    the step's per-rank figures (the one synchronisation point of a step)

and after the first ``first_rebalance`` steps and every ``rebalance_every``
steps: per-shard work units and per-rank speeds are rebuilt from the timings
of the steps since the last rebalance (a shard's work units are its measured
seconds × its rank's measured rate, so they travel with it; ranks that share
cores are rated by CPU time × the cores they get, see
:mod:`hpccloud.measure.cores`); rank 0 plans with the chosen balancer and broadcasts the plan; the
transport moves the shards (checksummed buffers, residency re-checked) and every
transfer refits the link model. Predicted and achieved step and migration
times are both recorded.

Waits sleep instead of spinning (``sleeping_barrier``) so that when ranks share
cores, a rank that has finished leaves the core to one that has not.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hpccloud.comm.wait import sleeping_allgather, sleeping_barrier
from hpccloud.errors import ConfigError, InvalidArgument
from hpccloud.measure.cores import CoreShares, discover_cores, planner_rates
from hpccloud.measure.speed import SpeedModel
from hpccloud.shards import ShardMap
from hpccloud.workloads import make_workload
from hpccloud.workloads.base import with_classes

BALANCERS = ("static", "even", "greedy", "topo")
#: test mode: every rank checks each shard it holds against the policy at every step
CHECK_RESIDENCY_ENV = "HPCCLOUD_CHECK_RESIDENCY_EVERY_STEP"
#: "1": write checkpoints in the loop instead of a background thread (for comparisons)
SYNC_CHECKPOINT_ENV = "HPCCLOUD_SYNC_CHECKPOINTS"


@dataclass
class RunConfig:
    workload: str = "stencil2d"
    params: dict[str, Any] = field(default_factory=dict)
    steps: int = 60
    rebalance_every: int = 10
    first_rebalance: int | None = None     # default: 3 if rebalance_every >= 6; 0: none
    initial_placement: bool = True         # greedy/topo: place shards by a speed probe first
    balancer: str = "topo"
    seed: int = 0
    horizon_steps: int | None = None       # default: rebalance_every
    checkpoint_every: int = 0
    checkpoint_dir: str | None = None
    restart: str | None = None
    input: str | None = None
    input_dataset: str = "data"
    output: str | None = None
    key_file: str | None = None
    audit: str | None = None
    profile: str | None = None             # a `hpccloud probe --json` profile instead of a fresh probe
    probe_sizes: tuple[int, ...] = (8, 65536, 1 << 20)
    threads: int | None = None
    quiet: bool = False
    stall_timeout: float | None = None     # default: DEFAULT_STALL_TIMEOUT_S, grown with slow steps
    backup_dirs: tuple[str, ...] = ()      # REGION=PATH: region-aware checkpoint copies
    exclude_regions: tuple[str, ...] = ()  # regions dropped from the topology (recorded only)

    def validate(self) -> None:
        if self.steps < 1:
            raise InvalidArgument(f"--steps must be >= 1, got {self.steps}")
        if self.rebalance_every < 0:
            raise InvalidArgument(f"--rebalance-every must be >= 0, got {self.rebalance_every}")
        if self.first_rebalance is not None and self.first_rebalance < 0:
            raise InvalidArgument(f"--first-rebalance must be >= 0, got {self.first_rebalance}")
        if self.balancer not in BALANCERS:
            raise InvalidArgument(f"--balancer {self.balancer!r}: use one of {list(BALANCERS)}")
        if self.checkpoint_every < 0:
            raise InvalidArgument(f"--checkpoint-every must be >= 0, got {self.checkpoint_every}")
        if self.checkpoint_every and not self.checkpoint_dir:
            raise InvalidArgument("--checkpoint-every needs --checkpoint-dir DIR")
        if self.stall_timeout is not None and not self.stall_timeout > 0:
            raise InvalidArgument(f"--stall-timeout must be > 0 seconds, got {self.stall_timeout}")
        if self.backup_dirs and not self.checkpoint_every:
            raise InvalidArgument("--backup-dir copies checkpoints: it needs --checkpoint-every N "
                                  "--checkpoint-dir DIR")


# ----------------------------------------------------------------------------- residency


def halo_closed(shard_map: ShardMap, topology):
    """Shard map and policy in which a tile may only live where its neighbours' data may.

    A halo face is raw data of the neighbour tile: sending it to a rank is
    storing it there. So a tile whose neighbours have other data classes gets an
    *effective* class ``"a+b"`` whose allowed regions are the intersection. The
    halo exchange then never carries data across a border it may not cross.
    """
    from hpccloud.policy import Policy
    from hpccloud.topology import DataClass

    classes = dict(topology.data_classes)
    names = []
    for s in shard_map.shards:
        group = sorted({s.data_class, *(shard_map.shards[n].data_class for n in s.neighbours)})
        for c in group:
            if c not in classes:
                raise ConfigError(f"{topology.source}: the workload uses data class {c!r}, which "
                                  f"the topology does not declare. Fix: add [data_classes.{c}]")
        name = "+".join(group)
        if name not in classes:
            allowed = frozenset.intersection(*(classes[c].regions for c in group))
            if not allowed:
                raise ConfigError(f"{topology.source}: tile {s.id} neighbours data classes {group} "
                                  "that share no region, so its halo could live nowhere. Fix: "
                                  "allow the classes a common region")
            classes[name] = DataClass(name, allowed, all(classes[c].aggregates_may_leave for c in group))
        names.append(name)
    topo = dataclasses.replace(topology, data_classes=classes)
    return with_classes(shard_map, names), Policy.from_topology(topo)


def place_resident(shard_map: ShardMap, policy) -> ShardMap:
    """Move shards whose initial owner may not hold them to the least-loaded allowed rank.

    This is where data *starts*: in a region where it may live (pure, deterministic).
    """
    owners = shard_map.owners().copy()
    work = np.bincount(owners, weights=shard_map.work_units(), minlength=policy.topology.size)
    for s in shard_map.shards:
        allowed = sorted(policy.allowed_ranks(s.data_class))
        if not allowed:
            regions = sorted(policy.allowed_regions(s.data_class))
            raise ConfigError(f"{policy.topology.source}: data class {s.data_class!r} may live only "
                              f"in {regions}, and no rank of this job is there. Fix: map ranks "
                              "to one of those regions")
        if owners[s.id] not in allowed:
            best = min(allowed, key=lambda r: (work[r], r))
            work[owners[s.id]] -= s.work_units
            work[best] += s.work_units
            owners[s.id] = best
    if np.array_equal(owners, shard_map.owners()):
        return shard_map
    m = shard_map.with_owners(owners)
    return ShardMap(m.global_shape, m.dtype, m.shards, 0, m.grid, m.halo_width)


# ----------------------------------------------------------------------------- the job


class Job:
    """State of one run on one rank (see :func:`run`)."""

    def __init__(self, comm, topology, cfg: RunConfig):
        from hpccloud.policy import Policy

        self.comm, self.topology, self.cfg = comm, topology, cfg
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.wl = make_workload(cfg.workload, cfg.params, cfg.seed)
        self.policy = Policy.from_topology(topology)
        self.wl.policy = self.policy
        self.steps: list[dict[str, Any]] = []
        self.plans: list[dict[str, Any]] = []
        self.audit: list[dict[str, Any]] = []
        self.checkpoints: list[dict[str, Any]] = []  # step, seconds the loop spent on it
        self.start_step = 0
        self.speed = SpeedModel(self.size, reference_kernel=self.wl.kernel)
        self.key = None
        self._hx = None
        self._hx_version = -1
        from hpccloud.comm.bufpool import BufferPool

        self._pool = BufferPool()  # shards sent away become warm receive buffers
        self._writer = None  # CheckpointWriter, made at the first checkpoint
        self._progress_file = None  # the supervisor's progress file (rank 0), set by run()
        self.wl.pool = self._pool   # ... and warm arrays for the shards that arrive

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        from hpccloud.comm.agree import agree

        comm, cfg = self.comm, self.cfg
        shard_map = agree(comm, lambda: self.wl.shard_map(self.size))
        if self.wl.halo:
            shard_map, self.policy = agree(comm, lambda: halo_closed(shard_map, self.topology))
            self.wl.policy = self.policy
        self.shard_map = agree(comm, lambda: place_resident(shard_map, self.policy))
        if cfg.key_file:
            from hpccloud.comm.transport import load_key

            self.key = agree(comm, lambda: load_key(cfg.key_file))
        self._warm_up()
        import numba

        self.cores: CoreShares = discover_cores(comm, numba.get_num_threads())
        self.links = self._links()
        self.initial_placement = None
        if cfg.checkpoint_every:
            import hpccloud.io.checkpoint  # noqa: F401 - h5py's import is not a checkpoint's cost
        if cfg.restart:
            self._restart()
            return
        if cfg.initial_placement and cfg.balancer in ("greedy", "topo") and self.size > 1:
            self._place_initially()
        if cfg.input:
            self._read_input()
        else:
            self.local = {s.id: self.wl.initial(s) for s in self.shard_map.shards_on(self.rank)}

    def _place_initially(self) -> None:
        """Place the shards by measured rank speeds before any data exists: nothing moves.

        Every rank runs the workload's kernel at once for a short window
        (:func:`~hpccloud.measure.probe.probe_speed`, rated like the steps: CPU time ×
        cores for ranks that share cores); the shards carry the workload's estimate of
        their first step's work; the run's balancer plans from the map as built. The
        data is then created (or read) where the plan puts it.
        """
        from hpccloud.balance import PlanOptions, plan
        from hpccloud.comm.agree import bcast_result
        from hpccloud.measure.probe import probe_speed

        t0 = time.perf_counter()
        # the probe's working set is a rank's share of the data, so it sits in the same level
        # of the memory hierarchy as the steps' will (a small in-cache probe flatters the
        # ranks whose cache is not shared)
        cells = sum(int(np.prod(s.shape)) for s in self.shard_map.shards) // self.size
        self.speed = probe_speed(self.comm, self.wl.kernel, n_units=int(np.clip(cells, 1 << 16, 1 << 22)),
                                 window_s=0.2, cores=self.cores)
        est = self.shard_map.with_work_units(
            [self.wl.work_estimate(s, self.start_step) for s in self.shard_map.shards])
        opts = PlanOptions(horizon_steps=max(1, self.cfg.steps))
        p = bcast_result(self.comm, lambda: plan(est, self.links, self.speed, self.policy, opts,
                                                 planner=self.cfg.balancer))
        self.shard_map = self.shard_map.with_owners(p.owners_after)
        rec = p.to_json()
        for key in ("owners_before", "moves", "migration_s", "migration_bytes", "gate_passed",
                    "horizon_total_s", "resource_cost"):
            rec.pop(key, None)
        self.initial_placement = {**rec, "n_placed_off_even": len(p.moves),
                                  "speed": self.speed.to_json(),
                                  "seconds": time.perf_counter() - t0}

    def _warm_up(self) -> None:
        from hpccloud.compile import warm_up

        self.compile_s = warm_up([self.wl.kernel], comm=self.comm)

    def _links(self):
        from hpccloud.comm.agree import agree, bcast_result
        from hpccloud.measure.links import LinkModel
        from hpccloud.measure.probe import probe_links

        if self.cfg.profile:
            def load():
                import json

                try:
                    with open(self.cfg.profile) as fh:
                        doc = json.load(fh)
                except (OSError, ValueError) as exc:
                    raise ConfigError(f"{self.cfg.profile}: cannot read the profile ({exc}). Fix: "
                                      "write one with `hpccloud probe --json`") from None
                return doc

            doc = bcast_result(self.comm, load)
            model = agree(self.comm, lambda: LinkModel.from_json(doc, self.cfg.profile))
            if model.size != self.size:
                err = ConfigError(f"{self.cfg.profile}: measured on {model.size} ranks, this job "
                                  f"has {self.size}. Fix: probe again with this rank count")
                err.collective = True
                raise err
            return model
        return probe_links(self.comm, self.cfg.probe_sizes).model

    def _read_input(self) -> None:
        from hpccloud.comm.agree import agree
        from hpccloud.io.hdf5 import read_shards

        if self.wl.name not in ("stencil2d", "kmeans", "spmv"):
            raise InvalidArgument(f"--input: workload {self.wl.name!r} does not read an input "
                                  "array. Fix: use stencil2d, kmeans or spmv")
        data = agree(self.comm, lambda: read_shards(self.cfg.input, self.cfg.input_dataset,
                                                    self.shard_map, self.rank))
        self.local = {sid: self.wl.unpack(self.shard_map.shards[sid], arr) for sid, arr in data.items()}

    def _restart(self) -> None:
        from hpccloud.io.checkpoint import read_checkpoint

        manifest, payloads = read_checkpoint(self.comm, self.cfg.restart, key=self.key)
        if self.cfg.steps <= manifest["step"]:
            err = ConfigError(f"{self.cfg.restart}: the checkpoint is of step {manifest['step']} and "
                              f"--steps is {self.cfg.steps}: nothing is left to run. Fix: give "
                              f"--steps greater than {manifest['step']}")
            err.collective = True
            raise err
        st = manifest["state"]
        if st.get("workload") != self.wl.name or st.get("params") != self.wl.params:
            err = ConfigError(f"{self.cfg.restart}: checkpoint of workload {st.get('workload')!r} "
                              f"with {st.get('params')}, not of this run's {self.wl.name!r} with "
                              f"{self.wl.params}. Fix: restart with the same workload and parameters")
            err.collective = True
            raise err
        self.shard_map = ShardMap.from_json(manifest["shard_map"])
        self.local = {sid: self.wl.unpack(self.shard_map.shards[sid], arr) for sid, arr in payloads.items()}
        self.wl.load_state(st["workload_state"])
        self.speed = SpeedModel.from_json(st["speed"])
        self.start_step = int(manifest["step"])

    # ------------------------------------------------------------------ one step
    def step(self, step: int) -> dict[str, Any]:
        comm = self.comm
        # the previous step's allgather (or the loop's barrier) lined the ranks up
        t0 = time.perf_counter()
        halo_s = 0.0
        if self.wl.halo:
            from hpccloud.comm.halo import HaloExchange

            if self._hx is None or self._hx_version != self.shard_map.version:
                if self._hx is not None:
                    self._hx.free()
                self._hx, self._hx_version = HaloExchange(comm, self.shard_map), self.shard_map.version
            self._hx.exchange(self.local)
            halo_s = time.perf_counter() - t0
        self.wl.begin_step(comm, self.shard_map, self.local, step)
        shard_s: dict[int, float] = {}
        units = 0.0
        c0 = time.process_time()
        for sid in sorted(self.local):
            shard = self.shard_map.shards[sid]
            ts = time.perf_counter()
            self.local[sid], u = self.wl.compute(shard, self.local[sid], step)
            shard_s[sid] = time.perf_counter() - ts
            units += u
        busy_cpu_s = time.process_time() - c0
        busy_s = sum(shard_s.values())
        self.shard_map = self.wl.end_step(comm, self.shard_map, self.local, step)
        step_s = time.perf_counter() - t0
        # whether this rank's checkpoint writer is done rides on the step's one collective
        written = float(self._writer is not None and self._writer.ready())
        rows = sleeping_allgather(comm, (busy_s, halo_s, units, step_s, busy_cpu_s, written))
        self._checkpoint_written = bool(rows[:, 5].all())
        rec = {
            "step": step,
            "step_s": float(rows[:, 3].max()),
            "busy_s": rows[:, 0].tolist(),
            "halo_s": rows[:, 1].tolist(),
            "work_units": rows[:, 2].tolist(),
            "busy_cpu_s": rows[:, 4].tolist(),
        }
        # per-shard timings stay local until the next rebalance gathers them once
        for sid, sec in shard_s.items():
            self._win_shard_s[sid] = self._win_shard_s.get(sid, 0.0) + sec
            self._win_shard_n[sid] = self._win_shard_n.get(sid, 0) + 1
        self._win_steps += 1
        return rec

    def _window_steps(self) -> list[dict[str, Any]]:
        """The step records since the last rebalance (or the first-touch step)."""
        return self.steps[len(self.steps) - self._win_steps:]

    def _reset_window(self) -> None:
        self._win_steps = 0
        self._win_shard_s: dict[int, float] = {}
        self._win_shard_n: dict[int, int] = {}

    # ------------------------------------------------------------------ rebalancing
    def _measured_models(self) -> None:
        """Speeds and shard work units from the steps since the last rebalance."""
        size = self.size
        units = np.zeros(size)
        secs = np.zeros(size)
        cpu = np.zeros(size)
        for rec in self._window_steps():
            units += rec["work_units"]
            secs += rec["busy_s"]
            cpu += rec["busy_cpu_s"]
        shard_s = np.zeros(len(self.shard_map))
        shard_n = np.zeros(len(self.shard_map))
        for part_s, part_n in self.comm.allgather((self._win_shard_s, self._win_shard_n)):
            for sid, sec in part_s.items():
                shard_s[sid] += sec
                shard_n[sid] += part_n[sid]
        old = self.speed.rate(self.wl.kernel)
        wall = np.where(secs > 0, units / np.maximum(secs, 1e-300), np.nan)
        cpu_rate = np.where((cpu > 0) & (units > 0), units / np.maximum(cpu, 1e-300), np.nan)
        rate = planner_rates(wall, cpu_rate, self.cores)
        self._rates = {"wall": wall, "cpu": cpu_rate, "planner": rate.copy()}
        rate = np.where(np.isfinite(rate), rate, old)
        if not np.isfinite(rate).any():
            rate = np.ones(size)
        rate = np.where(np.isfinite(rate), rate, np.nanmedian(rate))
        self.speed.set_rates(self.wl.kernel, rate)
        owners = self.shard_map.owners()
        mean_s = np.where(shard_n > 0, shard_s / np.maximum(shard_n, 1), 0.0)
        # a shard's units: its share of its rank's wall time × that rank's wall rate
        work = mean_s * np.where(np.isfinite(wall), wall, rate)[owners]
        self.shard_map = self.shard_map.with_work_units(work)

    def rebalance(self, step: int, horizon: int) -> None:
        from hpccloud.balance import PlanOptions, plan
        from hpccloud.comm.agree import bcast_result

        self._measured_models()

        def make_plan():
            return plan(self.shard_map, self.links, self.speed, self.policy,
                        PlanOptions(horizon_steps=horizon), planner=self.cfg.balancer)

        p = bcast_result(self.comm, make_plan)
        record = {"after_step": step, **p.to_json(),
                  "rates_units_per_s": {k: [None if not np.isfinite(x) else float(x) for x in v]
                                        for k, v in self._rates.items()}}
        record.pop("owners_before", None)
        record.pop("owners_after", None)
        if p.moves:
            record.update(self.migrate(p.owners_after))
        window = self._window_steps() or self.steps
        record["achieved_step_s_before"] = float(np.median([s["step_s"] for s in window]))
        self.plans.append(record)

    def migrate(self, owners_after: np.ndarray) -> dict[str, Any]:
        from hpccloud.comm.transport import execute

        comm = self.comm
        moving = np.asarray(owners_after) != self.shard_map.owners()
        # only the shards that leave are packed (a pack may copy: e.g. a tile without its halo)
        payloads = {sid: self.wl.pack(self.shard_map.shards[sid], arr)
                    for sid, arr in self.local.items() if moving[sid]}
        sleeping_barrier(comm)
        t0 = time.perf_counter()
        new_map, new_payloads, records = execute(comm, self.shard_map, payloads, owners_after,
                                                 self.policy, key=self.key, audit=self.cfg.audit,
                                                 pool=self._pool)
        sleeping_barrier(comm)
        achieved = max(comm.allgather(time.perf_counter() - t0))
        # stayed: keep the stored array (with its halo); arrived: rebuild it from the payload
        local = {sid: arr for sid, arr in self.local.items() if not moving[sid]}
        for sid, payload in new_payloads.items():
            local[sid] = self.wl.unpack(new_map.shards[sid], payload)
            if not np.may_share_memory(local[sid], payload):
                self._pool.give(payload)  # unpacked into its own array: the payload is free
        recycle = self.wl.recycle_departed
        for sid in set(self.local) - set(local):
            self.wl.forget(sid)
            if recycle and not np.may_share_memory(self.local[sid], payloads[sid]):
                self._pool.give(self.local[sid])  # left, and not handed to the transport as is
        self.local = local
        self.shard_map = new_map
        all_records = [_record_json(r) for r in records]  # the same list on every rank
        for r in all_records:
            self.links.add_sample(r["src_rank"], r["dst_rank"], r["nbytes"], r["seconds"])
        self.links.refit()
        self.audit.extend(all_records)
        moved = sum(r["nbytes"] for r in all_records)
        cross = sum(r["nbytes"] for r in all_records if r["src_region"] != r["dst_region"])
        return {"achieved_migration_s": achieved, "moved_bytes": moved, "cross_region_bytes": cross}

    # ------------------------------------------------------------------ checkpoints and output
    def checkpoint(self, next_step: int) -> None:
        """Start the checkpoint of ``next_step``: its files are written while the next steps run.

        The payloads are copies where the workload's pack returns the live
        array (the loop changes it); :meth:`finish_checkpoint` publishes it.
        """
        if self._writer is None:
            from hpccloud.comm.agree import agree
            from hpccloud.io.checkpoint import CheckpointWriter, parse_backup_dirs

            backups = agree(self.comm, lambda: parse_backup_dirs(self.cfg.backup_dirs,
                                                                 self.topology.region_names))
            self._writer = CheckpointWriter(self.comm, self.cfg.checkpoint_dir, key=self.key,
                                            backups=backups, policy=self.policy,
                                            on_published=self._progress_file.checkpoint)
        payloads = {}
        for sid, arr in self.local.items():
            payload = self.wl.pack(self.shard_map.shards[sid], arr)
            payloads[sid] = payload.copy() if np.may_share_memory(payload, arr) else payload
        state = {"workload": self.wl.name, "params": self.wl.params,
                 "workload_state": self.wl.state(), "speed": self.speed.to_json()}
        self._writer.start(next_step, self.shard_map.to_json(), payloads, state,
                           background=os.environ.get(SYNC_CHECKPOINT_ENV) != "1")

    def finish_checkpoint(self, wait: bool = False) -> str | None:
        """Collective: publish the pending checkpoint (waits for its writer threads)."""
        if self._writer is None or not self._writer.pending:
            return None
        t0 = time.perf_counter()
        path = self._writer.finish(wait_publish=wait)
        rec = self.checkpoints[-1]
        rec["finish_s"] = time.perf_counter() - t0
        rec["finished_after_step"] = self.steps[-1]["step"] + 1 if self.steps else None
        return path

    def write_output(self) -> dict[str, Any]:
        """One HDF5 file per region, written by the region's lowest rank, plus the catalogue."""
        from hpccloud.comm.agree import agree, bcast_result
        from hpccloud.comm.regions import gather_to_region_leader
        from hpccloud.io.hdf5 import write_catalogue, write_region_file

        folder = os.path.abspath(self.cfg.output)
        bcast_result(self.comm, lambda: os.makedirs(folder, exist_ok=True))
        rmap = self.wl.result_map(self.shard_map)
        results = {sid: self.wl.result(self.shard_map.shards[sid], arr) for sid, arr in self.local.items()}
        region = self.topology.region_of(self.rank)
        leader, gathered = gather_to_region_leader(self.comm, self.topology, rmap, results)
        path = os.path.join(folder, f"{region}.h5")
        # the data classes decide where results may be stored: check against the data map's
        classes_map = with_classes(rmap, self.shard_map.data_classes())

        def write():
            if leader:
                write_region_file(path, region, classes_map, gathered, policy=self.policy,
                                  attrs={"workload": self.wl.name})
        agree(self.comm, write)
        files = {g: os.path.join(folder, f"{g}.h5") for g in set(self.topology.rank_region)}
        shard_region = {s.id: self.topology.region_of(s.owner_rank) for s in rmap.shards}
        cat = os.path.join(folder, "catalogue.h5")
        bcast_result(self.comm, lambda: write_catalogue(cat, rmap, files, shard_region))
        return {"catalogue": cat, "region_files": files}

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        from hpccloud.comm import watchdog
        from hpccloud.supervise import ProgressWriter
        from hpccloud.testing.faults import maybe_fault

        cfg = self.cfg
        self._reset_window()
        t_start = time.perf_counter()
        progress = _Progress(self.rank == 0 and not cfg.quiet, cfg.steps, self.start_step)
        supervised = ProgressWriter() if self.rank == 0 else ProgressWriter("")
        supervised.start(self.start_step)
        self._progress_file = supervised
        wd = watchdog.Watchdog(self.comm, cfg.stall_timeout or watchdog.DEFAULT_STALL_TIMEOUT_S,
                               lambda r: f"host {self.topology.hosts[r]}, region {self.topology.region_of(r)}")
        watchdog.install(wd)
        check_residency = os.environ.get(CHECK_RESIDENCY_ENV) == "1"
        sleeping_barrier(self.comm)
        for step in range(self.start_step, cfg.steps):
            maybe_fault(self.rank, step)
            if check_residency:
                self.check_residency(step)
            self.steps.append(self.step(step))
            wd.progress(step, self.steps[-1]["step_s"])
            supervised.step(step + 1)
            if self._checkpoint_written:  # every rank's files are written: publish now
                self.finish_checkpoint()
            progress.update(step, self.steps[-1]["step_s"])
            done = step + 1
            nxt = next_rebalance(cfg, step)
            if step == self.start_step and cfg.steps - step > 2 and nxt != done:
                self._reset_window()  # the first step pays first-touch and cache costs: not a rate
            if nxt == done and done < cfg.steps:
                after = next_rebalance(cfg, done)
                horizon = cfg.horizon_steps or min((after or cfg.steps) - done, cfg.steps - done)
                t_rb = time.perf_counter()
                self.rebalance(step, horizon)
                self._reset_window()
                sleeping_barrier(self.comm)
                self.plans[-1]["rebalance_wall_s"] = time.perf_counter() - t_rb
                progress.log(self.plans[-1])
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0:
                t_ck = time.perf_counter()
                self.checkpoint(done)
                self.checkpoints.append({"step": done, "start_s": time.perf_counter() - t_ck})
                if os.environ.get(SYNC_CHECKPOINT_ENV) == "1":
                    self.finish_checkpoint(wait=True)
        if self._writer is not None:
            t0 = time.perf_counter()
            self.finish_checkpoint()
            self._writer.close()
            if self.checkpoints:
                self.checkpoints[-1]["close_s"] = time.perf_counter() - t0
        total_s = time.perf_counter() - t_start
        watchdog.install(None)
        wd.free()
        supervised.close()
        progress.close()
        if self._hx is not None:
            self._hx.free()
            self._hx = None
        self._fill_achieved()
        out = self.write_output() if cfg.output else None
        return self.report(total_s, out)

    def check_residency(self, step: int) -> None:
        """Test mode (``HPCCLOUD_CHECK_RESIDENCY_EVERY_STEP=1``): every shard held here may live here.

        Checks the shards this rank holds (not what the map says it should):
        the map must say it owns them and the policy must allow its region.
        """
        from hpccloud.comm.agree import agree
        from hpccloud.errors import ResidencyError

        region = self.topology.region_of(self.rank)

        def check():
            for sid in sorted(self.local):
                s = self.shard_map.shards[sid]
                if s.owner_rank != self.rank or not self.policy.may_live(s.data_class, region):
                    raise ResidencyError(f"step {step}: rank {self.rank} ({region}) holds shard {sid} "
                                         f"of data class {s.data_class!r} (map owner {s.owner_rank}, "
                                         f"allowed {sorted(self.policy.allowed_regions(s.data_class))})")
        agree(self.comm, check)

    def _fill_achieved(self) -> None:
        for p in self.plans:
            after = [s["step_s"] for s in self.steps if s["step"] > p["after_step"]]
            nxt = [q["after_step"] for q in self.plans if q["after_step"] > p["after_step"]]
            if nxt:
                after = [s["step_s"] for s in self.steps if p["after_step"] < s["step"] <= nxt[0]]
            p["achieved_step_s_after"] = float(np.median(after)) if after else None

    def report(self, total_s: float, output) -> dict[str, Any]:
        busy = np.array([s["busy_s"] for s in self.steps]).sum(axis=0) if self.steps else np.zeros(self.size)
        return {
            "kind": "hpccloud-run",
            "config": {k: v for k, v in dataclasses.asdict(self.cfg).items()},
            "workload_params": self.wl.params,
            "topology": self.topology.to_json(),
            "ranks": self.size,
            "links": self.links.to_json(),
            "speed": self.speed.to_json(),
            "cores": self.cores.to_json(),
            "initial_placement": self.initial_placement,
            "compile_s": self.compile_s,
            "steps": self.steps,
            "plans": self.plans,
            "checkpoints": self.checkpoints,
            "audit": self.audit,
            "total_s": total_s,
            "busy_s_per_rank": busy.tolist(),
            "busy_max_over_mean": float(busy.max() / busy.mean()) if busy.mean() > 0 else None,
            "bytes_moved": int(sum(p.get("moved_bytes", 0) for p in self.plans)),
            "cross_region_bytes": int(sum(p.get("cross_region_bytes", 0) for p in self.plans)),
            "summary": self.wl.summary(),
            "output": output,
            "final_owners": self.shard_map.owners().tolist(),
        }


def next_rebalance(cfg: RunConfig, step: int) -> int | None:
    """The step count after which the next rebalance comes, looking from after ``step``
    (``None``: no more). Rebalances come after ``first_rebalance`` steps (default 3,
    as soon as two steps past the first-touch one measured the ranks, when
    ``rebalance_every >= 6``; with a shorter K the first multiple is early enough) and
    after every multiple of ``rebalance_every``.

    >>> cfg = RunConfig(steps=30, rebalance_every=10)
    >>> [next_rebalance(cfg, s) for s in (0, 2, 3, 9, 25)]
    [3, 3, 10, 10, 30]
    >>> next_rebalance(RunConfig(rebalance_every=0), 0) is None
    True
    """
    done = step + 1
    k = cfg.rebalance_every
    first = cfg.first_rebalance if cfg.first_rebalance is not None else (3 if k >= 6 else 0)
    points = []
    if first and first >= done:
        points.append(first)
    if k:
        points.append(-(-done // k) * k)
    return min(points) if points else None


def _record_json(r) -> dict[str, Any]:
    return r if isinstance(r, dict) else r.to_json()


class _Progress:
    """Rank 0's progress: a live line with ETA on a terminal, plain log lines otherwise."""

    def __init__(self, enabled: bool, steps: int, start: int):
        self.enabled, self.steps, self.start = enabled, steps, start
        self.tty = enabled and sys.stdout.isatty()
        self.t0 = time.perf_counter()
        self.every = max(1, (steps - start) // 10)

    def update(self, step: int, step_s: float) -> None:
        if not self.enabled:
            return
        done = step + 1 - self.start
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / done * (self.steps - step - 1)
        line = f"step {step + 1}/{self.steps}  {step_s * 1e3:8.2f} ms/step  ETA {eta:6.1f} s"
        if self.tty:
            sys.stdout.write("\r" + line)
            sys.stdout.flush()
        elif done % self.every == 0 or step + 1 == self.steps:
            print(line, flush=True)

    def log(self, p: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.tty:
            sys.stdout.write("\n")
        print(f"rebalance after step {p['after_step'] + 1}: {p['planner']}: predicted makespan "
              f"{p['makespan_before_s'] * 1e3:.2f} -> {p['makespan_after_s'] * 1e3:.2f} ms, "
              f"imbalance {p['imbalance_before']:.2f} -> {p['imbalance_after']:.2f}, "
              f"{len(p['moves'])} moves, {p.get('moved_bytes', 0) / 1e6:.1f} MB "
              f"({'gate passed' if p['gate_passed'] else 'gate closed: no move'})", flush=True)

    def close(self) -> None:
        if self.tty:
            sys.stdout.write("\n")


def run(comm, topology, cfg: RunConfig) -> dict[str, Any]:
    """Run one job collectively on ``comm``; return the report (same on every rank)."""
    from hpccloud.comm.agree import agree

    agree(comm, cfg.validate)
    job = agree(comm, lambda: Job(comm, topology, cfg))
    job.setup()
    return job.run()
