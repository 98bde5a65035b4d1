"""Checkpoints: one HDF5 file per rank plus an integrity-protected JSON manifest.

Layout of a checkpoint of step 40 under ``ckpt/``::

    ckpt/step-00000040/manifest.json     step, shard map, run state, shard checksums, integrity
    ckpt/step-00000040/rank-00000.h5     rank 0's shards (/shards/<id>, each with its xxh3)
    ...

Every rank writes its own file (the PyPI h5py is serial) into a hidden temp
folder; rank 0 writes the manifest last and renames the folder into place, so
a checkpoint folder either is complete or does not exist.
:class:`CheckpointWriter` does the writing in a thread per rank while the job
goes on stepping, and publishes once every rank's files are written.

Integrity
    The manifest carries ``integrity.sha256``, a digest of its own canonical
    JSON (every key but ``integrity``), and ``integrity.hmac_sha256`` when the
    job was given a key file: an edited ``step`` or shard map is refused on
    read. Every shard is verified against the manifest's xxh3 checksum before
    it is used.

Restart on other rank counts
    :func:`read_checkpoint_shards` reads any set of shards from whichever rank files hold
    them, so a job of M ranks can restart from a checkpoint written by N.

Backups
    ``backups=[(region, folder), ...]`` copies each rank file to every backup
    location whose region may hold *all* the data classes of the shards in
    that file (:func:`backup_allowed`); the manifest goes along only where the
    run state may live too (its classes live there, or their aggregates may
    leave). A backup copy is published atomically like the primary one and
    records which rank files it holds.

>>> body = {"format": FORMAT, "step": 3}
>>> m = seal_manifest(body, key=b"k" * 32)
>>> check_integrity(m, "x/manifest.json", key=b"k" * 32)["step"]
3
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from hpccloud.errors import ChecksumError, ConfigError, InvalidArgument
from hpccloud.io.atomic import fsync_path, write_bytes_atomic
from hpccloud.io.hdf5 import checksum, open_readonly

if TYPE_CHECKING:
    import threading

MANIFEST = "manifest.json"
FORMAT = "hpccloud-checkpoint-2"
_NAME = re.compile(r"step-(\d{8})")
_HMAC_INFO = b"hpccloud checkpoint manifest v2"

#: required manifest keys and their JSON types
_REQUIRED = {"format": str, "step": int, "ranks": int, "files": list, "shard_map": dict,
             "shard_checksums": dict, "shard_rank": dict, "state": dict, "integrity": dict}


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def rank_file(rank: int) -> str:
    return f"rank-{rank:05d}.h5"


# ----------------------------------------------------------------------------- integrity


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _mac(body: dict[str, Any], key: bytes) -> str:
    # a key of its own for manifests, derived from the job's key file (never the AES key itself)
    mac_key = hmac.new(bytes(key), _HMAC_INFO, hashlib.sha256).digest()
    return hmac.new(mac_key, _canonical(body), hashlib.sha256).hexdigest()


def seal_manifest(body: dict[str, Any], key: bytes | None = None) -> dict[str, Any]:
    """``body`` plus ``integrity``: its sha256 and, with ``key``, an HMAC-SHA256 (pure)."""
    body = {k: v for k, v in body.items() if k != "integrity"}
    integrity = {"sha256": hashlib.sha256(_canonical(body)).hexdigest()}
    if key is not None:
        integrity["hmac_sha256"] = _mac(body, key)
    return {**body, "integrity": integrity}


def check_integrity(manifest: dict[str, Any], mpath: str, key: bytes | None = None) -> dict[str, Any]:
    """Raise :class:`ChecksumError` unless ``manifest`` matches its own digest (and MAC)."""
    integrity = manifest.get("integrity")
    if not isinstance(integrity, dict) or "sha256" not in integrity:
        raise ChecksumError(f"{mpath}: the manifest has no integrity record. Fix: restart from a "
                            "checkpoint written by this hpccloud version")
    body = {k: v for k, v in manifest.items() if k != "integrity"}
    if not hmac.compare_digest(str(integrity["sha256"]), hashlib.sha256(_canonical(body)).hexdigest()):
        raise ChecksumError(f"{mpath}: the manifest does not match its sha256; it was edited or "
                            "damaged after it was written. Fix: restart from another checkpoint")
    mac = integrity.get("hmac_sha256")
    if mac is not None and key is None:
        raise ConfigError(f"{mpath}: the manifest is signed with a key (HMAC). Fix: pass the key "
                          "file it was written with (--key-file)")
    if key is not None:
        if mac is None:
            raise ChecksumError(f"{mpath}: the manifest is not signed, but a key file was given; "
                                "an unsigned manifest may have been substituted. Fix: restart from "
                                "a checkpoint written with this key, or without --key-file")
        if not hmac.compare_digest(str(mac), _mac(body, key)):
            raise ChecksumError(f"{mpath}: the manifest's HMAC does not match this key; it was "
                                "edited, or written with another key. Fix: pass the right "
                                "--key-file or restart from another checkpoint")
    return manifest


def _check_keys(manifest: Any, mpath: str) -> None:
    """One ConfigError naming every missing or mistyped key (pure)."""
    if not isinstance(manifest, dict):
        raise ConfigError(f"{mpath}: expected a JSON object, got {type(manifest).__name__}. Fix: "
                          "restart from another checkpoint")
    missing = [k for k in _REQUIRED if k not in manifest]
    wrong = [f"{k} (expected {t.__name__}, got {type(manifest[k]).__name__})"
             for k, t in _REQUIRED.items()
             if k in manifest and (not isinstance(manifest[k], t) or isinstance(manifest[k], bool))]
    if missing or wrong:
        parts = ([f"missing keys {missing}"] if missing else []) + ([f"wrong types: {', '.join(wrong)}"]
                                                                     if wrong else [])
        raise ConfigError(f"{mpath}: not a complete checkpoint manifest: {'; '.join(parts)}. Fix: "
                          "restart from another checkpoint (`hpccloud checkpoint list DIR` shows "
                          "the verified ones)")
    shards = manifest["shard_map"].get("shards")
    n = len(shards) if isinstance(shards, list) else len(manifest["shard_rank"])
    ids = {str(i) for i in range(n)}
    for key in ("shard_checksums", "shard_rank"):
        if set(manifest[key]) != ids:
            raise ConfigError(f"{mpath}: {key} does not cover the shard map's {n} shards. Fix: "
                              "restart from another checkpoint")
    if manifest["step"] < 0 or manifest["ranks"] < 1 or len(manifest["files"]) != manifest["ranks"]:
        raise ConfigError(f"{mpath}: step {manifest['step']}, ranks {manifest['ranks']} and "
                          f"{len(manifest['files'])} files do not fit together. Fix: restart "
                          "from another checkpoint")
    bad = [s for s, r in manifest["shard_rank"].items()
           if not isinstance(r, int) or not 0 <= r < manifest["ranks"]]
    if bad:
        raise ConfigError(f"{mpath}: shard_rank[{bad[0]}] names no rank of the {manifest['ranks']} "
                          "that wrote it. Fix: restart from another checkpoint")


def _edited(mpath: str, what: str) -> ConfigError:
    return ConfigError(f"{mpath}: {what.rstrip('.')}. The manifest is not the one hpccloud wrote (it was "
                       "edited and re-sealed, or damaged before sealing). Fix: restart from "
                       "another checkpoint")


def _plain_name(name: Any) -> bool:
    return (isinstance(name, str) and name not in ("", ".", "..") and "\0" not in name
            and os.path.basename(name) == name and not os.path.isabs(name))


def saved_map(manifest: dict[str, Any], mpath: str):
    """The manifest's shard map as a :class:`~hpccloud.shards.ShardMap` (ConfigError naming the
    key when it is not one; pure)."""
    from hpccloud.shards import ShardMap

    try:
        return ShardMap.from_json(manifest["shard_map"])
    except InvalidArgument as exc:
        raise _edited(mpath, f"shard_map: {exc}".replace(" Fix: write it with ShardMap.to_json()",
                                                         "")) from None


def _check_consistent(manifest: dict[str, Any], mpath: str) -> None:
    """The manifest agrees with itself: plain file names inside the folder, and a shard map
    whose shards fit its global shape, dtype and rank count (pure; ConfigError naming the key).

    A manifest whose shard map has no ``shards`` (a bare payload checkpoint written
    through this module directly) has only its file names checked; a restart needs the map and checks it against its workload
    (:func:`check_workload_map`)."""
    files = manifest["files"]
    for i, name in enumerate(files):
        if not _plain_name(name):
            raise _edited(mpath, f"files[{i}] is {name!r}, not the name of a file in the "
                                 "checkpoint's own folder")
    backup = manifest.get("backup")
    if backup is not None:
        held = backup.get("files_held") if isinstance(backup, dict) else None
        if not isinstance(held, list) or not all(isinstance(h, str) and h in files for h in held):
            raise _edited(mpath, f"backup.files_held is {held!r}, not a list of names from files")
    if "shards" not in manifest["shard_map"]:
        return
    smap = saved_map(manifest, mpath)
    shape, dtype = smap.global_shape, np.dtype(smap.dtype)
    if any(n < 0 for n in shape):
        raise _edited(mpath, f"shard_map.global_shape {list(shape)} has a negative extent")
    for s in smap.shards:
        key = f"shard_map.shards[{s.id}]"
        if np.dtype(s.dtype) != dtype:
            raise _edited(mpath, f"{key}.dtype is {s.dtype!r}, the map's dtype is {smap.dtype!r}")
        if any(n < 0 for n in s.shape) or s.nbytes != int(np.prod(s.shape)) * dtype.itemsize:
            raise _edited(mpath, f"{key}: shape {list(s.shape)} and nbytes {s.nbytes} do not fit "
                                 f"together ({dtype.itemsize}-byte items)")
        if len(s.index) != len(shape) or any(not 0 <= sl.start <= sl.stop <= n
                                             for sl, n in zip(s.index, shape, strict=False)):
            raise _edited(mpath, f"{key}.index {[[sl.start, sl.stop] for sl in s.index]} is not "
                                 f"inside shard_map.global_shape {list(shape)}")
        if not 0 <= s.owner_rank < manifest["ranks"]:
            raise _edited(mpath, f"{key}.owner_rank {s.owner_rank} is not one of the "
                                 f"{manifest['ranks']} ranks that wrote it")
        if not (np.isfinite(s.work_units) and s.work_units >= 0):
            raise _edited(mpath, f"{key}.work_units is {s.work_units}, not a finite number >= 0")
        if any(not 0 <= n < len(smap) for n in s.neighbours):
            raise _edited(mpath, f"{key}.neighbours {list(s.neighbours)} names shards the map "
                                 f"does not have (ids 0..{len(smap) - 1})")


def check_workload_map(manifest: dict[str, Any], declared, mpath: str, workload: str,
                       fixed_shapes: bool = True) -> None:
    """Refuse a manifest whose shard map is not the one its workload makes (pure).

    ``declared`` is the workload's own :meth:`~hpccloud.workloads.base.Workload.shard_map`
    for the checkpoint's parameters: the global shape, dtype, grid, halo width, number of
    shards and every shard's index, dtype, neighbours and shape must be its. With
    ``fixed_shapes=False`` (a workload whose shards grow and shrink, e.g. particles) only
    a shard's number of dimensions and its extents after the first must be.
    """
    saved = saved_map(manifest, mpath)

    def refuse(key: str, got: Any, want: Any) -> None:
        raise ConfigError(f"{mpath}: {key} is {got}, but workload {workload!r} with the "
                          f"checkpoint's params makes {want}: the manifest does not describe its "
                          "workload's data (edited and re-sealed, or damaged before sealing). "
                          "Fix: restart from another checkpoint")

    for key, got, want in (("shard_map.global_shape", list(saved.global_shape),
                            list(declared.global_shape)),
                           ("shard_map.dtype", repr(saved.dtype), repr(declared.dtype)),
                           ("the number of shards in shard_map.shards", len(saved), len(declared)),
                           ("shard_map.grid", list(saved.grid), list(declared.grid)),
                           ("shard_map.halo_width", saved.halo_width, declared.halo_width)):
        if got != want:
            refuse(key, got, want)
    for s, d in zip(saved.shards, declared.shards, strict=True):
        key = f"shard_map.shards[{s.id}]"
        if s.index != d.index:
            refuse(f"{key}.index", [[x.start, x.stop] for x in s.index],
                   [[x.start, x.stop] for x in d.index])
        if np.dtype(s.dtype) != np.dtype(d.dtype):
            refuse(f"{key}.dtype", repr(s.dtype), repr(d.dtype))
        if sorted(s.neighbours) != sorted(d.neighbours):
            refuse(f"{key}.neighbours", list(s.neighbours), list(d.neighbours))
        same = s.shape == d.shape if fixed_shapes else (len(s.shape) == len(d.shape)
                                                        and s.shape[1:] == d.shape[1:])
        if not same:
            refuse(f"{key}.shape", list(s.shape), list(d.shape) if fixed_shapes else
                   f"[any, {', '.join(str(n) for n in d.shape[1:])}]")


# ----------------------------------------------------------------------------- writing


def write_rank_file(path: str, local: dict[int, np.ndarray]) -> dict[int, str]:
    """Write ``local`` shards to ``path`` (fsynced); return their xxh3 checksums (no MPI)."""
    sums = {}
    with h5py.File(path, "w") as f:
        grp = f.create_group("shards")
        for sid in sorted(local):
            arr = np.ascontiguousarray(local[sid])
            # no Fletcher-32: the xxh3 below is verified on every read, and the filter cost
            # ~3x the write itself (0.15-0.2 s per 8 MB here)
            ds = grp.create_dataset(str(sid), data=arr)
            sums[sid] = ds.attrs["xxh3"] = checksum(arr)
    fsync_path(path)
    return sums


def _replace_folder(tmp: str, final: str) -> None:
    """Rename ``tmp`` onto ``final``; a re-run of the same step replaces the old one whole."""
    if os.path.exists(final):
        old = final + f".old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_path(os.path.dirname(final))


def make_temp_folder(root: str, step: int) -> str:
    """A fresh hidden folder under ``root`` for the checkpoint of ``step`` (no MPI)."""
    root = os.path.abspath(root)
    os.makedirs(root, exist_ok=True)
    tmp = os.path.join(root, f".{checkpoint_name(step)}.{uuid.uuid4().hex[:8]}.tmp")
    os.makedirs(tmp)
    return tmp


def manifest_body(step: int, ranks: int, shard_map_json: dict, gathered: Sequence[dict[int, str]],
                  state: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a checkpoint from every rank's ``{shard id: xxh3}`` (pure)."""
    shard_checksums, shard_rank = {}, {}
    for r, part in enumerate(gathered):
        for sid, digest in part.items():
            shard_checksums[str(sid)] = digest
            shard_rank[str(sid)] = r
    return {"format": FORMAT, "step": step, "ranks": ranks,
            "files": [rank_file(r) for r in range(ranks)], "shard_map": shard_map_json,
            "shard_checksums": shard_checksums, "shard_rank": shard_rank, "state": state}


