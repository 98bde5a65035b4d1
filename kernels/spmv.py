"""``spmv``: ``y = A @ x`` for a block of rows of a CSR matrix.

``indptr`` (nrows + 1,), ``indices`` (nnz,) int32 or int64 column indices,
``data`` (nnz,) float, ``x`` (ncols,) float of the same dtype. Rows are
independent, so ``prange`` gives each thread whole rows; each row is summed in
index order (as ``scipy.sparse``), so the result does not depend on the thread
count. Rows are uneven (the benchmark matrix has power-law row lengths), so the
wrapper asks Numba for dynamic chunks of rows.

Work units are stored non-zeros; bytes per unit: 20 at float64 (value 8,
int32 column index 4, gathered ``x`` element 8 — an upper bound, as reused
``x`` entries hit cache).

Example
-------
>>> import numpy as np
>>> from kernels.spmv import spmv
>>> spmv(np.array([0, 2, 3]), np.array([0, 1, 1]), np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0]))
array([3., 3.])
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from kernels import _checks as chk

INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


@njit(cache=True, parallel=True)
def _spmv(indptr, indices, data, x, y):
    for r in prange(y.size):  # each thread owns whole rows of y
        acc = 0.0
        for k in range(indptr[r], indptr[r + 1]):
            # indices were checked to be in [0, x.size): skip the negative-index wraparound
            acc += np.float64(data[k]) * x[np.uint64(indices[k])]
        y[r] = acc


def spmv(indptr, indices, data, x, out=None, *, trusted=False) -> np.ndarray:
    """``y = A @ x`` for the CSR rows ``(indptr, indices, data)``; ``out`` optional.

    ``trusted=True`` skips the O(nnz) scans of ``indptr`` and ``indices`` (the
    dtypes and sizes are still checked): for a caller that built the rows itself
    and calls every step with the same ones (the ``spmv`` workload; the scans
    cost ~5 % of the product at its default size). Wrong rows then read out of bounds.
    """
    name = "spmv"
    chk.array(name, "indptr", indptr, ndim=1, dtypes=INDEX_DTYPES)
    chk.array(name, "indices", indices, ndim=1, dtypes=INDEX_DTYPES)
    chk.array(name, "data", data, ndim=1)
    chk.array(name, "x", x, ndim=1, dtype=data.dtype)
    if indptr.size < 1:
        raise chk.InvalidArgument(f"{name}: indptr must have nrows + 1 >= 1 entries")
    nnz = data.size
    if indices.size != nnz:
        raise chk.InvalidArgument(f"{name}: indices has {indices.size} entries, data {nnz}")
    if indptr[0] != 0 or indptr[-1] != nnz or (
            not trusted and indptr.size > 1 and np.any(np.diff(indptr) < 0)):
        raise chk.InvalidArgument(
            f"{name}: indptr must start at 0, never decrease and end at nnz={nnz}")
    if nnz and not trusted and (indices.min() < 0 or indices.max() >= x.size):
        raise chk.InvalidArgument(
            f"{name}: column indices must lie in [0, {x.size}) (the length of x)")
    nrows = indptr.size - 1
    if out is None:
        out = np.empty(nrows, dtype=data.dtype)
    else:
        chk.out_array(name, out, (nrows,), data.dtype, {})
        chk.no_overlap(name, out, {"x": x, "data": data})
    with numba.parallel_chunksize(64):
        _spmv(indptr, indices, data, x, out)
    return out


def spmv_reference(indptr, indices, data, x, out=None):
    """scipy.sparse twin."""
    from scipy.sparse import csr_matrix

    nrows = indptr.size - 1
    y = csr_matrix((data, indices, indptr), shape=(nrows, x.size)) @ x
    if out is not None:
        out[...] = y
        return out
    return y.astype(data.dtype, copy=False)


def make_inputs(n_units: int, dtype=np.float64, seed: int = 0):
    """A square CSR block with about ``n_units`` non-zeros and power-law row lengths."""
    nnz_target = chk.n_units_arg("spmv", n_units)
    g = chk.rng(seed)
    nrows = max(1, nnz_target // 16)
    lengths = np.minimum(g.zipf(1.8, size=nrows) * 4, nrows).astype(np.int64)
    lengths = np.maximum(1, (lengths * (nnz_target / max(lengths.sum(), 1))).astype(np.int64))
    if nnz_target == 0:
        lengths[:] = 0
    indptr = np.zeros(nrows + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    nnz = int(indptr[-1])
    indices = g.integers(0, nrows, size=nnz).astype(np.int32)
    if nnz < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)  # as scipy.sparse builds it: less index traffic
    data = g.standard_normal(nnz).astype(dtype)
    x = g.standard_normal(nrows).astype(dtype)
    return (indptr, indices, data, x)


def work_units(indptr, indices, data, x, out=None) -> float:
    return float(data.size)
