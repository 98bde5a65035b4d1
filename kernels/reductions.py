"""Reductions ``sum``, ``dot`` and ``norm2`` with a fixed summation order.

Order (independent of the thread count): the input is cut into fixed blocks of
``BLOCK`` = 4096 elements; inside a block, ``LANES`` = 8 running sums take
elements ``i ≡ 0..7 (mod 8)`` in index order and are then added as a fixed
pairwise tree; the block sums are added by a bottom-up pairwise tree
(neighbours first, level by level) in block order. Threads only change *who* computes a block sum,
never the order of any addition, so the result is bit-identical at any
``NUMBA_NUM_THREADS`` (and with ``NUMBA_DISABLE_JIT=1``).

Accumulation is in float64 for float32 and float64 input; the result is a
Python ``float``. No ``fastmath``: it would let LLVM reorder the sums.

Tolerance against numpy (``np.sum(x, dtype=np.float64)`` and friends, both
error-bounded summations): for ``n`` terms with absolute sum ``S = Σ|tᵢ|``,

    |kernel − exact| ≤ (BLOCK/LANES + 3 + ⌈log2(nblocks)⌉) · ε₆₄ · S

so the tests check ``|kernel − numpy| ≤ 2 · (512 + 3 + ⌈log2 nblocks⌉) · ε₆₄ · S``
(``ε₆₄`` = 2.2e-16; for ``dot``/``norm2`` the terms are the products, and
``norm2`` is the square root of that sum, so its relative error is half as big).

Example
-------
>>> import numpy as np
>>> from kernels.reductions import fixed_sum, norm2
>>> fixed_sum(np.arange(10.0)), norm2(np.array([3.0, 4.0]))
(45.0, 5.0)
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from kernels import _checks as chk

BLOCK = 4096
LANES = 8
EPS64 = float(np.finfo(np.float64).eps)


@njit(cache=True)
def _pairwise(parts):
    # bottom-up pairwise tree: level by level, parts[2m] + parts[2m+1], an odd last
    # element carried up unchanged. The order depends only on len(parts). (Iterative:
    # recursive functions do not reload reliably from Numba's on-disk cache.)
    n = parts.size
    if n == 0:
        return 0.0
    buf = parts.copy()
    while n > 1:
        half = n // 2
        for m in range(half):
            buf[m] = buf[2 * m] + buf[2 * m + 1]
        if n % 2:
            buf[half] = buf[n - 1]
            n = half + 1
        else:
            n = half
    return buf[0]


@njit(cache=True)
def _block_sum(x, y, mode, lo, hi):
    # mode 0: x[i]; 1: x[i]*y[i]; 2: x[i]*x[i]. Explicit float64 casts: without them a
    # float32 input would accumulate in float32 under NUMBA_DISABLE_JIT (NEP 50 promotion). Eight lanes give the CPU independent
    # add chains; the lane tree below is fixed so the order never changes.
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    i = lo
    end8 = lo + ((hi - lo) // LANES) * LANES
    while i < end8:
        if mode == 0:
            s0 += np.float64(x[i])
            s1 += np.float64(x[i + 1])
            s2 += np.float64(x[i + 2])
            s3 += np.float64(x[i + 3])
            s4 += np.float64(x[i + 4])
            s5 += np.float64(x[i + 5])
            s6 += np.float64(x[i + 6])
            s7 += np.float64(x[i + 7])
        elif mode == 1:
            s0 += np.float64(x[i]) * y[i]
            s1 += np.float64(x[i + 1]) * y[i + 1]
            s2 += np.float64(x[i + 2]) * y[i + 2]
            s3 += np.float64(x[i + 3]) * y[i + 3]
            s4 += np.float64(x[i + 4]) * y[i + 4]
            s5 += np.float64(x[i + 5]) * y[i + 5]
            s6 += np.float64(x[i + 6]) * y[i + 6]
            s7 += np.float64(x[i + 7]) * y[i + 7]
        else:
            s0 += np.float64(x[i]) * x[i]
            s1 += np.float64(x[i + 1]) * x[i + 1]
            s2 += np.float64(x[i + 2]) * x[i + 2]
            s3 += np.float64(x[i + 3]) * x[i + 3]
            s4 += np.float64(x[i + 4]) * x[i + 4]
            s5 += np.float64(x[i + 5]) * x[i + 5]
            s6 += np.float64(x[i + 6]) * x[i + 6]
            s7 += np.float64(x[i + 7]) * x[i + 7]
        i += LANES
    tail = 0.0
    while i < hi:
        if mode == 0:
            tail += np.float64(x[i])
        elif mode == 1:
            tail += np.float64(x[i]) * y[i]
        else:
            tail += np.float64(x[i]) * x[i]
        i += 1
    return (((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))) + tail


@njit(cache=True, parallel=True)
def _reduce(x, y, mode):
    n = x.size
    nblocks = (n + BLOCK - 1) // BLOCK
    parts = np.empty(nblocks, dtype=np.float64)
    for b in prange(nblocks):  # each thread owns whole blocks; parts[b] is written once
        lo = b * BLOCK
        hi = min(n, lo + BLOCK)
        parts[b] = _block_sum(x, y, mode, lo, hi)
    return _pairwise(parts)


def _vector(kernel, arg, v, dtype=None):
    return chk.array(kernel, arg, v, ndim=1, dtype=dtype)


def fixed_sum(x: np.ndarray) -> float:
    """Σ xᵢ in the fixed order described in the module docstring (float64 accumulation)."""
    _vector("sum", "x", x)
    return float(_reduce(x, x, 0))


def dot(x: np.ndarray, y: np.ndarray) -> float:
    """Σ xᵢ·yᵢ in the fixed order (products and sums in float64)."""
    _vector("dot", "x", x)
    _vector("dot", "y", y, dtype=x.dtype)
    chk.same_shape("dot", {"x": x, "y": y})
    return float(_reduce(x, y, 1))


def norm2(x: np.ndarray) -> float:
    """√(Σ xᵢ²) in the fixed order (no overflow guard: as BLAS dnrm2 without scaling)."""
    _vector("norm2", "x", x)
    return math.sqrt(_reduce(x, x, 2))


def sum_reference(x):
    return float(np.sum(x, dtype=np.float64))


def dot_reference(x, y):
    return float(np.dot(x.astype(np.float64, copy=False), y.astype(np.float64, copy=False)))


def norm2_reference(x):
    return float(np.linalg.norm(x.astype(np.float64, copy=False)))


def tolerance(n: int, abs_sum: float) -> float:
    """Allowed |kernel − numpy| for ``n`` terms with Σ|terms| = ``abs_sum`` (see module doc)."""
    nblocks = max(1, -(-n // BLOCK))
    return 2.0 * (BLOCK / LANES + 3 + math.ceil(math.log2(nblocks))) * EPS64 * abs_sum


def make_vector_inputs(n_units: int, dtype=np.float64, seed: int = 0):
    n = chk.n_units_arg("sum", n_units)
    return (chk.rng(seed).standard_normal(n).astype(dtype),)


def make_dot_inputs(n_units: int, dtype=np.float64, seed: int = 0):
    n = chk.n_units_arg("dot", n_units)
    g = chk.rng(seed)
    return (g.standard_normal(n).astype(dtype), g.standard_normal(n).astype(dtype))