def publish(tmp: str, final: str, body: dict[str, Any], key: bytes | None = None) -> str:
    """Write the sealed manifest into ``tmp`` and rename it onto ``final`` (no MPI)."""
    write_bytes_atomic(os.path.join(tmp, MANIFEST), json.dumps(seal_manifest(body, key)).encode())
    fsync_path(tmp)
    _replace_folder(tmp, final)
    return final


def write_checkpoint(comm, folder: str, step: int, shard_map_json: dict,
                     local: dict[int, np.ndarray], state: dict[str, Any], *,
                     key: bytes | None = None, backups: Sequence[tuple[str, str]] = (),
                     policy=None) -> str:
    """Collective: write a checkpoint of ``local`` shards and ``state``; return its path.

    Parameters
    ----------
    key : HMAC key material (the job's key file); the manifest is signed with it.
    backups : ``(region, folder)`` pairs; see the module docstring. Needs ``policy``.
    policy : :class:`~hpccloud.policy.Policy` deciding which backup may hold what.
    """
    writer = CheckpointWriter(comm, folder, key=key, backups=backups, policy=policy)
    writer.start(step, shard_map_json, local, state, background=False)
    path = writer.finish()
    writer.close()
    return path


class CheckpointWriter:
    """Writes checkpoints while the next steps run; publishes each one whole.

    Collective at construction (the ranks agree on a token naming the temp
    folders). :meth:`start` communicates not at all: a writer thread makes the
    temp folder, writes and fsyncs this rank's file (and its backup copies).
    The caller must not change the arrays it passed until the thread is done:
    pass copies of arrays the loop changes in place. :meth:`ready` says,
    without communicating, whether this rank's thread is done; once every rank
    is (the caller agrees on it in a collective it makes anyway), :meth:`finish`
    (collective, two small rounds) gathers the checksums, and rank 0 writes
    the sealed manifest and renames the folder into place in a thread of its
    own. That publish completes before the next checkpoint is published and
    before :meth:`close`; its failure is raised on every rank there. A
    checkpoint folder is complete or absent, as with :func:`write_checkpoint`.

    ``on_published(step, path)`` is called on rank 0 after each publish.
    """

    def __init__(self, comm, folder: str, *, key: bytes | None = None,
                 backups: Sequence[tuple[str, str]] = (), policy=None, on_published=None):
        if backups and policy is None:
            raise InvalidArgument("CheckpointWriter: backups need the residency policy")
        self.comm, self.key = comm, key
        self.folder = os.path.abspath(folder)
        self.backups = [(region, os.path.abspath(b)) for region, b in backups]
        self.policy, self.on_published = policy, on_published
        self.token = comm.bcast(uuid.uuid4().hex[:8] if comm.Get_rank() == 0 else None, root=0)
        self._pending: dict[str, Any] | None = None
        self._publisher: threading.Thread | None = None     # rank 0's publish thread
        self._publish_box: dict[str, Any] = {}

    @property
    def pending(self) -> bool:
        return self._pending is not None

    @property
    def pending_step(self) -> int | None:
        return None if self._pending is None else self._pending["step"]

    def ready(self) -> bool:
        """Whether this rank's part of the pending checkpoint is written (no communication)."""
        p = self._pending
        return p is not None and (p["thread"] is None or not p["thread"].is_alive())

    def _tmp(self, root: str, step: int) -> str:
        return os.path.join(root, f".{checkpoint_name(step)}.{self.token}.tmp")

    def start(self, step: int, shard_map_json: dict, local: dict[int, np.ndarray],
              state: dict[str, Any], background: bool = True) -> None:
        """Begin the checkpoint of ``step`` (a pending one is finished first, collectively)."""
        import threading

        if self._pending is not None:
            self.finish()
        rank = self.comm.Get_rank()
        tmps = [self._tmp(self.folder, step)] + [self._tmp(b, step) for _, b in self.backups]
        classes = _shard_classes(shard_map_json) if self.backups else {}
        mine = sorted({classes[sid] for sid in local}) if self.backups else []
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                for tmp in tmps:
                    os.makedirs(tmp, exist_ok=True)
                path = os.path.join(tmps[0], rank_file(rank))
                sums = write_rank_file(path, local)
                copied = []
                for (region, _), tmp in zip(self.backups, tmps[1:], strict=True):
                    ok = backup_allowed(self.policy, region, mine)
                    if ok:
                        dst = os.path.join(tmp, rank_file(rank))
                        shutil.copyfile(path, dst)
                        fsync_path(dst)
                    copied.append(ok)
                box["result"] = (sums, copied)
            except Exception as exc:  # noqa: BLE001 - raised on every rank by finish()
                box["error"] = exc

        thread = None
        if background:
            thread = threading.Thread(target=work, name=f"checkpoint-{step}", daemon=True)
            thread.start()
        else:
            work()
        self._pending = {"step": step, "tmps": tmps, "thread": thread, "box": box,
                         "shard_map": shard_map_json, "state": state, "classes": classes}

    def _join_publisher(self) -> None:
        """Rank 0: wait for the previous publish; raise its error (inside an agree)."""
        if self._publisher is not None:
            self._publisher.join()
            self._publisher = None
        err, self._publish_box = self._publish_box.get("error"), {}
        if err is not None:
            raise err

    def finish(self, wait_publish: bool = False) -> str:
        """Collective: wait for this rank's writer, gather the checksums, publish (rank 0).

        Returns the checkpoint's path. The publish runs in a rank-0 thread
        unless ``wait_publish``; :meth:`close` waits for it.
        """
        import threading

        from hpccloud.comm.agree import error_record, raise_gathered

        p, self._pending = self._pending, None
        if p is None:
            raise InvalidArgument("CheckpointWriter.finish: no checkpoint is pending")
        if p["thread"] is not None:
            p["thread"].join()

        def result():
            if self.comm.Get_rank() == 0:
                self._join_publisher()  # the previous checkpoint is published before this one
            if "error" in p["box"]:
                raise p["box"]["error"]
            return p["box"]["result"]

        # one round: every rank's error record (fail together) with its checksums
        try:
            mine, exc = result(), None
        except Exception as e:  # noqa: BLE001 - every failure must reach the peers
            mine, exc = None, e
        rows = self.comm.allgather((error_record(exc, self.comm.Get_rank()), mine))
        raise_gathered([r[0] for r in rows], exc)
        gathered = [r[1] for r in rows]
        step, tmps, classes = p["step"], p["tmps"], p["classes"]
        final = os.path.join(self.folder, checkpoint_name(step))
        if self.comm.Get_rank() == 0:
            def publish_all() -> None:
                try:
                    body = manifest_body(step, self.comm.Get_size(), p["shard_map"],
                                         [g[0] for g in gathered], p["state"])
                    publish(tmps[0], final, body, self.key)
                    all_classes = sorted(set(classes.values()))
                    for i, (region, broot) in enumerate(self.backups):
                        held = [rank_file(r) for r, g in enumerate(gathered) if g[1][i]]
                        if held and state_may_live(self.policy, region, all_classes):
                            publish(tmps[1 + i], os.path.join(broot, checkpoint_name(step)),
                                    {**body, "backup": {"region": region, "files_held": held}},
                                    self.key)
                        else:  # nothing this region may hold, or the run state may not live there
                            shutil.rmtree(tmps[1 + i], ignore_errors=True)
                    if self.on_published is not None:
                        self.on_published(step, final)
                except Exception as exc:  # noqa: BLE001 - raised on every rank by the next agree
                    self._publish_box["error"] = exc

            if wait_publish:
                publish_all()
            else:
                self._publisher = threading.Thread(target=publish_all, name=f"publish-{step}",
                                                   daemon=True)
                self._publisher.start()
        if wait_publish:
            self.close()
        return final

    def close(self) -> None:
        """Collective: finish a pending checkpoint and wait for the last publish."""
        from hpccloud.comm.agree import agree

        if self._pending is not None:
            self.finish()
        agree(self.comm, lambda: self._join_publisher() if self.comm.Get_rank() == 0 else None)


