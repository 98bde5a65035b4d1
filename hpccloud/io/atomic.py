"""Atomic file writes: temp file in the same folder, fsync, rename, fsync the folder.

A reader sees the old file or the new one, never a partial one, even when the
job is killed mid-write.

The temp file is created with mode ``0o666`` filtered by the process umask (as
``open(path, "w")`` would create it), not ``tempfile.mkstemp``'s fixed ``0o600``:
results must be readable by colleagues when the site's umask says so (022),
and stay private when it does not (077). The name is still unique and the
file is created with ``O_EXCL``, so two writers never share a temp file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator


def fsync_path(path: str) -> None:
    """fsync a file or a folder by name (a folder's fsync makes a rename in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_unique(folder: str, prefix: str, suffix: str, mode: int = 0o666) -> str:
    """Create a new empty file ``folder/prefix<random>suffix`` (umask applies); return its path."""
    for _ in range(100):
        tmp = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                         mode)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name {prefix}*{suffix} in {folder}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temp path beside ``path``; on success fsync it and rename it over ``path``.

    On any exception the temp file is removed and ``path`` is left untouched.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> with atomic_path(os.path.join(d, "x.txt")) as tmp:
    ...     _ = open(tmp, "w").write("hello")
    >>> open(os.path.join(d, "x.txt")).read()
    'hello'
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = _create_unique(folder, f".{os.path.basename(path)}.", suffix + ".tmp")
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
