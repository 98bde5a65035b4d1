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
import math
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


def _finite(obj):
    """``obj`` with every non-finite float replaced by None (NaN and inf are not JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as strict JSON to ``path`` atomically (non-finite floats become null).

    >>> import tempfile, os, json
    >>> p = os.path.join(tempfile.mkdtemp(), "r.json")
    >>> write_json_atomic(p, {"x": float("nan"), "y": [1.5]})
    >>> json.load(open(p))
    {'x': None, 'y': [1.5]}
    """
    import json

    text = json.dumps(_finite(obj), indent=1, allow_nan=False)
    write_bytes_atomic(path, (text + "\n").encode())


def check_writable(path: str | os.PathLike) -> None:
    """Fail early (before the work) when the output file ``path`` could not be written."""
    from hpccloud.errors import InvalidArgument

    path = os.fspath(path)
    if os.path.isdir(path):
        raise InvalidArgument(f"{path}: is a folder, an output file is expected here. Fix: give "
                              "a file name")
    if os.path.islink(path):  # the atomic rename would replace the link, not write its target
        raise InvalidArgument(f"{path}: is a symbolic link; the output would replace it. Fix: "
                              f"give the path it points to ({os.path.realpath(path)})")
    if os.path.exists(path) and not os.path.isfile(path):  # a FIFO, a device: never replaced
        raise InvalidArgument(f"{path}: is not a regular file (a pipe or device); the output "
                              "would replace it. Fix: give a regular file path")
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(folder):
        raise InvalidArgument(f"{path}: folder {folder!r} does not exist. Fix: create it or "
                              "choose another output path")
    if not os.access(folder, os.W_OK):
        raise InvalidArgument(f"{path}: folder {folder!r} is not writable. Fix: choose another "
                              "output path")
