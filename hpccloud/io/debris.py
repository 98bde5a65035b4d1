"""Start-up cleanup of what crashed runs of hpccloud left in its own folders.

A run killed mid-write leaves temp files and folders; on a full disk they keep
it full. They are recognised **by name** — each pattern below is one that
hpccloud itself creates — and removed only from a folder whose lock
(:class:`hpccloud.io.publish.FolderLock`) the caller holds, so no live job can
still be writing them:

================================================  =========================================
``.<name>.<8 random>[.<ext>].tmp``                 :func:`hpccloud.io.atomic.atomic_path`
``.step-<8 digits>.<8 hex>.tmp/``                  a checkpoint being written
``step-<8 digits>.old-<8 hex>/``                   a replaced checkpoint awaiting removal
================================================  =========================================
"""

from __future__ import annotations

import os
import re
import shutil

PATTERNS = (
    re.compile(r"\.(?!hpccloud\.lock$).+\.[a-z0-9_]{8,12}(\.[A-Za-z0-9]{1,8})?\.tmp"),
    re.compile(r"\.step-\d{8}\.[0-9a-f]{8}\.tmp"),
    re.compile(r"step-\d{8}\.old-[0-9a-f]{8}"),
)


def is_debris(name: str) -> bool:
    """Is ``name`` (a folder entry) a temp file or folder hpccloud makes and removes itself?"""
    return any(p.fullmatch(name) for p in PATTERNS)


def _size(path: str) -> int:
    if os.path.isdir(path) and not os.path.islink(path):
        total = 0
        for root, _dirs, files in os.walk(path):
            for f in files:
                try:
                    total += os.lstat(os.path.join(root, f)).st_size
                except OSError:
                    pass
        return total
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def find_debris(folder: str) -> list[str]:
    """Names of debris entries directly in ``folder`` (not recursive)."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in names if is_debris(n))


def remove_debris(folder: str) -> list[tuple[str, int]]:
    """Remove the debris in ``folder``; return ``[(name, bytes freed)]``.

    Call only while holding the folder's lock: a live job's temp files look the same.
    """
    removed = []
    for name in find_debris(folder):
        path = os.path.join(folder, name)
        size = _size(path)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            continue
        removed.append((name, size))
    return removed


__all__ = ["PATTERNS", "find_debris", "is_debris", "remove_debris"]
