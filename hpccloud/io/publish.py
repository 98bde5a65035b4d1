"""An output folder is one unit: locked while a job uses it, completed by a manifest.

Protocol (rank 0 runs it; the folder is on a file system every writer sees):

1. :func:`claim_folder` before any work: create the folder (refusing a file in
   its place), take its lock (``.hpccloud.lock``, ``flock``: released by the
   kernel when the job dies, so a crashed job never blocks the next), remove
   the debris of crashed runs (:mod:`hpccloud.io.debris`), and refuse a folder
   that holds another run's results unless ``overwrite``.
2. :func:`begin_replace` just before the first result file is written: the old
   manifest goes first, so from then on the folder reads as incomplete until
   step 3 — never as an old catalogue beside new region files.
3. The results are written (each file atomically, each HDF5 file with
   ``run_id`` and ``step`` attributes).
4. :func:`publish` writes ``manifest.json`` last: run id, step, config digest,
   each file's size and xxh3-64; files of the previous run that are not part of
   this one are removed first.

Readers call :func:`verify_output`: no manifest means an unfinished or foreign
folder; a file that is missing, changed, from another run or not listed
is refused with its name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import xxhash

from hpccloud.errors import ChecksumError, ConfigError
from hpccloud.io.atomic import fsync_path, write_bytes_atomic
from hpccloud.io.debris import is_debris, remove_debris

MANIFEST = "manifest.json"
LOCK = ".hpccloud.lock"
FORMAT = "hpccloud-output-1"


def file_xxh3(path: str, block: int = 1 << 22) -> str:
    """xxh3-64 of a file's bytes, as 16 hex digits (streamed, 4 MiB blocks)."""
    h = xxhash.xxh3_64()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class FolderLock:
    """An exclusive lock on a folder, held until :meth:`release` or the process ends."""

    folder: str
    flag: str
    run_id: str
    fd: int = -1
    previous: dict[str, Any] | None = field(default=None)
    #: the outermost folder :meth:`acquire` created (None: the folder was there already)
    created: str | None = field(default=None)

    def acquire(self) -> FolderLock:
        if os.path.exists(self.folder) and not os.path.isdir(self.folder):
            raise ConfigError(f"{self.flag} {self.folder}: is a file, not a folder. Fix: give a "
                              "folder path, or move the file away")
        top = self.folder
        while not os.path.lexists(os.path.dirname(top)) and os.path.dirname(top) != top:
            top = os.path.dirname(top)
        self.created = None if os.path.lexists(self.folder) else top
        try:
            os.makedirs(self.folder, exist_ok=True)
            fd = os.open(os.path.join(self.folder, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"{self.flag} {self.folder}: cannot create or lock the folder "
                              f"({exc.strerror}). Fix: choose a folder you may write") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise ConfigError(f"{self.flag} {self.folder}: in use by another hpccloud job "
                                  f"({holder}). Fix: wait for it to end, or give {self.flag} "
                                  "another folder") from None
            raise ConfigError(f"{self.flag} {self.folder}: cannot lock the folder "
                              f"({exc.strerror}). Fix: use a folder on a file system with "
                              "locks") from None
        info = {"host": socket.gethostname(), "pid": os.getpid(), "run_id": self.run_id,
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self.fd = fd
        _HELD[self.folder] = self
        return self

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
            self.fd = -1
            _HELD.pop(self.folder, None)

    def abandon(self) -> None:
        """Release after a job that stopped before it wrote here: a folder :meth:`acquire`
        created goes again (with the parents it created) when it holds nothing but the
        lock, so a refused run leaves no trace; anything else stays as it is."""
        if self.fd >= 0 and self.created:
            with contextlib.suppress(OSError):
                if os.listdir(self.folder) == [LOCK]:
                    os.unlink(os.path.join(self.folder, LOCK))  # still holding its flock
                    path = self.folder
                    while True:
                        os.rmdir(path)  # OSError (not empty): stop there
                        if path == self.created:
                            break
                        path = os.path.dirname(path)
        self.release()


#: locks this process holds (keeps their descriptors open for the job's lifetime)
_HELD: dict[str, FolderLock] = {}


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return (f"pid {info.get('pid')} on {info.get('host')}, run {info.get('run_id')}, "
                f"since {info.get('since')}")
    except (OSError, ValueError):
        return "holder unknown"


def _visible(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n != LOCK and not is_debris(n))


def read_manifest(folder: str) -> dict[str, Any] | None:
    """The folder's manifest, or None when it has none."""
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read(1 << 24))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ChecksumError(f"{path}: unreadable manifest ({exc}). Fix: the folder is damaged; "
                            "rerun with --overwrite") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("files"), dict):
        raise ChecksumError(f"{path}: not an hpccloud output manifest. Fix: rerun with --overwrite")
    return doc


