"""``mandelbrot``: escape-time counts on one tile of the complex plane.

Pixel ``(i, j)`` of an ``ny × nx`` tile covering ``[x0, x1) × [y0, y1)`` sits at
its centre ``c = (x0 + (j + ½)·dx) + i·(y0 + (i + ½)·dy)``. The count is the
number of iterations ``z ← z² + c`` (from ``z = 0``) before ``|z|² > 4``, at most
``max_iter``. The arithmetic is written out (``zr² − zi² + cr``, ``2·zr·zi + ci``)
in the same order as the numpy reference and without ``fastmath``, so the counts
agree exactly.

Cost is very uneven: a tile inside the set costs ``max_iter`` iterations per
pixel, one far outside costs one. :func:`work_units` reports **pixels**
(``nx·ny``) because it sees only the arguments; the real cost is
``counts.sum()`` iterations, which :func:`iterations` returns and which the
runner measures by timing the call.

Example
-------
>>> from kernels.mandelbrot import mandelbrot
>>> mandelbrot(-2.0, 1.0, -1.0, 1.0, 3, 1, 50)
array([[ 1, 50,  2]], dtype=int32)
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from kernels import _checks as chk


@njit(cache=True, parallel=True)
def _escape(x0, x1, y0, y1, nx, ny, max_iter):
    counts = np.empty((ny, nx), dtype=np.int32)
    dx = (x1 - x0) / nx if nx else 0.0
    dy = (y1 - y0) / ny if ny else 0.0
    for i in prange(ny):  # each thread owns whole rows of counts
        ci = y0 + (i + 0.5) * dy
        for j in range(nx):
            cr = x0 + (j + 0.5) * dx
            zr = 0.0
            zi = 0.0
            k = 0
            while k < max_iter:
                zr2 = zr * zr
                zi2 = zi * zi
                if zr2 + zi2 > 4.0:
                    break
                zi = 2.0 * zr * zi + ci
                zr = zr2 - zi2 + cr
                k += 1
            counts[i, j] = k
    return counts


def mandelbrot(x0, x1, y0, y1, nx, ny, max_iter=256) -> np.ndarray:
    """Escape counts (int32, shape ``(ny, nx)``) of the tile ``[x0, x1) × [y0, y1)``."""
    name = "mandelbrot"
    x0, x1, y0, y1 = (chk.scalar(name, a, v) for a, v in
                      (("x0", x0), ("x1", x1), ("y0", y0), ("y1", y1)))
    nx = chk.scalar(name, "nx", nx, integer=True, minimum=0)
    ny = chk.scalar(name, "ny", ny, integer=True, minimum=0)
    max_iter = chk.scalar(name, "max_iter", max_iter, integer=True, minimum=0)
    if max_iter > np.iinfo(np.int32).max:
        raise chk.InvalidArgument(f"{name}: max_iter {max_iter} does not fit the int32 counts")
    # rows cost from 1 to max_iter iterations per pixel: small dynamic chunks even the threads out
    with numba.parallel_chunksize(2):
        return _escape(x0, x1, y0, y1, nx, ny, max_iter)


def mandelbrot_reference(x0, x1, y0, y1, nx, ny, max_iter=256):
    """numpy twin: iterate all still-bounded pixels together, same arithmetic order."""
    dx = (x1 - x0) / nx if nx else 0.0
    dy = (y1 - y0) / ny if ny else 0.0
    cr = x0 + (np.arange(nx) + 0.5) * dx
    ci = y0 + (np.arange(ny) + 0.5) * dy
    cr, ci = np.broadcast_to(cr, (ny, nx)).ravel(), np.repeat(ci, nx)
    counts = np.zeros(nx * ny, dtype=np.int32)
    alive = np.arange(nx * ny)
    zr = np.zeros(nx * ny)
    zi = np.zeros(nx * ny)
    for _ in range(max_iter):
        zr2, zi2 = zr * zr, zi * zi
        keep = ~(zr2 + zi2 > 4.0)
        alive, zr, zi, zr2, zi2 = alive[keep], zr[keep], zi[keep], zr2[keep], zi2[keep]
        if alive.size == 0:
            break
        zi = 2.0 * zr * zi + ci[alive]
        zr = zr2 - zi2 + cr[alive]
        counts[alive] += 1
    return counts.reshape(ny, nx)


def iterations(counts: np.ndarray) -> float:
    """The iterations actually done for ``counts`` (the real work of the call)."""
    return float(counts.sum(dtype=np.int64))


def make_inputs(n_units: int, dtype=np.float64, seed: int = 0):
    """A square tile of about ``n_units`` pixels over the whole set (mixed cost)."""
    if np.dtype(dtype) != np.float64:
        raise chk.InvalidArgument(
            f"mandelbrot: dtype {np.dtype(dtype)} is not supported; it computes in float64")
    n = chk.n_units_arg("mandelbrot", n_units)
    side = int(np.sqrt(n))
    return (-2.0, 0.6, -1.3, 1.3, side, side, 256)


def work_units(x0, x1, y0, y1, nx, ny, max_iter=256) -> float:
    """Pixels of the tile (see the module docstring for why not iterations)."""
    return float(nx * ny)
