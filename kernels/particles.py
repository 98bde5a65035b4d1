"""``particles``: advance the particles of one tile by one step.

Each particle feels

* drag towards a steady cellular flow ``u(x, y) = (-sin(πx)·cos(πy), cos(πx)·sin(πy))``
  (rate ``drag``): particles are swept along the cells' edges;
* a soft short-range repulsion from every other particle of the tile closer
  than ``cutoff``: ``f_i = strength · Σ_j (1 − r²/rc²) · (p_i − p_j) / rc²``.

Pairs are found through a cell list of cells at least ``cutoff`` wide, so the
cost of a particle is proportional to its neighbours within ~``cutoff``:
clustered tiles cost more, which is what makes the load change over time.
Only particles of this tile interact (no ghost particles from neighbour tiles).

Integration is semi-implicit Euler: ``v' = v + dt·a``, ``p' = p + dt·v'``.
Forces are summed in float64 in a fixed order (cell rows, then cells, then
particle index within a cell), one thread per particle, so the result does not depend on the thread
count. Work units are particles; the runner times the call to get the real
(density-dependent) cost.

Example
-------
>>> import numpy as np
>>> from kernels.particles import particles
>>> x, y = np.array([0.5, 0.95]), np.array([0.5, 0.5])
>>> v = np.array([0.0, 100.0])
>>> *_, left = particles(x, y, v, np.zeros(2), (0.0, 1.0, 0.0, 1.0), 0.01, 0.1)
>>> left
array([False,  True])
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from kernels import _checks as chk

MAX_CELLS_PER_SIDE = 4096


@njit(cache=True)
def _cell_list(x, y, x0, y0, wx, wy, ncx, ncy):
    # stable counting sort of particles by cell: order within a cell = index order
    n = x.size
    cell = np.empty(n, dtype=np.int64)
    start = np.zeros(ncx * ncy + 1, dtype=np.int64)
    for i in range(n):
        cx = min(max(int(np.floor((x[i] - x0) / wx)), 0), ncx - 1)
        cy = min(max(int(np.floor((y[i] - y0) / wy)), 0), ncy - 1)
        c = cy * ncx + cx
        cell[i] = c
        start[c + 1] += 1
    for c in range(ncx * ncy):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    order = np.empty(n, dtype=np.int64)
    for i in range(n):
        order[fill[cell[i]]] = i
        fill[cell[i]] += 1
    return cell, start, order


@njit(cache=True, parallel=True)
def _advance(x, y, vx, vy, x0, x1, y0, y1, dt, cutoff, strength, drag, ncx, ncy):
    n = x.size
    wx = (x1 - x0) / ncx
    wy = (y1 - y0) / ncy
    cell, start, order = _cell_list(x, y, x0, y0, wx, wy, ncx, ncy)
    # positions in cell order: the three cells (cx-1..cx+1) of one cell row are one
    # contiguous run, so the pair loop streams through memory instead of gathering
    xs = np.empty(n, dtype=np.float64)
    ys = np.empty(n, dtype=np.float64)
    for k in range(n):
        xs[k] = x[order[k]]
        ys[k] = y[order[k]]
    xn = np.empty_like(x)
    yn = np.empty_like(y)
    vxn = np.empty_like(vx)
    vyn = np.empty_like(vy)
    left = np.empty(n, dtype=np.bool_)
    inv_rc2 = 1.0 / (cutoff * cutoff)
    for p in prange(n):  # sorted position p; each thread owns particle i = order[p]'s outputs
        i = order[p]
        xi = xs[p]
        yi = ys[p]
        cx = cell[i] % ncx
        cy = cell[i] // ncx
        lo_x = max(cx - 1, 0)
        hi_x = min(cx + 1, ncx - 1)
        fx = 0.0
        fy = 0.0
        for ny_ in range(max(cy - 1, 0), min(cy + 2, ncy)):
            row = ny_ * ncx
            for k in range(start[row + lo_x], start[row + hi_x + 1]):
                dx = xi - xs[k]
                dy = yi - ys[k]
                w = 1.0 - (dx * dx + dy * dy) * inv_rc2
                # w > 0 only inside the cutoff; the particle itself has dx = dy = 0 and adds 0
                if w > 0.0:
                    fx += w * dx
                    fy += w * dy
        ux = -np.sin(np.pi * xi) * np.cos(np.pi * yi)
        uy = np.cos(np.pi * xi) * np.sin(np.pi * yi)
        ax = strength * fx * inv_rc2 + drag * (ux - vx[i])
        ay = strength * fy * inv_rc2 + drag * (uy - vy[i])
        nvx = vx[i] + dt * ax
        nvy = vy[i] + dt * ay
        vxn[i] = nvx
        vyn[i] = nvy
        xn[i] = xi + dt * nvx
        yn[i] = yi + dt * nvy
        # judge the stored (possibly float32-rounded) position, as the caller will see it
        left[i] = not (x0 <= xn[i] < x1 and y0 <= yn[i] < y1)
    return xn, yn, vxn, vyn, left


def _grid(bounds, cutoff):
    x0, x1, y0, y1 = bounds
    ncx = int(min(max(1, (x1 - x0) // cutoff), MAX_CELLS_PER_SIDE))
    ncy = int(min(max(1, (y1 - y0) // cutoff), MAX_CELLS_PER_SIDE))
    return ncx, ncy


def _check(x, y, vx, vy, bounds, dt, cutoff, strength, drag):
    name = "particles"
    chk.array(name, "x", x, ndim=1)
    for arg, a in (("y", y), ("vx", vx), ("vy", vy)):
        chk.array(name, arg, a, ndim=1, dtype=x.dtype)
    chk.same_shape(name, {"x": x, "y": y, "vx": vx, "vy": vy})
    try:
        x0, x1, y0, y1 = (chk.scalar(name, "bounds", b) for b in bounds)
    except (TypeError, ValueError):
        raise chk.InvalidArgument(
            f"{name}: bounds must be (x0, x1, y0, y1), got {bounds!r}") from None
    if not (x1 > x0 and y1 > y0):
        raise chk.InvalidArgument(f"{name}: bounds {bounds!r} need x1 > x0 and y1 > y0")
    dt = chk.scalar(name, "dt", dt)
    cutoff = chk.scalar(name, "cutoff", cutoff, positive=True)
    strength = chk.scalar(name, "strength", strength)
    drag = chk.scalar(name, "drag", drag)
    for arg, a in (("x", x), ("y", y), ("vx", vx), ("vy", vy)):
        if a.size and not np.isfinite(a).all():
            raise chk.InvalidArgument(f"{name}: {arg} contains NaN or inf")
    return (x0, x1, y0, y1), dt, cutoff, strength, drag


def particles(x, y, vx, vy, bounds, dt, cutoff, strength=1.0, drag=1.0):
    """Advance the tile's particles one step; return ``(x, y, vx, vy, left)`` (new arrays).

    Parameters
    ----------
    x, y, vx, vy : 1-D contiguous float64/float32 arrays of equal length
    bounds : (x0, x1, y0, y1)
        The tile: a particle is inside when ``x0 <= x < x1`` and ``y0 <= y < y1``.
    dt : float
        Time step.
    cutoff : float
        Interaction radius (> 0).
    strength, drag : float
        Repulsion strength and drag rate towards the background flow.

    Returns
    -------
    x, y, vx, vy : new arrays (input dtype); left : bool array, True where the
    particle is outside ``bounds`` after the step.
    """
    bounds, dt, cutoff, strength, drag = _check(x, y, vx, vy, bounds, dt, cutoff, strength, drag)
    ncx, ncy = _grid(bounds, cutoff)
    # clustered particles cost more: dynamic chunks keep both threads busy
    with numba.parallel_chunksize(256):
        return _advance(x, y, vx, vy, *bounds, dt, cutoff, strength, drag, ncx, ncy)


def particles_reference(x, y, vx, vy, bounds, dt, cutoff, strength=1.0, drag=1.0):
    """numpy/scipy twin: pairs from ``scipy.spatial.cKDTree.query_pairs``, forces by bincount."""
    from scipy.spatial import cKDTree

    x0, x1, y0, y1 = (float(b) for b in bounds)
    n = x.size
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    fx = np.zeros(n)
    fy = np.zeros(n)
    if n > 1:
        pairs = cKDTree(np.column_stack([x64, y64])).query_pairs(cutoff, output_type="ndarray")
        if len(pairs):
            i, j = pairs[:, 0], pairs[:, 1]
            dx, dy = x64[i] - x64[j], y64[i] - y64[j]
            r2 = dx * dx + dy * dy
            rc2 = cutoff * cutoff
            w = np.where(r2 < rc2, (1.0 - r2 / rc2) / rc2, 0.0)
            fx = np.bincount(i, w * dx, n) - np.bincount(j, w * dx, n)
            fy = np.bincount(i, w * dy, n) - np.bincount(j, w * dy, n)
    ux = -np.sin(np.pi * x64) * np.cos(np.pi * y64)
    uy = np.cos(np.pi * x64) * np.sin(np.pi * y64)
    vxn = vx + dt * (strength * fx + drag * (ux - vx))
    vyn = vy + dt * (strength * fy + drag * (uy - vy))
    xn = (x64 + dt * vxn).astype(x.dtype)
    yn = (y64 + dt * vyn).astype(x.dtype)
    left = ~((x0 <= xn) & (xn < x1) & (y0 <= yn) & (yn < y1))
    return xn, yn, vxn.astype(x.dtype), vyn.astype(x.dtype), left


def make_inputs(n_units: int, dtype=np.float64, seed: int = 0):
    """``n_units`` particles in the unit tile: half uniform, half in four tight clusters.

    The cutoff gives ~8 neighbours at the mean density; the clusters have ~20×
    that, so per-particle cost varies strongly across the tile.
    """
    n = chk.n_units_arg("particles", n_units)
    g = chk.rng(seed)
    n_uniform = n // 2
    centres = g.uniform(0.2, 0.8, size=(4, 2))
    which = g.integers(0, 4, size=n - n_uniform)
    clustered = centres[which] + g.normal(0.0, 0.04, size=(n - n_uniform, 2))
    pos = np.concatenate([g.uniform(0.0, 1.0, size=(n_uniform, 2)), clustered])
    pos = np.clip(pos, 0.0, np.nextafter(1.0, 0.0))
    vel = g.normal(0.0, 0.1, size=(n, 2))
    cutoff = float(np.sqrt(8.0 / (np.pi * max(n, 1))))
    cutoff = min(cutoff, 0.25)
    a = [np.ascontiguousarray(c, dtype=dtype) for c in (pos[:, 0], pos[:, 1], vel[:, 0], vel[:, 1])]
    return (*a, (0.0, 1.0, 0.0, 1.0), 1e-3, cutoff)


def work_units(x, *args, **kwargs) -> float:
    return float(x.size)


# ---------------------------------------------------------------- routing a tile's particles
@njit(cache=True)
def _route(x, y, vx, vy, tile, grid):
    n = x.size
    dest = np.empty(n, dtype=np.int64)
    n_stay = 0
    for i in range(n):
        # the walls reflect (the flow's cell edges run along them); an x below 0 and one
        # at 1 or beyond are told apart before either is changed, as in the twin
        if x[i] < 0.0:
            x[i] = -x[i]
            vx[i] = -vx[i]
        elif x[i] >= 1.0:
            x[i] = np.nextafter(2.0 - x[i], 0.0)
            vx[i] = -vx[i]
        if y[i] < 0.0:
            y[i] = -y[i]
            vy[i] = -vy[i]
        elif y[i] >= 1.0:
            y[i] = np.nextafter(2.0 - y[i], 0.0)
            vy[i] = -vy[i]
        d = _cell_of(y[i], grid) * grid + _cell_of(x[i], grid)
        dest[i] = d
        if d == tile:
            n_stay += 1
    stay = np.empty((n_stay, 4), dtype=np.float64)
    leaving = np.empty((n - n_stay, 7), dtype=np.float64)
    s = 0
    m = 0
    for i in range(n):
        if dest[i] == tile:
            stay[s, 0] = x[i]
            stay[s, 1] = y[i]
            stay[s, 2] = vx[i]
            stay[s, 3] = vy[i]
            s += 1
        else:
            leaving[m, 0] = dest[i]
            leaving[m, 1] = tile
            leaving[m, 2] = i
            leaving[m, 3] = x[i]
            leaving[m, 4] = y[i]
            leaving[m, 5] = vx[i]
            leaving[m, 6] = vy[i]
            m += 1
    return stay, leaving


@njit(cache=True)
def _cell_of(v, grid):
    # int64(v * grid) clipped to [0, grid): numpy's astype gives NaN (and -inf) the most
    # negative int64, clipped to 0; so does this, without the undefined cast
    c = v * grid
    if not c >= 0.0:
        return 0
    if c >= grid:
        return grid - 1
    return int(c)


def route(x, y, vx, vy, tile, grid):
    """Reflect the particles of tile ``tile`` (of ``grid × grid`` on the unit square) at the
    walls and split them by the tile they are now in.

    ``x, y, vx, vy`` are 1-D float64 arrays of equal length (reflected in place).
    Returns ``(stay, leaving)``: ``stay`` [m, 4] the rows ``(x, y, vx, vy)`` still
    in ``tile``, in index order; ``leaving`` [k, 7] the rows ``(dest tile, tile,
    index, x, y, vx, vy)`` of the others, in index order. A wall reflects a position
    ``p < 0`` to ``-p`` and ``p >= 1`` to the float below ``2 - p``, and turns the
    velocity. One pass in index order: the same on any thread count.

    >>> import numpy as np
    >>> stay, leaving = route(np.array([0.2, 0.7, -0.1]), np.array([0.2, 0.2, 0.1]),
    ...                       np.ones(3), np.ones(3), tile=0, grid=2)
    >>> stay[:, 0].tolist(), leaving[:, :3].tolist()
    ([0.2, 0.1], [[1.0, 0.0, 1.0]])
    """
    name = "particles_route"
    chk.array(name, "x", x, ndim=1, dtype=np.float64)
    for arg, a in (("y", y), ("vx", vx), ("vy", vy)):
        chk.array(name, arg, a, ndim=1, dtype=np.float64)
    chk.same_shape(name, {"x": x, "y": y, "vx": vx, "vy": vy})
    grid = int(grid)
    tile = int(tile)
    if grid < 1 or not 0 <= tile < grid * grid:
        raise chk.InvalidArgument(f"{name}: need grid >= 1 and 0 <= tile < grid**2, "
                                  f"got grid={grid}, tile={tile}")
    return _route(x, y, vx, vy, tile, grid)


def route_reference(x, y, vx, vy, tile, grid):
    """numpy twin of :func:`route` (what the particles workload did in numpy)."""
    for pos, vel in ((x, vx), (y, vy)):
        low, high = pos < 0.0, pos >= 1.0
        pos[low] = -pos[low]
        pos[high] = np.nextafter(2.0 - pos[high], 0.0)
        vel[low | high] = -vel[low | high]
    with np.errstate(invalid="ignore", over="ignore"):  # NaN casts to the most negative int64
        i = np.clip((y * grid).astype(np.int64), 0, grid - 1)
        j = np.clip((x * grid).astype(np.int64), 0, grid - 1)
    dest = i * grid + j
    new = np.column_stack([x, y, vx, vy])
    moving = dest != tile
    rows = np.flatnonzero(moving)
    leaving = np.column_stack([dest[rows].astype(float), np.full(rows.size, float(tile)),
                               rows.astype(float), new[rows]])
    return np.ascontiguousarray(new[~moving]), leaving


def make_route_inputs(n_units: int, dtype=np.float64, seed: int = 0):
    """``n_units`` particles of tile 7 of a 4 × 4 grid, some past its edges and the walls."""
    n = chk.n_units_arg("particles_route", n_units)
    g = chk.rng(seed)
    pos = g.uniform(-0.05, 1.05, size=(n, 2))
    pos[: n // 2] = g.uniform([0.75, 0.25], [1.02, 0.52], size=(n // 2, 2))
    vel = g.normal(0.0, 0.1, size=(n, 2))
    cols = [np.ascontiguousarray(c, dtype=np.float64) for c in (*pos.T, *vel.T)]
    return (*cols, 7, 4)
