"""The up-front validation pass of ``hpccloud run``: one collective check before any work.

Order (each step fails on every rank with one message, printed once):

1. the workload's parameters (checked when it was made) and its shard map;
2. the input file's structure (:func:`hpccloud.io.hdf5.check_input`; values are
   checked shard by shard as they are read);
3. memory: every rank's estimate against what its node has, summed per node;
4. output targets, on rank 0: no two of ``--output``, ``--checkpoint-dir`` and the
   ``--backup-dir`` paths the same folder or nested; ``--output`` and ``--checkpoint-dir`` claimed
   (created, locked for the job, crashed runs' debris removed, another run's
   results refused unless ``--overwrite``), the ``--backup-dir`` regions known and
   their folders and ``--plots`` created and probed,
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from hpccloud.comm.agree import agree, bcast_result
from hpccloud.errors import InvalidArgument
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


def refuse_shared_folders(folders: list[tuple[str, str | None]]) -> None:
    """Refuse two of the job's folders that are the same or one inside the other (pure).

    ``folders`` are ``(flag, path)``; None paths are skipped. Each folder is one unit
    (locked, cleaned of debris, its old files replaced), so none may hold another.

    >>> refuse_shared_folders([("--output", "/a/out"), ("--checkpoint-dir", "/a/out/ck")])
    Traceback (most recent call last):
    ...
    hpccloud.errors.InvalidArgument: --checkpoint-dir /a/out/ck is inside --output /a/out. Fix: give each its own folder, e.g. side by side
    """
    given = [(flag, path, os.path.realpath(path)) for flag, path in folders if path]
    for i, (fa, pa, ra) in enumerate(given):
        for fb, pb, rb in given[i + 1:]:
            if ra == rb:
                what = f"{fa} {pa} and {fb} {pb} are the same folder"
            elif rb.startswith(ra.rstrip(os.sep) + os.sep):
                what = f"{fb} {pb} is inside {fa} {pa}"
            elif ra.startswith(rb.rstrip(os.sep) + os.sep):
                what = f"{fa} {pa} is inside {fb} {pb}"
            else:
                continue
            raise InvalidArgument(f"{what}. Fix: give each its own folder, e.g. side by side")


def _claim_targets(cfg, run_id: str, claims: RunClaims, est,
                   region_names: Sequence[str] | None = None) -> None:
    """Rank 0: create, lock and probe every output target; then disk space."""
    disk: list[tuple[str, str, int]] = []
    out = _opt(cfg, "output")
    backups = []
    if _opt(cfg, "backup_dir") and region_names is not None:
        from hpccloud.io.checkpoint import parse_backup_dirs

        backups = parse_backup_dirs(_opt(cfg, "backup_dir"), region_names)
    refuse_shared_folders([("--output", out), ("--checkpoint-dir", _opt(cfg, "checkpoint_dir")),
                           *(("--backup-dir", path) for _, path in backups)])
    if out:
        claims.locks["--output"] = claim_folder(out, run_id, "--output", bool(_opt(cfg, "overwrite")))
        disk.append(("--output", out, est.output_bytes))
    ckpt, every = _opt(cfg, "checkpoint_dir"), int(_opt(cfg, "checkpoint_every", 0) or 0)
    if ckpt:
        claims.locks["--checkpoint-dir"] = claim_folder(ckpt, run_id, "--checkpoint-dir", results=False)
        if every:
            count = max(1, int(_opt(cfg, "steps", 1) or 1) // every)
            disk.append(("--checkpoint-dir", ckpt, count * est.checkpoint_bytes))
    for _, path in backups:
        probe_folder("--backup-dir", path)
    if _opt(cfg, "plots"):
        probe_folder("--plots", _opt(cfg, "plots"))
    for flag, name, append in (("--json", "json", False), ("--audit", "audit", True),
                               ("--trace", "trace", False)):
        if name == "trace" and str(_opt(cfg, name) or "").endswith(".otf2"):
            from hpccloud.trace_otf2 import check_otf2_target

            check_otf2_target(_opt(cfg, name))
        elif _opt(cfg, name):
            probe_file(flag, _opt(cfg, name), append=append)
    if disk:
        check_disk(disk)


def validate_run(comm, cfg, workload, run_id: str | None = None, shard_map=None,
                 region_names: Sequence[str] | None = None) -> RunClaims:
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
            _claim_targets(cfg, run_id, claims, est, region_names)
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
