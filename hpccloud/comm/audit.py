"""Transfer records and the append-only JSON-lines audit log.

Every shard transfer yields a :class:`TransferRecord`: when, which shard, its
data class, source and destination (rank and region), bytes, seconds and the
payload checksum (xxh3-64 of the plaintext, hex; empty when the route was not
hashed) and the protection the payload had in flight. Records feed the link model
(``LinkModel.add_sample(src, dst, nbytes, seconds)``) and the audit log.

The log is written by one process (rank 0 gathers the records) with one
``os.write`` of whole lines on a file opened ``O_APPEND``, then ``fsync``: lines
from successive migrations (or jobs) append without tearing each other. A write
that fails or stops short (a full disk, a quota) is undone by truncating the
file back to its size before the append, and the error is raised: the log
never ends in a torn line because of us. A log torn by something else (a crash
of the machine mid-write) is reported by :func:`read_audit` with the line number
and the fix, never silently skipped.

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "audit.jsonl")
>>> rec = TransferRecord(0.0, 3, "public", 0, 1, "eu-north", "us-east", 8, 1e-6, "00ff")
>>> AuditLog(path).append([rec])
>>> read_audit(path)[0]["shard_id"]
3
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass

from hpccloud.errors import ChecksumError, HpccloudError


@dataclass(frozen=True)
class TransferRecord:
    """One shard moved from ``src_rank`` to ``dst_rank`` (times in seconds, POSIX epoch)."""

    time: float
    shard_id: int
    data_class: str
    src_rank: int
    dst_rank: int
    src_region: str
    dst_region: str
    nbytes: int
    seconds: float
    checksum: str
    encrypted: bool = False
    map_version: int = 0
    # how the payload was protected in flight: "aes-gcm" (sealed, tag-authenticated),
    # "xxh3-64" (checksum verified on receipt), "header" (same host: header checked,
    # bytes not hashed; checksum is then ""), "" (records written before this field)
    protection: str = ""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> TransferRecord:
        return cls(**d)


class AuditLog:
    """Append-only JSON-lines file of :class:`TransferRecord` (one writer process)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)

    def append(self, records) -> None:
        if not records:
            return
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        data = "".join(json.dumps(r.to_json(), sort_keys=True) + "\n" for r in records).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            before = os.fstat(fd).st_size
            try:
                # one write call: O_APPEND places the whole block at the end atomically
                written = os.write(fd, data)
                while written < len(data):  # very large blocks may be written in parts
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            except OSError as exc:
                # undo the partial append: the log ends with whole lines or not at all
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, before)
                    os.fsync(fd)
                raise HpccloudError(f"{self.path}: cannot append {len(records)} audit records "
                                    f"({exc.strerror}); the log was left as it was. Fix: free "
                                    "space on its disk or give --audit another path") from None
        finally:
            os.close(fd)


def read_audit(path: str | os.PathLike) -> list[dict]:
    """Read every record of a JSON-lines audit file.

    Raises :class:`~hpccloud.errors.ChecksumError` naming the file and line when a
    line is not a whole JSON record (e.g. a torn last line after a machine crash).
    """
    path = os.fspath(path)
    out = []
    with open(path, "rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        torn_tail = no == len(lines)  # the last piece had no newline: written only in part
        try:
            rec = json.loads(line)
            if torn_tail or not isinstance(rec, dict):
                raise ValueError("no newline" if torn_tail else "not a record")
        except ValueError:
            where = "its last line is torn (no newline)" if torn_tail else f"line {no} is not a JSON record"
            raise ChecksumError(f"{path}: {where}. Fix: records before line {no} are whole; "
                                f"cut the file there (`head -n {no - 1} {path} > fixed.jsonl`)"
                                ) from None
        out.append(rec)
    return out


__all__ = ["AuditLog", "TransferRecord", "read_audit"]