def _shard_classes(shard_map_json: dict) -> dict[int, str]:
    return {int(s["id"]): str(s["data_class"]) for s in shard_map_json.get("shards", [])}


# ----------------------------------------------------------------------------- backups


def _component_classes(policy, data_class: str) -> list[str]:
    """The declared classes an effective (halo) class is made of; itself if declared."""
    declared = policy.topology.data_classes
    if data_class in declared:
        return [data_class]
    parts = [p for p in re.split(r"[+&|]", data_class) if p]
    return parts if parts and all(p in declared for p in parts) else [data_class]


def backup_allowed(policy, region: str, data_classes: Iterable[str]) -> bool:
    """Whether a backup location in ``region`` may store shards of all ``data_classes`` (pure)."""
    return all(policy.may_live(c, region)
               for dc in data_classes for c in _component_classes(policy, dc))


def state_may_live(policy, region: str, data_classes: Iterable[str]) -> bool:
    """Whether the run state (aggregates of every class) may be stored in ``region`` (pure)."""
    return all(policy.may_live(c, region) or policy.aggregates_may_leave(c)
               for dc in data_classes for c in _component_classes(policy, dc))


def parse_backup_dirs(items: Sequence[str], region_names: Sequence[str],
                      source: str = "--backup-dir") -> list[tuple[str, str]]:
    """Parse ``REGION=PATH`` items; the region must be one of ``region_names`` (pure).

    >>> parse_backup_dirs(["eu-north=/b/eu"], ["eu-north", "us-east"])
    [('eu-north', '/b/eu')]
    """
    out = []
    for item in items:
        region, sep, path = item.partition("=")
        if not sep or not region or not path:
            raise InvalidArgument(f"{source} {item!r}: expected REGION=PATH, the region the backup "
                                  "storage is in. Fix: e.g. --backup-dir eu-north=/backup/ckpt")
        if region not in region_names:
            raise InvalidArgument(f"{source} {item!r}: unknown region {region!r}. Fix: use one of "
                                  f"{sorted(region_names)}")
        out.append((region, path))
    return out


