"""A pool of warm byte buffers for receiving shards.

A shard received into a freshly allocated array pays for the array's page
faults while the bytes land (the kernel zeroes and maps every page on first
touch); raw ``Recv`` into a buffer that was used before does not. When shards
migrate back and forth (load balancing), the arrays a rank sends away are as
big as the ones it will receive, so recycling them keeps receive buffers warm.

A pool only recycles an array whose memory no one else can see: the array
must be the whole of its allocation (a view of a bigger array is never taken,
so recycling cannot scribble over the caller's other data). Handing an array
to the pool is a promise not to use it again.

>>> import numpy as np
>>> pool = BufferPool(max_bytes=1 << 20)
>>> a = np.arange(4.0)
>>> pool.give(a)
True
>>> b = pool.take(32)            # the same memory, as 32 bytes
>>> b.nbytes, np.shares_memory(a, b)
(32, True)
>>> pool.give(np.arange(8.0)[:4])  # a view of part of an array: refused
False
"""

from __future__ import annotations

import numpy as np


class BufferPool:
    """Byte buffers kept by exact size, at most ``max_bytes`` in total.

    Parameters
    ----------
    max_bytes : upper bound on the bytes the pool keeps alive (default 1 GiB).
    """

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = int(max_bytes)
        self.held_bytes = 0
        self._free: dict[int, list[np.ndarray]] = {}

    def take(self, nbytes: int) -> np.ndarray:
        """A 1-D ``uint8`` array of ``nbytes``: a recycled one if the pool has it."""
        stack = self._free.get(int(nbytes))
        if stack:
            self.held_bytes -= nbytes
            return stack.pop()
        return np.empty(int(nbytes), np.uint8)

    def give(self, array: np.ndarray) -> bool:
        """Recycle ``array`` (the caller gives it up); False if refused (kept by the caller)."""
        owner = array if array.base is None else array.base
        if (not isinstance(owner, np.ndarray) or owner.nbytes != array.nbytes or owner.nbytes == 0
                or not owner.flags.c_contiguous or not owner.flags.writeable
                or self.held_bytes + owner.nbytes > self.max_bytes):
            return False
        self._free.setdefault(owner.nbytes, []).append(owner.reshape(-1).view(np.uint8))
        self.held_bytes += owner.nbytes
        return True

    def clear(self) -> None:
        """Drop every kept buffer."""
        self._free.clear()
        self.held_bytes = 0


__all__ = ["BufferPool"]
