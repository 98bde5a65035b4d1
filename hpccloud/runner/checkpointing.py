"""Checkpoint and restart stage.

A checkpoint holds every shard's payload, the shard map, the workload's
replicated state and the speed model (:mod:`hpccloud.io.checkpoint`). A restart
may run on another rank count and another topology: the checkpoint's map is
re-placed under *this* job's residency rules before any rank reads a byte —
owners kept where the rank exists and may hold the shard, otherwise the
work split evenly over this job's ranks and every shard moved to a rank its
class allows — and each rank then reads only its own shards. A class that can
live on no rank of this job stops the job first, with one message.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from hpccloud.comm.agree import agree, bcast_result
from hpccloud.errors import ConfigError
from hpccloud.io.checkpoint import (
    MANIFEST,
    CheckpointWriter,
    check_workload_map,
    parse_backup_dirs,
    read_checkpoint_shards,
    read_manifest,
)
from hpccloud.measure.speed import SpeedModel
from hpccloud.shards import ShardMap, assign_owners

#: "1": publish each checkpoint before the next step (no overlap; for comparisons)
SYNC_ENV = "HPCCLOUD_SYNC_CHECKPOINTS"


def start(job, next_step: int, on_published=None) -> None:
    r"""Collective: start the checkpoint of the job as it stands before ``next_step``.

    The payloads are handed to a writer thread (copies where the workload's
    pack returns the live array, which the next steps change); the loop goes on
    and :func:`finish` publishes the checkpoint once every rank's files are
    written (signed with ``--key-file``, copied to the ``--backup-dir``\ s the
    data classes allow). ``job.checkpoints`` records the seconds the loop spent.
    """
    t0 = time.perf_counter()
    if job.ckpt_writer is None:
        backups = agree(job.comm, lambda: parse_backup_dirs(job.cfg.backup_dir,
                                                            job.topology.region_names))
        job.ckpt_writer = CheckpointWriter(job.comm, job.cfg.checkpoint_dir, key=job.key,
                                           backups=backups, policy=job.policy,
                                           on_published=on_published)
    payloads = {}
    for sid, arr in job.local.items():
        payload = job.wl.pack(job.shard_map.shards[sid], arr)
        payloads[sid] = payload.copy() if np.may_share_memory(payload, arr) else payload
    state = {"workload": job.wl.name, "params": job.wl.params, "run_id": job.run_id,
             "workload_state": job.wl.state(), "speed": job.speed.to_json(),
             "links": job.links.to_json(), "hosts": list(job.topology.hosts),
             "rank_region": list(job.topology.rank_region)}
    job.ckpt_writer.start(next_step, job.shard_map.to_json(), payloads, state,
                          background=os.environ.get(SYNC_ENV) != "1")
    job.checkpoints.append({"step": next_step, "start_s": time.perf_counter() - t0})
    if os.environ.get(SYNC_ENV) == "1":
        finish(job, wait=True)


def finish(job, wait: bool = False) -> str | None:
    """Collective: publish the pending checkpoint (after every rank's writer is done)."""
    if job.ckpt_writer is None or not job.ckpt_writer.pending:
        return None
    t0 = time.perf_counter()
    path = job.ckpt_writer.finish(wait_publish=wait)
    rec = job.checkpoints[-1]
    rec["finish_s"] = time.perf_counter() - t0
    rec["finished_after_step"] = job.steps[-1]["step"] + 1 if job.steps else None
    return path


def close(job) -> None:
    """Collective: publish what is pending and wait for the last publish (end of the loop)."""
    if job.ckpt_writer is None:
        return
    t0 = time.perf_counter()
    finish(job)
    job.ckpt_writer.close()
    if job.checkpoints:
        job.checkpoints[-1]["close_s"] = time.perf_counter() - t0


def write(job, next_step: int) -> str | None:
    """Collective: checkpoint the job before ``next_step`` and publish it now; return the folder."""
    start(job, next_step)
    path = finish(job, wait=True)
    job.ckpt_writer.close()
    return path


def saved_links(job):
    """Collective: the checkpoint's link model if this job has the same ranks on the same
    hosts and regions (a restart then skips the link probe), else None (after
    :func:`open_restart`, whose manifest it reads)."""
    from hpccloud.measure.links import LinkModel

    st = job.restart_manifest["state"]
    same = (st.get("hosts") == list(job.topology.hosts)
            and st.get("rank_region") == list(job.topology.rank_region))
    doc = st.get("links") if same else None
    if doc is None:
        return None
    model = agree(job.comm, lambda: LinkModel.from_json(doc, f"{job.cfg.restart}: state.links"))
    return model if model.size == job.size else None


def restart_map(job, manifest: dict[str, Any], source: str) -> ShardMap:
    """The checkpoint's shard map placed on this job's ranks under this job's residency (pure)."""
    st = manifest["state"]
    if st.get("workload") != job.wl.name or st.get("params") != job.wl.params:
        raise ConfigError(f"{source}: checkpoint of workload {st.get('workload')!r} with "
                          f"{st.get('params')}, not of this run's {job.wl.name!r} with "
                          f"{job.wl.params}. Fix: restart with the same workload and parameters")
    declared = job.wl.shard_map(job.size)  # the declared classes, by shard id
    # the map must be the one the workload makes (shapes, dtype, shards): a re-sealed edit
    # of it would otherwise restart into a wrong array
    check_workload_map(manifest, declared, os.path.join(source, MANIFEST), job.wl.name,
                       job.wl.fixed_shapes)
    saved = ShardMap.from_json(manifest["shard_map"])
    base = saved.with_classes(declared.data_classes())
    owners = base.owners()
    if int(manifest["ranks"]) != job.size or owners.max(initial=0) >= job.size:
        # another rank count: the checkpointed work, split evenly in contiguous runs
        owners = assign_owners(np.maximum(base.work_units(), 1e-12), job.size)
    # use_map moves every shard its rank may not hold (this topology's rules) before any read
    job.use_map(base.with_owners(owners, version=base.version))
    return job.shard_map


def open_restart(job) -> None:
    """Collective: read and check the checkpoint's manifest and place its map on this job.

    Runs before the job compiles or probes anything: a checkpoint that cannot
    restart this run (signature, step, workload, residency) is refused first.
    Sets ``job.restart_manifest``, ``job.restart_speed`` and ``job.restarted_from``;
    :func:`restart` then reads the data.
    """
    t0 = time.perf_counter()
    path = os.path.abspath(job.cfg.restart)
    manifest = bcast_result(job.comm, lambda: read_manifest(path, job.key, "--restart"))
    step = int(manifest["step"])
    if step >= job.cfg.steps:
        raise _collective(ConfigError(
            f"{path}: the checkpoint is of step {step}, and --steps is {job.cfg.steps}: nothing "
            f"is left to run. Fix: pass --steps greater than {step}"))
    agree(job.comm, lambda: restart_map(job, manifest, path))
    job.restart_speed = agree(job.comm, lambda: SpeedModel.from_json(manifest["state"]["speed"],
                                                                   f"{path}: state.speed"))
    job.restart_manifest = manifest
    job.restarted_from = {"checkpoint": path, "step": step, "ranks_before": int(manifest["ranks"]),
                          "ranks_now": job.size, "run_id_before": manifest["state"].get("run_id"),
                          "seconds": time.perf_counter() - t0}


def restart(job) -> None:
    """Collective: each rank reads and checks its shards of the checkpoint :func:`open_restart`
    placed."""
    t0 = time.perf_counter()
    manifest, opened = job.restart_manifest, job.restarted_from
    mine = [s.id for s in job.shard_map.shards_on(job.rank)]
    data = agree(job.comm, lambda: read_checkpoint_shards(opened["checkpoint"], manifest, mine))
    job.local = {sid: job.wl.unpack(job.shard_map.shards[sid], arr) for sid, arr in data.items()}
    job.wl.load_state(manifest["state"]["workload_state"])
    speed = job.restart_speed
    if speed is not None and speed.size == job.size and opened["ranks_before"] == job.size:
        job.speed = speed  # same ranks: the measured speeds still describe them
    job.start_step = opened["step"]
    opened["seconds"] += time.perf_counter() - t0


def _collective(err):
    err.collective = True  # raised on every rank with the same inputs
    return err
