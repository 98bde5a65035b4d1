"""``stencil2d``: one 5-point Jacobi sweep on a tile with a halo of width 1.

For a tile ``a`` of shape ``(ny + 2, nx + 2)`` (interior plus halo) the output
interior is, for ``1 <= i <= ny``, ``1 <= j <= nx``::

    out[i, j] = 0.25 * (((a[i-1, j] + a[i+1, j]) + a[i, j-1]) + a[i, j+1])
              = 0.25 * (((N + S) + W) + E)

with the additions in exactly that order, so the numpy reference (the same
expression on slices) and every tiling of a domain give bit-identical results:
a distributed run matches the single-rank run bit for bit. No ``fastmath``
(it would be free to reassociate the four-term sum). The output halo is copied
from the input halo; the caller fills the halo (exchange) before each sweep.

Work units are interior cells; bytes per cell update: 16 at float64 (read
``a[i, j+1]`` once as it streams in, write ``out[i, j]``; the three other
neighbours hit cache), 8 at float32.

Example
-------
>>> import numpy as np
>>> from kernels.stencil import stencil2d
>>> a = np.zeros((3, 3)); a[0, 1] = 4.0
>>> stencil2d(a)[1, 1]
1.0
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from kernels import _checks as chk


@njit(cache=True, parallel=True)
def _jacobi(a, out):
    ny = a.shape[0] - 2
    nx = a.shape[1] - 2
    # each thread owns whole rows of out: no two threads write the same line
    for i in prange(1, ny + 1):
        for j in range(1, nx + 1):
            out[i, j] = 0.25 * (((a[i - 1, j] + a[i + 1, j]) + a[i, j - 1]) + a[i, j + 1])
        out[i, 0] = a[i, 0]
        out[i, nx + 1] = a[i, nx + 1]
    for j in range(nx + 2):
        out[0, j] = a[0, j]
        out[ny + 1, j] = a[ny + 1, j]


def stencil2d(tile_with_halo: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """One Jacobi sweep; returns ``out`` (allocated if None) of the same shape.

    Parameters
    ----------
    tile_with_halo : (ny + 2, nx + 2) C-contiguous float64 or float32 array
        The tile and its halo of width 1 (ny, nx >= 0).
    out : same shape and dtype, optional
        Written in place (no allocation). Must not share memory with the input.
    """
    a = chk.array("stencil2d", "tile_with_halo", tile_with_halo, ndim=2)
    if a.shape[0] < 2 or a.shape[1] < 2:
        raise chk.InvalidArgument(
            f"stencil2d: tile_with_halo has shape {a.shape}; it needs a halo of width 1 on "
            "each side, so both dimensions must be >= 2 (ny + 2, nx + 2)")
    if out is None:
        out = np.empty_like(a)
    else:
        chk.out_array("stencil2d", out, a.shape, a.dtype, {})
        chk.no_overlap("stencil2d", out, {"tile_with_halo": a})
    _jacobi(a, out)
    return out


def stencil2d_reference(tile_with_halo, out=None):
    """numpy twin of :func:`stencil2d` (slicing; same addition order)."""
    a = tile_with_halo
    if out is None:
        out = np.empty_like(a)
    out[...] = a
    out[1:-1, 1:-1] = 0.25 * (((a[:-2, 1:-1] + a[2:, 1:-1]) + a[1:-1, :-2]) + a[1:-1, 2:])
    return out


def make_inputs(n_units: int, dtype=np.float64, seed: int = 0):
    """A square-ish tile with about ``n_units`` interior cells, random interior and halo."""
    n = chk.n_units_arg("stencil2d", n_units)
    ny = int(np.sqrt(n))
    nx = n // ny if ny else 0
    return (chk.rng(seed).standard_normal((ny + 2, nx + 2)).astype(dtype),)


def work_units(tile_with_halo, out=None) -> float:
    ny, nx = tile_with_halo.shape
    return float(max(ny - 2, 0) * max(nx - 2, 0))