def claim_folder(folder: str, run_id: str, flag: str = "--output", overwrite: bool = False,
                 results: bool = True) -> FolderLock:
    """Lock ``folder`` for this run, clean its debris, refuse another run's results.

    ``results=False`` (a checkpoint folder) skips the other-run check: checkpoints
    of earlier runs are what ``--restart`` reads.
    """
    lock = FolderLock(os.path.abspath(folder), flag, run_id).acquire()
    try:
        remove_debris(lock.folder)
        if not results:
            return lock
        probe = os.path.join(lock.folder, f".probe.{run_id[:8]}.tmp")  # debris-shaped name
        try:
            with open(probe, "wb") as fh:
                fh.write(b"x")
            os.unlink(probe)
        except OSError as exc:
            raise ConfigError(f"{flag} {folder}: not writable ({exc.strerror}). Fix: choose a "
                              "folder you may write") from None
        try:
            old = read_manifest(lock.folder)
        except ChecksumError as exc:
            if not overwrite:  # bad input, not a failed check of our own results
                raise ConfigError(f"{flag} {folder}: {exc}") from None
            old = None  # a damaged or foreign manifest: replaced like any other entry
        present = _visible(lock.folder)
        if present and not overwrite:
            what = (f"the results of run {old.get('run_id')} (step {old.get('step')}, "
                    f"{old.get('written')})" if old else
                    f"{len(present)} entries of another run or program ({', '.join(present[:4])}"
                    f"{', ...' if len(present) > 4 else ''})")
            raise ConfigError(f"{flag} {folder}: holds {what}. Fix: give an empty or new folder, "
                              "or pass --overwrite to replace them")
        lock.previous = old
    except BaseException:
        lock.abandon()
        raise
    return lock


def begin_replace(folder: str) -> None:
    """Remove the old manifest before the first new result file lands (see the module doc)."""
    path = os.path.join(folder, MANIFEST)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
        fsync_path(folder)


def publish(folder: str, run_id: str, step: int, config_digest: str, files: list[str],
            previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the manifest last; remove the previous run's files that are not in ``files``.

    ``files`` are names relative to ``folder``. Returns the manifest.
    """
    keep = set(files)
    stale = set((previous or {}).get("files", {}))
    stale.update(n for n in _visible(folder) if n.endswith(".h5"))
    for name in sorted(stale - keep - {MANIFEST}):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(os.path.join(folder, name))
    entries = {}
    for name in sorted(keep):
        path = os.path.join(folder, name)
        entries[name] = {"bytes": os.path.getsize(path), "xxh3": file_xxh3(path)}
    manifest = {"format": FORMAT, "run_id": run_id, "step": int(step), "config_digest": config_digest,
                "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": entries}
    write_bytes_atomic(os.path.join(folder, MANIFEST), (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest


def verify_output(folder: str) -> dict[str, Any]:
    """Check a published output folder whole; return its manifest.

    Raises :class:`~hpccloud.errors.ChecksumError` naming the file for a folder
    without a manifest, a missing, changed or unlisted file, or an HDF5 file
    whose ``run_id``/``step`` attributes are not the manifest's.
    """
    doc = read_manifest(folder)
    if doc is None:
        raise ChecksumError(f"{folder}: no {MANIFEST}: not a complete hpccloud output (the run "
                            "that wrote it did not finish). Fix: rerun the job")
    for name, entry in doc["files"].items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise ChecksumError(f"{path}: listed in {MANIFEST} but missing. Fix: rerun the job")
        if os.path.getsize(path) != entry.get("bytes") or file_xxh3(path) != entry.get("xxh3"):
            raise ChecksumError(f"{path}: differs from the file run {doc['run_id']} wrote "
                                "(size or xxh3). Fix: restore it or rerun the job")
        if name.endswith(".h5"):
            _check_h5_run(path, doc)
    extra = [n for n in _visible(folder) if n.endswith(".h5") and n not in doc["files"]]
    if extra:
        raise ChecksumError(f"{folder}: {extra[0]} is not part of run {doc['run_id']}. Fix: remove "
                            "it, or rerun with --overwrite")
    return doc


def _check_h5_run(path: str, doc: dict[str, Any]) -> None:
    import h5py

    with h5py.File(path, "r") as f:
        run_id, step = f.attrs.get("run_id"), f.attrs.get("step")
    if isinstance(run_id, bytes):
        run_id = run_id.decode()
    if run_id != doc["run_id"] or step is None or int(step) != doc["step"]:
        raise ChecksumError(f"{path}: carries run {run_id} step {step}, the manifest run "
                            f"{doc['run_id']} step {doc['step']}. Fix: rerun the job")


__all__ = ["FORMAT", "LOCK", "MANIFEST", "FolderLock", "begin_replace", "claim_folder",
           "file_xxh3", "publish", "read_manifest", "verify_output"]