# ----------------------------------------------------------------------------- reading


def folder_problem(path: str) -> str | None:
    """Why ``path`` is not a folder one can list, in words; None if it is one (no MPI)."""
    if os.path.isdir(path):
        try:
            os.listdir(path)
        except OSError as exc:
            return f"cannot be read ({exc.strerror})"
        return None
    if os.path.islink(path):
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "is a symbolic link loop"
            return f"is a symbolic link to {os.readlink(path)!r}, which does not exist"
    if os.path.exists(path):
        return "is a file, not a folder"
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "has a symbolic link loop in its path"
    return "does not exist"


def newest_complete(root: str, key: bytes | None = None) -> str | None:
    """The newest checkpoint under ``root`` whose manifest verifies, else the newest that has
    a manifest at all (it may need another key); None if none has (no MPI)."""
    found = [p for _, p in reversed(list_checkpoints(root))]
    for path in found:
        try:
            read_manifest(path, key)
            return path
        except (ConfigError, ChecksumError):
            pass
    return next((p for p in found if os.path.isfile(os.path.join(p, MANIFEST))), None)


def read_manifest(path: str, key: bytes | None = None, flag: str = "") -> dict[str, Any]:
    """Read and verify a checkpoint's manifest (pure; raises naming the path).

    Checks the format, that every key is there with its type, the file names
    (plain names inside the folder), the shard map's own consistency, and the
    manifest's own digest (and HMAC with ``key``). ``flag`` (e.g.
    ``"--restart"``) is the option the path came from, named in the fixes.
    """
    mpath = os.path.join(path, MANIFEST)
    why = folder_problem(path)
    if why is not None:
        raise ConfigError(f"{flag + ' ' if flag else ''}{path}: not a checkpoint folder: it {why}. "
                          f"Fix: pass a step-NNNNNNNN folder written by `hpccloud run "
                          "--checkpoint-every`")
    try:
        with open(mpath, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        steps = list_checkpoints(path)
        if steps:
            newest = newest_complete(path, key)
            if newest is None:
                raise ConfigError(f"{path}: a folder of checkpoints, not one checkpoint, and none "
                                  f"of its {len(steps)} step folders has a {MANIFEST}. Fix: pass "
                                  "a complete step-NNNNNNNN folder of another run") from None
            raise ConfigError(f"{path}: a folder of checkpoints, not one checkpoint. Fix: pass "
                              f"{flag + ' ' if flag else ''}{newest} (the newest complete one)"
                              ) from None
        raise ConfigError(f"{path}: no {MANIFEST}; not a checkpoint, or an incomplete one. Fix: "
                          "pass a step-NNNNNNNN folder written by `hpccloud run "
                          "--checkpoint-every`, or restart from an earlier checkpoint") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{mpath}: unreadable manifest ({exc}). Fix: restart from an earlier "
                          "checkpoint") from None
    if isinstance(manifest, dict) and manifest.get("format") != FORMAT:
        raise ConfigError(f"{mpath}: format {manifest.get('format')!r}, expected {FORMAT!r}. Fix: "
                          "restart from a checkpoint written by this hpccloud version")
    _check_keys(manifest, mpath)
    check_integrity(manifest, mpath, key)
    _check_consistent(manifest, mpath)
    return manifest


