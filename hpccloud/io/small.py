"""Small input files (topology, key, config, profile, report): regular files, bounded reads.

A FIFO given as ``--config`` blocked the job at ``open`` until a writer came,
and ``/dev/zero`` was read without end. :func:`read_regular` opens without
blocking, refuses anything but a regular file, and reads at most ``limit + 1``
bytes, so the caller can say "over the limit" instead of reading on.
"""

from __future__ import annotations

import os
import stat

from hpccloud.errors import ConfigError


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "named pipe"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def read_regular(path: str | os.PathLike, limit: int, what: str, fix: str,
                 error: type[ConfigError] = ConfigError) -> bytes:
    """Up to ``limit + 1`` bytes of the regular file ``path`` (the caller checks the size).

    Raises ``error`` naming ``path`` and ``what`` it should be, with ``fix``, for a
    path that cannot be opened or is not a regular file (never blocks on a FIFO).

    >>> read_regular("/dev/null", 10, "topology file", "check --topology")
    Traceback (most recent call last):
    ...
    hpccloud.errors.ConfigError: /dev/null: a character device, not a regular file: not a topology file. Fix: check --topology
    """
    source = os.fspath(path)
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise error(f"{source}: cannot read the {what} ({exc.strerror}). Fix: {fix}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{source}: a {_kind(mode)}, not a regular file: not a {what}. Fix: {fix}")
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"{source}: cannot read the {what} ({exc.strerror}). Fix: {fix}") from None
    finally:
        os.close(fd)
