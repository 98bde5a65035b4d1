"""Checkpoints: one HDF5 file per rank plus a JSON manifest, published atomically.

Layout of a checkpoint of step 40 under ``ckpt/``::

    ckpt/step-00000040/manifest.json     step, shard map, run state, shard checksums
    ckpt/step-00000040/rank-00000.h5     rank 0's shards (/shards/<id>, Fletcher-32 + xxh3)
    ...

Every rank writes its own file (the PyPI h5py is serial) into a hidden temp
folder; rank 0 writes the manifest last and renames the folder into place, so
a checkpoint folder either is complete or does not exist. On restart — with
any rank count — each rank reads only the shards it is given, from whichever
rank file holds them, and verifies each against the manifest's checksum
before it is used.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from typing import Any

import h5py
import numpy as np

from hpccloud.errors import ChecksumError, ConfigError
from hpccloud.io.atomic import fsync_path, write_bytes_atomic
from hpccloud.io.hdf5 import checksum, open_readonly

MANIFEST = "manifest.json"
FORMAT = "hpccloud-checkpoint-1"


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def _rank_file(rank: int) -> str:
    return f"rank-{rank:05d}.h5"


def write_checkpoint(comm, folder: str, step: int, shard_map_json: dict,
                     local: dict[int, np.ndarray], state: dict[str, Any]) -> str:
    """Collective: write a checkpoint of ``local`` shards and ``state``; return its path."""
    from hpccloud.comm.agree import agree, bcast_result

    rank = comm.Get_rank()
    final = os.path.join(os.path.abspath(folder), checkpoint_name(step))

    def make_tmp() -> str:
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(os.path.abspath(folder), f".{checkpoint_name(step)}.{uuid.uuid4().hex[:8]}.tmp")
        os.makedirs(tmp)
        return tmp

    tmp = bcast_result(comm, make_tmp)

    def write_mine() -> dict[int, str]:
        sums = {}
        path = os.path.join(tmp, _rank_file(rank))
        with h5py.File(path, "w") as f:
            grp = f.create_group("shards")
            for sid in sorted(local):
                arr = np.ascontiguousarray(local[sid])
                ds = grp.create_dataset(str(sid), data=arr, fletcher32=arr.size > 0,
                                        chunks=arr.shape if arr.size > 0 else None)
                sums[sid] = ds.attrs["xxh3"] = checksum(arr)
        fsync_path(path)
        return sums

    sums = agree(comm, write_mine)
    gathered = comm.gather(sums, root=0)

    def publish() -> str:
        shard_checksums = {}
        shard_rank = {}
        for r, part in enumerate(gathered):
            for sid, digest in part.items():
                shard_checksums[str(sid)] = digest
                shard_rank[str(sid)] = r
        manifest = {
            "format": FORMAT,
            "step": step,
            "ranks": comm.Get_size(),
            "files": [_rank_file(r) for r in range(comm.Get_size())],
            "shard_map": shard_map_json,
            "shard_checksums": shard_checksums,
            "shard_rank": shard_rank,
            "state": state,
        }
        write_bytes_atomic(os.path.join(tmp, MANIFEST), json.dumps(manifest).encode())
        fsync_path(tmp)
        if os.path.exists(final):  # a re-run of the same step: replace the old one whole
            old = final + f".old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_path(os.path.dirname(final))
        return final

    return bcast_result(comm, publish)


def read_manifest(path: str) -> dict[str, Any]:
    """Read and check a checkpoint's manifest (pure; raises ConfigError naming the path)."""
    mpath = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise ConfigError(f"{path}: not a checkpoint folder. Fix: pass a step-NNNNNNNN folder "
                          "written by `hpccloud run --checkpoint-every`")
    try:
        with open(mpath, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no {MANIFEST}; the checkpoint is incomplete. Fix: restart "
                          "from an earlier checkpoint") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{mpath}: unreadable manifest ({exc}). Fix: restart from an earlier "
                          "checkpoint") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise ConfigError(f"{mpath}: format {got!r}, expected {FORMAT!r}. Fix: pass a "
                          "checkpoint written by this version of hpccloud")
    missing = [k for k in ("step", "ranks", "shard_map", "shard_checksums", "shard_rank", "state")
               if k not in manifest]
    if missing:
        raise ConfigError(f"{mpath}: missing key(s) {missing}; the manifest is damaged. Fix: "
                          "restart from an earlier checkpoint")
    return manifest


def read_checkpoint_shards(path: str, manifest: dict[str, Any],
                           shard_ids) -> dict[int, np.ndarray]:
    """Read and verify the shards ``shard_ids`` from a checkpoint written by any rank count.

    Each shard is read from the rank file that holds it (``manifest["shard_rank"]``)
    and checked against the manifest's checksum before it is returned. Local (no MPI).
    """
    path = os.path.abspath(path)
    by_file: dict[int, list[int]] = {}
    for sid in shard_ids:
        try:
            by_file.setdefault(int(manifest["shard_rank"][str(sid)]), []).append(int(sid))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{path}/{MANIFEST}: shard_rank has no entry for shard {sid}. "
                              "Fix: restart from an earlier checkpoint") from None
    out = {}
    for writer, sids in sorted(by_file.items()):
        fpath = os.path.join(path, _rank_file(writer))
        with open_readonly(fpath) as f:
            for sid in sids:
                try:
                    arr = f["shards"][str(sid)][()]
                except (OSError, KeyError) as exc:
                    raise ChecksumError(f"{fpath}: shard {sid} is missing or corrupted ({exc}). "
                                        "Fix: restart from an earlier checkpoint") from None
                if checksum(arr) != manifest["shard_checksums"].get(str(sid)):
                    raise ChecksumError(f"{fpath}: shard {sid} fails its checksum. Fix: restart "
                                        "from an earlier checkpoint")
                out[sid] = arr
    return out


def read_checkpoint(comm, path: str) -> tuple[dict[str, Any], dict[int, np.ndarray]]:
    """Collective: ``(manifest, this rank's shards as the checkpoint placed them)``.

    Needs the rank count that wrote it; a restart on another rank count places
    the map first (:func:`hpccloud.runner.checkpointing.restart_map`) and then
    calls :func:`read_checkpoint_shards`.
    """
    from hpccloud.comm.agree import agree, bcast_result

    path = os.path.abspath(path)
    manifest = bcast_result(comm, lambda: read_manifest(path))
    if manifest["ranks"] != comm.Get_size():
        err = ConfigError(f"{path}: written by {manifest['ranks']} ranks, this job has "
                          f"{comm.Get_size()}. Fix: restart with mpiexec -n {manifest['ranks']}")
        err.collective = True
        raise err
    rank = comm.Get_rank()
    mine = [int(sid) for sid, r in manifest["shard_rank"].items() if r == rank]
    return manifest, agree(comm, lambda: read_checkpoint_shards(path, manifest, mine))