def _member(folder: str, name: str, key: str) -> str:
    """The path of file ``name`` of a checkpoint ``folder``; a ConfigError naming ``key`` when
    it resolves outside the folder (a symbolic link leaving it) or is a link loop (no MPI)."""
    fpath = os.path.join(folder, name)
    if not _plain_name(name):
        raise ConfigError(f"{key} is {name!r}, not a file of the checkpoint's own folder. Fix: "
                          "restart from another checkpoint")
    base, real = os.path.realpath(folder), os.path.realpath(fpath)
    if os.path.commonpath([base, real]) != base:
        raise ConfigError(f"{key}: {fpath} is a symbolic link to {real}, outside the checkpoint "
                          "folder; a checkpoint reads only its own files. Fix: copy the file "
                          "into the folder, or restart from another checkpoint")
    if os.path.islink(fpath):
        try:
            os.stat(fpath)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(f"{key}: {fpath} is a symbolic link loop. Fix: restart from "
                                  "another checkpoint") from None
    return fpath


def read_checkpoint_shards(path: str, manifest: dict[str, Any], shard_ids: Iterable[int]) -> dict[int, np.ndarray]:
    """Read ``shard_ids`` from whichever rank files hold them, each checksum-verified (no MPI).

    Each rank file is opened once, read-only, and only for the shards asked for.
    """
    by_file: dict[int, list[int]] = {}
    for sid in shard_ids:
        by_file.setdefault(int(manifest["shard_rank"][str(sid)]), []).append(int(sid))
    out = {}
    mpath = os.path.join(path, MANIFEST)
    layout = {int(s["id"]): (tuple(int(n) for n in s["shape"]), np.dtype(s["dtype"]))
              for s in manifest["shard_map"].get("shards", [])}
    for r in sorted(by_file):
        fpath = _member(path, manifest["files"][r], f"{mpath}: files[{r}]")
        with open_readonly(fpath) as f:
            for sid in by_file[r]:
                try:
                    ds = f["shards"][str(sid)]
                    if not isinstance(ds, h5py.Dataset):
                        raise KeyError("not a dataset")
                    if sid in layout and (ds.shape, ds.dtype) != layout[sid]:
                        shape, dtype = layout[sid]
                        raise _edited(mpath, f"shard_map.shards[{sid}] is {list(shape)} of "
                                             f"{dtype.str}, but {fpath} stores it as "
                                             f"{list(ds.shape)} of {ds.dtype.str}")
                    arr = ds[()]
                except (OSError, KeyError) as exc:
                    raise ChecksumError(f"{fpath}: shard {sid} is missing or corrupted ({exc}). "
                                        "Fix: restart from an earlier checkpoint") from None
                if checksum(arr) != manifest["shard_checksums"][str(sid)]:
                    raise ChecksumError(f"{fpath}: shard {sid} fails its checksum. Fix: restart "
                                        "from an earlier checkpoint")
                out[sid] = arr
    return out


