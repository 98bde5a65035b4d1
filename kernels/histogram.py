"""``histogram``: counts of values in ``nbins`` equal bins over ``[lo, hi]``.

Bin of a value ``v``: ``floor((v − lo) · (nbins / (hi − lo)))``, with ``v == hi``
counted in the last bin (as ``np.histogram``); values outside ``[lo, hi]`` and
NaN are not counted. The numpy reference computes the same expression, so the
counts agree exactly (``np.histogram`` itself may put a value lying within an
ulp of an inner edge in the neighbouring bin).

Parallel over fixed chunks of ``CHUNK`` values, each with its own private
histogram, summed afterwards: integer counts, so the result is exact and
independent of the thread count.

Example
-------
>>> import numpy as np
>>> from kernels.histogram import histogram
>>> histogram(np.array([0.0, 0.5, 0.99, 1.0, 2.0]), 0.0, 1.0, 2)
array([1, 3])
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from kernels import _checks as chk

CHUNK = 1 << 16


@njit(cache=True, parallel=True)
def _hist(values, lo, hi, nbins):
    n = values.size
    nchunks = (n + CHUNK - 1) // CHUNK
    partial = np.zeros((nchunks, nbins), dtype=np.int64)
    scale = nbins / (hi - lo)
    for c in prange(nchunks):  # each thread owns partial[c]
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            v = np.float64(values[i])
            if v >= lo and v <= hi:
                b = int(np.floor((v - lo) * scale))
                if b >= nbins:
                    b = nbins - 1
                partial[c, b] += 1
    counts = np.zeros(nbins, dtype=np.int64)
    for c in range(nchunks):
        for b in range(nbins):
            counts[b] += partial[c, b]
    return counts


def histogram(values: np.ndarray, lo: float, hi: float, nbins: int) -> np.ndarray:
    """int64 counts of ``values`` (1-D float) in ``nbins`` bins over ``[lo, hi]``."""
    chk.array("histogram", "values", values, ndim=1)
    lo = chk.scalar("histogram", "lo", lo)
    hi = chk.scalar("histogram", "hi", hi)
    if not hi > lo:
        raise chk.InvalidArgument(f"histogram: need hi > lo, got lo={lo}, hi={hi}")
    nbins = chk.scalar("histogram", "nbins", nbins, integer=True, positive=True)
    return _hist(values, lo, hi, nbins)


def histogram_reference(values, lo, hi, nbins):
    """numpy twin (same bin expression, ``np.bincount``)."""
    v = values.astype(np.float64)
    v = v[(v >= lo) & (v <= hi)]
    b = np.floor((v - lo) * (nbins / (hi - lo))).astype(np.int64)
    np.minimum(b, nbins - 1, out=b)
    return np.bincount(b, minlength=nbins).astype(np.int64)


def make_inputs(n_units: int, dtype=np.float64, seed: int = 0):
    n = chk.n_units_arg("histogram", n_units)
    return (chk.rng(seed).standard_normal(n).astype(dtype), -3.0, 3.0, 256)


def work_units(values, *args) -> float:
    return float(values.size)
