"""The up-front validation pass of ``hpccloud run``: one collective check before any work.

Order (each step fails on every rank with one message, printed once):

1. the workload's parameters (checked when it was made) and its shard map;
2. the input file's structure (:func:`hpccloud.io.hdf5.check_input`; values are
   checked shard by shard as they are read);
3. memory: every rank's estimate against what its node has, summed per node;
4. output targets, on rank 0: ``--output`` and ``--checkpoint-dir`` claimed
   (created, locked for the job, crashed runs' debris removed, another run's
   results refused unless ``--overwrite``), ``--plots`` created and probed,
   ``--json``/``--audit``/``--trace`` probed; then disk space for what the run
   will write.

The options object only needs the attributes it has (``getattr`` with
defaults), so this works with whichever run-options type the CLI builds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

from hpccloud.comm.agree import agree, bcast_result
from hpccloud.io.publish import FolderLock, claim_folder
from hpccloud.preflight import check_disk, check_memory, node_memory, probe_file, probe_folder
from hpccloud.topology import node_name


@dataclass
class RunClaims:
    """What the validation pass established: the run's id, its config digest, held locks."""

    run_id: str
    config_digest: str
    locks: dict[str, FolderLock] = field(default_factory=dict)

    @property
    def previous_output(self) -> dict[str, Any] | None:
        lock = self.locks.get("--output")
        return lock.previous if lock else None

    def release(self) -> None:
        for lock in self.locks.values():
            lock.release()
        self.locks.clear()

    def abandon(self) -> None:
        """Release after a failure: folders the claims created and nothing wrote into go."""
        for lock in self.locks.values():
            lock.abandon()
        self.locks.clear()


def config_digest(cfg) -> str:
    """sha256 of the options as canonical JSON (what a result was computed with)."""
    import msgspec

    if isinstance(cfg, msgspec.Struct):
        doc = msgspec.to_builtins(cfg)
    elif dataclasses.is_dataclass(cfg):
        doc = dataclasses.asdict(cast(Any, cfg))  # an instance, as before (a class raises)
    else:
        doc = dict(vars(cfg))
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _opt(cfg, name: str, default=None):
    return getattr(cfg, name, default)


def _claim_targets(cfg, run_id: str, claims: RunClaims, est) -> None:
    """Rank 0: create, lock and probe every output target; then disk space."""
    disk: list[tuple[str, str, int]] = []
    out = _opt(cfg, "output")
    if out:
        claims.locks["--output"] = claim_folder(out, run_id, "--output", bool(_opt(cfg, "overwrite")))
        disk.append(("--output", out, est.output_bytes))
    ckpt, every = _opt(cfg, "checkpoint_dir"), int(_opt(cfg, "checkpoint_every", 0) or 0)
    if ckpt:
        claims.locks["--checkpoint-dir"] = claim_folder(ckpt, run_id, "--checkpoint-dir", results=False)
        if every:
            count = max(1, int(_opt(cfg, "steps", 1) or 1) // every)
            disk.append(("--checkpoint-dir", ckpt, count * est.checkpoint_bytes))
    if _opt(cfg, "plots"):
        probe_folder("--plots", _opt(cfg, "plots"))
    for flag, name, append in (("--json", "json", False), ("--audit", "audit", True),
                               ("--trace", "trace", False)):
        if _opt(cfg, name):
            probe_file(flag, _opt(cfg, name), append=append)
    if disk:
        check_disk(disk)


def validate_run(comm, cfg, workload, run_id: str | None = None, shard_map=None) -> RunClaims:
    """Collective: every check of the module docstring; returns the run's claims.

    Raises the first problem found, as the same error on every rank. Locks are
    held by rank 0 (for the whole job; released when it ends).
    """
    size = comm.Get_size()
    if run_id is None:
        run_id = bcast_result(comm, lambda: uuid.uuid4().hex)
    claims = RunClaims(run_id, config_digest(cfg))
    if shard_map is None:
        shard_map = agree(comm, lambda: workload.shard_map(size))
    if _opt(cfg, "input"):
        from hpccloud.io.hdf5 import check_input

        bcast_result(comm, lambda: check_input(_opt(cfg, "input"), _opt(cfg, "input_dataset", "data"),
                                               shard_map.global_shape, shard_map.dtype))
    est = workload.estimate(size, output=bool(_opt(cfg, "output")))
    mem = node_memory()
    rows = comm.allgather((node_name(), est.peak_bytes_per_rank, mem.available_bytes))
    params = ", ".join(f"{k}={v}" for k, v in sorted(workload.params.items()))
    agree(comm, lambda: check_memory([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                                     f"workload {workload.name} ({params}) on {size} ranks",
                                     "launch on more nodes, or lower --param n"))

    def targets():
        try:
            _claim_targets(cfg, run_id, claims, est)
        except BaseException:
            claims.abandon()
            raise

    bcast_result(comm, targets)
    return claims


def publish_output(comm, claims: RunClaims, folder: str, step: int, files: list[str]) -> dict:
    """Collective: rank 0 writes the output folder's manifest last (see :mod:`hpccloud.io.publish`)."""
    from hpccloud.io.publish import publish

    names = [os.path.relpath(os.path.abspath(f), os.path.abspath(folder)) for f in files]
    return bcast_result(comm, lambda: publish(folder, claims.run_id, step, claims.config_digest,
                                              names, claims.previous_output))


__all__ = ["RunClaims", "config_digest", "publish_output", "validate_run"]