def read_checkpoint(comm, path: str, key: bytes | None = None, shard_ids: Iterable[int] | None = None
                    ) -> tuple[dict[str, Any], dict[int, np.ndarray]]:
    """Collective: return ``(manifest, this rank's shards)``, every shard checksum-verified.

    ``shard_ids`` are the shards this rank reads (any rank count may restart);
    by default the shards this rank wrote, which needs the same rank count.
    """
    from hpccloud.comm.agree import agree, bcast_result

    path = os.path.abspath(path)
    manifest = bcast_result(comm, lambda: read_manifest(path, key))
    if shard_ids is None:
        if manifest["ranks"] != comm.Get_size():
            err = ConfigError(f"{path}: written by {manifest['ranks']} ranks, this job has "
                              f"{comm.Get_size()}. Fix: restart with mpiexec -n {manifest['ranks']}")
            err.collective = True
            raise err
        rank = comm.Get_rank()
        shard_ids = [int(s) for s, r in manifest["shard_rank"].items() if r == rank]
    ids = list(shard_ids)
    return manifest, agree(comm, lambda: read_checkpoint_shards(path, manifest, ids))


# ----------------------------------------------------------------------------- finding and verifying


def list_checkpoints(root: str) -> list[tuple[int, str]]:
    """``(step, path)`` of every published checkpoint folder under ``root``, oldest first (pure)."""
    try:
        names = os.listdir(root)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:  # a symbolic link loop, no permission
        raise ConfigError(f"{root}: cannot list the folder: it {folder_problem(root) or exc.strerror}. "
                          "Fix: pass the --checkpoint-dir of a run") from None
    # a step folder that is a broken link or a link loop is listed too: reading it says why
    found = [(int(m.group(1)), os.path.join(os.path.abspath(root), n))
             for n in names if (m := _NAME.fullmatch(n)) and (os.path.isdir(os.path.join(root, n))
                                                              or os.path.islink(os.path.join(root, n)))]
    return sorted(found)


