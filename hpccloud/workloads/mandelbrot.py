"""``mandelbrot``: escape counts on image tiles while the view zooms in.

The ``n × n`` image is cut into ``grid × grid`` tiles. At step ``t`` the view
is centred on a point of the set's boundary and ``zoom ** t`` times narrower
than the full set, so the cost per tile is very uneven (pixels inside the set
run all ``max_iter`` iterations) and shifts every step. Work units are the
iterations actually done.
"""

from __future__ import annotations

import numpy as np

from hpccloud.shards import tile_2d
from hpccloud.workloads.base import Workload


class Mandelbrot(Workload):
    name = "mandelbrot"
    kernel = "mandelbrot"
    forecasts_work = True
    defaults = {
        "n": 768,
        "grid": 8,
        "max_iter": 250,
        "zoom": 0.93,            # view width factor per step
        "centre_x": -0.743643887,
        "centre_y": 0.131825904,
        "eu_fraction": 0.0,
    }
    limits = {"n": (1, 1 << 20), "grid": (1, 4096), "max_iter": (1, 10_000_000),
              "zoom": (1e-6, 10.0), "centre_x": (-10.0, 10.0), "centre_y": (-10.0, 10.0),
              "eu_fraction": (0.0, 1.0)}

    def check_params(self):
        p = self.params
        self.need(p["grid"] <= p["n"], f"grid={p['grid']} tiles per side but n={p['n']} pixels",
                  "use grid <= n")

    def data_bytes(self):
        return self.params["n"] ** 2 * 4

    def __init__(self, params=None, seed=0):
        super().__init__(params, seed)
        import kernels
        from kernels.mandelbrot import iterations

        self._kernel = kernels.get(self.kernel).kernel
        self._iterations = iterations
        self._probe_pixel_cost: float | None = None

    def shard_map(self, size):
        p = self.params
        g = p["grid"]
        k = int(round(p["eu_fraction"] * g))
        return tile_2d((p["n"], p["n"]), (g, g), "<i4", size,
                       data_class=lambda sid, idx: "eu-personal" if sid % g < k else "public",
                       halo_width=0)

    def initial(self, shard):
        return np.zeros(shard.shape, dtype=np.int32)

    result_long_name = "escape iterations"
    result_units = "1"

    def result_axes(self, shape, steps):
        from hpccloud.io.provenance import Axis

        # pixel centres of the last step's view, as the kernel computes them
        x0, x1, y0, y1 = self.view(max(0, steps - 1))
        ny, nx = shape
        return [Axis("imag", y0 + (np.arange(ny) + 0.5) * (y1 - y0) / ny, "1", "imaginary part of c"),
                Axis("real", x0 + (np.arange(nx) + 0.5) * (x1 - x0) / nx, "1", "real part of c")]

    def view(self, step: int) -> tuple[float, float, float, float]:
        p = self.params
        half = 1.5 * p["zoom"] ** step
        return (p["centre_x"] - half, p["centre_x"] + half, p["centre_y"] - half, p["centre_y"] + half)

    #: escape counts sampled over all tiles by :meth:`work_estimate` (at most 16 × 16 per
    #: tile; 8 × 8 on the default grid: ~2 ms, correlation with the real cost 0.9998)
    ESTIMATE_SAMPLES = 1 << 12

    def work_estimate(self, shard, step):
        """The tile's cost in the speed probe's units: pixels of the probe's view.

        An ``s × s`` grid of the tile's pixels (``s`` ≤ 16, ~:data:`ESTIMATE_SAMPLES`
        over all tiles) escapes after ``m`` iterations on average; a pixel costs
        ``m + 1`` (the loop's own overhead), a pixel of the probe's mixed view
        (:func:`kernels.mandelbrot.make_inputs`, sampled alike) ``m_probe + 1``.
        A uniform estimate (pixels) left the hot tiles where the even split put
        them, several on one rank, until the first rebalance: on the default job a
        contiguous placement's first steps took ~1.5-2× greedy's scattered one.
        """
        ny, nx = shard.shape
        if nx * ny == 0:
            return 0.0
        side = max(1, min(16, int(np.sqrt(self.ESTIMATE_SAMPLES / self.params["grid"] ** 2))))
        counts = self._kernel(*self._bounds(shard, step), min(side, nx), min(side, ny),
                              self.params["max_iter"])
        return float(nx * ny) * (float(counts.mean(dtype=np.float64)) + 1.0) / self._probe_cost()

    def _probe_cost(self) -> float:
        """Mean cost of a pixel of the speed probe's view (iterations + 1), sampled 64 × 64."""
        if self._probe_pixel_cost is None:
            from kernels.mandelbrot import make_inputs

            x0, x1, y0, y1, _, _, max_iter = make_inputs(1 << 12)
            counts = self._kernel(x0, x1, y0, y1, 64, 64, max_iter)
            self._probe_pixel_cost = float(counts.mean(dtype=np.float64)) + 1.0
        return self._probe_pixel_cost

    def _bounds(self, shard, step: int) -> tuple[float, float, float, float]:
        """``(x0, x1, y0, y1)`` of ``shard``'s tile in the view of ``step``."""
        x0, x1, y0, y1 = self.view(step)
        n = self.params["n"]
        rows, cols = shard.index
        dx, dy = (x1 - x0) / n, (y1 - y0) / n
        return (x0 + cols.start * dx, x0 + cols.stop * dx, y0 + rows.start * dy, y0 + rows.stop * dy)

    def compute(self, shard, arr, step):
        rows, cols = shard.index
        counts = self._kernel(*self._bounds(shard, step), cols.stop - cols.start, rows.stop - rows.start,
                              self.params["max_iter"])
        return counts, self._iterations(counts)
