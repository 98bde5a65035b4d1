"""Memory-bandwidth probes: ``triad`` (a = b + s·c), ``axpy`` (y' = α·x + y), and
``stream_copy`` (a = b), the same-run bandwidth reference used by the benchmarks.

All three are element-wise: ``prange`` splits the index range so each thread
owns a contiguous slice; no reduction, so no ``fastmath`` is needed for the
loop to vectorise, and the result is bit-identical to numpy's (one multiply,
one add, each rounded; LLVM does not contract them into an FMA without
fastmath).

Bytes per element follow the STREAM convention (writes counted once, the
write-allocate read not counted): copy 16, triad 24, axpy 24 (float64).

Example
-------
>>> import numpy as np
>>> from kernels.stream import triad
>>> triad(np.ones(3), np.arange(3.0), 2.0)
array([1., 3., 5.])
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from kernels import _checks as chk


@njit(cache=True, parallel=True)
def _triad(b, c, s, a):
    for i in prange(a.size):
        a[i] = b[i] + s * c[i]


@njit(cache=True, parallel=True)
def _copy(b, a):
    for i in prange(a.size):
        a[i] = b[i]


def triad(b: np.ndarray, c: np.ndarray, s: float, out: np.ndarray | None = None) -> np.ndarray:
    """STREAM triad ``out = b + s * c`` on 1-D contiguous float arrays.

    ``out`` may be ``b`` or ``c`` itself (element-wise, so in-place is safe).
    Allocation-free when ``out`` is given.
    """
    chk.array("triad", "b", b, ndim=1)
    chk.array("triad", "c", c, ndim=1, dtype=b.dtype)
    chk.same_shape("triad", {"b": b, "c": c})
    s = chk.scalar("triad", "s", s)
    if out is None:
        out = np.empty_like(b)
    else:
        chk.out_array("triad", out, b.shape, b.dtype, {"b": b, "c": c})
    _triad(b, c, b.dtype.type(s), out)
    return out


def triad_reference(b, c, s, out=None):
    """numpy twin of :func:`triad` (two passes and a temporary)."""
    res = np.multiply(c, b.dtype.type(s))
    return np.add(b, res, out=out)


def axpy(alpha: float, x: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """BLAS-1 ``out = alpha * x + y``; pass ``out=y`` for the in-place update."""
    chk.array("axpy", "x", x, ndim=1)
    chk.array("axpy", "y", y, ndim=1, dtype=x.dtype)
    chk.same_shape("axpy", {"x": x, "y": y})
    alpha = chk.scalar("axpy", "alpha", alpha)
    if out is None:
        out = np.empty_like(y)
    else:
        chk.out_array("axpy", out, y.shape, y.dtype, {"x": x, "y": y})
    # same loop as triad: y + alpha*x rounds exactly like alpha*x + y
    _triad(y, x, x.dtype.type(alpha), out)
    return out


def axpy_reference(alpha, x, y, out=None):
    """numpy twin of :func:`axpy`."""
    return np.add(np.multiply(x, x.dtype.type(alpha)), y, out=out)


def stream_copy(b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """STREAM copy ``out[:] = b``: the bandwidth reference (16 bytes per element at float64)."""
    chk.array("stream_copy", "b", b, ndim=1)
    if out is None:
        out = np.empty_like(b)
    else:
        chk.out_array("stream_copy", out, b.shape, b.dtype, {})
        chk.no_overlap("stream_copy", out, {"b": b})
    _copy(b, out)
    return out


def stream_copy_reference(b, out=None):
    """numpy twin of :func:`stream_copy` (single-threaded memcpy)."""
    if out is None:
        return b.copy()
    np.copyto(out, b)
    return out


def make_triad_inputs(n_units: int, dtype=np.float64, seed: int = 0):
    n = chk.n_units_arg("triad", n_units)
    g = chk.rng(seed)
    return (g.standard_normal(n).astype(dtype), g.standard_normal(n).astype(dtype), 3.0)


def make_axpy_inputs(n_units: int, dtype=np.float64, seed: int = 0):
    n = chk.n_units_arg("axpy", n_units)
    g = chk.rng(seed)
    return (0.5, g.standard_normal(n).astype(dtype), g.standard_normal(n).astype(dtype))


def make_copy_inputs(n_units: int, dtype=np.float64, seed: int = 0):
    n = chk.n_units_arg("stream_copy", n_units)
    return (chk.rng(seed).standard_normal(n).astype(dtype),)