def verify_checkpoint(path: str, key: bytes | None = None) -> dict[str, Any]:
    """Re-read a whole checkpoint and verify the manifest and every shard (no MPI).

    Returns a summary (step, ranks, shards, bytes, per-class shard counts, the
    files held for a backup copy). Raises the first problem found.
    """
    manifest = read_manifest(path, key)
    backup = manifest.get("backup")
    held = set(backup["files_held"]) if isinstance(backup, dict) else None
    ids = [int(s) for s, r in manifest["shard_rank"].items()
           if held is None or manifest["files"][r] in held]
    nbytes = sum(a.nbytes for a in read_checkpoint_shards(path, manifest, ids).values())
    classes: dict[str, int] = {}
    for s in manifest["shard_map"].get("shards", []):
        classes[s["data_class"]] = classes.get(s["data_class"], 0) + 1
    return {"path": path, "step": manifest["step"], "ranks": manifest["ranks"],
            "shards": len(manifest["shard_rank"]), "shards_verified": len(ids), "bytes": nbytes,
            "classes": classes, "signed": "hmac_sha256" in manifest["integrity"],
            "backup": backup, "workload": manifest["state"].get("workload")}


def newest_verified(root: str, key: bytes | None = None, full: bool = True
                    ) -> tuple[str | None, list[tuple[str, str]]]:
    """The newest checkpoint under ``root`` that verifies, and ``(path, why)`` of newer ones that did not.

    ``full=False`` checks the manifests only (not every shard).
    """
    rejected: list[tuple[str, str]] = []
    for _, path in reversed(list_checkpoints(root)):
        try:
            if full:
                verify_checkpoint(path, key)
            else:
                read_manifest(path, key)
            return path, rejected
        except (ConfigError, ChecksumError) as exc:
            rejected.append((path, str(exc)))
    return None, rejected


__all__ = ["FORMAT", "MANIFEST", "CheckpointWriter", "backup_allowed", "check_integrity",
           "check_workload_map", "checkpoint_name", "folder_problem", "list_checkpoints",
           "manifest_body", "newest_complete", "newest_verified", "parse_backup_dirs", "publish",
           "read_checkpoint", "read_checkpoint_shards", "read_manifest", "rank_file", "saved_map",
           "seal_manifest", "state_may_live", "verify_checkpoint", "write_checkpoint",
           "write_rank_file"]
