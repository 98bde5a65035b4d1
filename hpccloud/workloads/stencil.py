"""``stencil2d``: Jacobi sweeps on 2-D tiles with a hot spot that moves.

The global ``n × n`` grid is cut into ``grid × grid`` tiles; each tile is stored
with a halo of width 1 that the runner exchanges before every step (the outer
boundary stays 0: fixed Dirichlet values). Every tile runs one 5-point sweep
per step; tiles inside the *hot spot* run ``1 + hot_sweeps`` sweeps (local
sub-cycling on their own halo, as adaptive codes do), so the load is uneven and
moves: the hot spot's centre circles the domain once every ``period`` steps.

The result is bit-for-bit independent of the rank count and of where tiles
live: a tile's update depends only on its data, its halo and the step.

Data classes: the leftmost ``eu_fraction`` of tile columns hold ``eu-personal``
data, the rest ``public``.
"""

from __future__ import annotations

import math

import numpy as np

from hpccloud.shards import tile_2d
from hpccloud.workloads.base import Workload


class Stencil2D(Workload):
    name = "stencil2d"
    kernel = "stencil2d"
    forecasts_work = True
    halo = True
    exact = True
    defaults = {
        "n": 2048,            # global grid side (cells)
        "grid": 8,            # tiles per side
        "hot_sweeps": 6,      # extra sweeps per step inside the hot spot
        "hot_radius": 0.3,    # hot-spot radius, as a fraction of the domain side
        "period": 40,         # steps per orbit of the hot spot
        "eu_fraction": 0.25,  # fraction of tile columns holding eu-personal data
        "dtype": "float64",
    }
    limits = {"n": (1, 1 << 22), "grid": (1, 1024), "hot_sweeps": (0, 1000),
              "hot_radius": (0.0, 2.0), "period": (1, None), "eu_fraction": (0.0, 1.0),
              "dtype": ("float64", "float32")}

    def check_params(self):
        p = self.params
        self.need(p["grid"] <= p["n"], f"grid={p['grid']} tiles per side but n={p['n']} cells",
                  "use grid <= n")

    def data_bytes(self):
        p = self.params
        return (p["n"] + 2 * p["grid"]) ** 2 * np.dtype(p["dtype"]).itemsize

    def result_bytes(self):
        return self.params["n"] ** 2 * np.dtype(self.params["dtype"]).itemsize

    recycle_departed = True  # nothing here keeps a view of a tile that left
    result_long_name = "Jacobi-relaxed field"
    result_units = "1"   # dimensionless (CF)

    def __init__(self, params=None, seed=0):
        super().__init__(params, seed)
        self._scratch: dict[int, np.ndarray] = {}
        import kernels

        self._kernel = kernels.get(self.kernel).kernel

    def shard_map(self, size):
        p = self.params
        g = p["grid"]
        k = int(round(p["eu_fraction"] * g))
        return tile_2d((p["n"], p["n"]), (g, g), np.dtype(p["dtype"]).str, size,
                       data_class=lambda sid, idx: "eu-personal" if sid % g < k else "public",
                       halo_width=1)

    def initial(self, shard):
        rows, cols = shard.index
        n = self.params["n"]
        y = (np.arange(rows.start, rows.stop) + 0.5) / n
        x = (np.arange(cols.start, cols.stop) + 0.5) / n
        field = np.sin(3 * np.pi * y)[:, None] * np.cos(2 * np.pi * x)[None, :]
        field += (np.hypot(y[:, None] - 0.3, x[None, :] - 0.6) < 0.1).astype(float)
        out = np.zeros((field.shape[0] + 2, field.shape[1] + 2), dtype=np.dtype(self.params["dtype"]))
        out[1:-1, 1:-1] = field
        return out

    def sweeps(self, shard, step: int) -> int:
        """Sweeps of ``shard`` at ``step``: 1, or 1 + hot_sweeps inside the hot spot."""
        p = self.params
        n = p["n"]
        rows, cols = shard.index
        cy = (rows.start + rows.stop) / (2 * n)
        cx = (cols.start + cols.stop) / (2 * n)
        phase = 2 * math.pi * step / p["period"]
        hy, hx = 0.5 + 0.3 * math.sin(phase), 0.5 + 0.3 * math.cos(phase)
        return 1 + (p["hot_sweeps"] if math.hypot(cy - hy, cx - hx) < p["hot_radius"] else 0)

    def work_estimate(self, shard, step):
        ny, nx = shard.shape
        return float(ny * nx * self.sweeps(shard, step))

    def compute(self, shard, arr, step):
        out = self._scratch.get(shard.id)
        if out is None or out.shape != arr.shape:
            out = self.empty(arr.shape, arr.dtype)
        sweeps = self.sweeps(shard, step)
        for _ in range(sweeps):
            self._kernel(arr, out)
            arr, out = out, arr
        self._scratch[shard.id] = out
        ny, nx = shard.shape
        return arr, float(ny * nx * sweeps)

    def pack(self, shard, arr):
        # into a recycled buffer when the pool has one of the size: the transport gives the
        # payload back to the pool once sent, so a later pack (or receive) writes warm
        # memory. np.ascontiguousarray wrote fresh pages every time: packing 8 tiles of
        # 512 KiB took 9 ms on a rank sharing its core, 1.4-5.3 ms per migration at 2 ranks
        out = self.empty((arr.shape[0] - 2, arr.shape[1] - 2), arr.dtype)
        out[...] = arr[1:-1, 1:-1]
        return out

    unpack_copies = 1.0  # into a tile with its halo ring

    def unpack(self, shard, payload):
        self.forget(shard.id)
        out = self.empty((payload.shape[0] + 2, payload.shape[1] + 2), payload.dtype)
        out[1:-1, 1:-1] = payload
        # the halo ring starts at zero, as in `initial` (the exchange overwrites inner faces)
        out[0, :] = 0
        out[-1, :] = 0
        out[1:-1, 0] = 0
        out[1:-1, -1] = 0
        return out

    def forget(self, sid):
        out = self._scratch.pop(sid, None)
        if out is not None and self.pool is not None:
            self.pool.give(out)

    def result(self, shard, arr):
        return np.ascontiguousarray(arr[1:-1, 1:-1])

    def result_axes(self, shape, steps):
        from hpccloud.io.provenance import Axis

        # cell centres on the unit square, as `initial` places them
        return [Axis(name, (np.arange(n) + 0.5) / n, "1", f"{name} (fraction of the domain side)")
                for name, n in zip(("y", "x"), shape, strict=True)]
