"""``logistic``: an ensemble of logistic maps, as a user's own hpccloud workload.

Point ``i`` of ``n`` iterates ``x <- r_i x (1 - x)`` with ``r_i = 3.5 + 0.5 i / n``.
Shard ``s`` (a block of points) iterates ``iters × (1 + skew × s / (shards - 1))``
times per step, so later shards cost more. A point depends only on its own
history: the result is the same on any rank count and wherever a shard lives.
"""

from __future__ import annotations

import numba
import numpy as np

from hpccloud.io.provenance import Axis
from hpccloud.workloads.base import Workload, class_by_fraction, rows_map
from kernels import KernelSpec


@numba.njit(cache=True)
def _logistic(x, r, iters):
    out = np.empty_like(x)
    for i in range(x.size):
        xi, ri = x[i], r[i]
        for _ in range(iters):
            xi = ri * xi * (1.0 - xi)
        out[i] = xi
    return out


def logistic(x: np.ndarray, r: np.ndarray, iters: int) -> np.ndarray:
    """``iters`` logistic-map iterations of every point (Numba)."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    r = np.ascontiguousarray(r, dtype=np.float64)
    if x.shape != r.shape:
        raise ValueError(f"logistic: x {x.shape} and r {r.shape} differ")
    return _logistic(x, r, int(iters))


def logistic_reference(x: np.ndarray, r: np.ndarray, iters: int) -> np.ndarray:
    """The numpy twin of :func:`logistic` (same operations, same order: equal bits)."""
    x = np.array(x, dtype=np.float64)
    for _ in range(int(iters)):
        x = r * x * (1.0 - x)
    return x


def _inputs(n_units: int, dtype=np.float64, seed: int = 0):
    iters = 16
    n = max(1, int(n_units) // iters)
    rng = np.random.default_rng(seed)
    return rng.uniform(0.1, 0.9, n), np.linspace(3.5, 4.0, n), iters


LOGISTIC_KERNEL = KernelSpec(
    name="logistic", kernel=logistic, reference=logistic_reference, make_inputs=_inputs,
    work_units=lambda x, r, iters: float(np.size(x) * iters), bytes_per_unit=0.0,
    memory_bound=False, dtypes=(np.float64,))


class Logistic(Workload):
    name = "logistic"
    kernel = "logistic"
    result_long_name = "logistic map state"
    result_units = "1"
    defaults = {
        "n": 200_000,         # points
        "shards": 16,
        "iters": 40,          # iterations per step of the cheapest shard
        "skew": 3.0,          # the last shard iterates (1 + skew) times as often
        "eu_fraction": 0.25,  # leading shards holding eu-personal data
    }

    #: checked before any work starts (hpccloud refuses values outside, naming the parameter)
    limits = {"n": (1, None), "shards": (1, None), "iters": (1, None), "skew": (0.0, None),
              "eu_fraction": (0.0, 1.0)}

    def __init__(self, params=None, seed=0):
        super().__init__(params, seed)
        self._r: dict[int, np.ndarray] = {}

    def data_bytes(self):
        # the stored states, plus the growth rates kept beside them
        return 2 * self.params["n"] * 8

    def result_bytes(self):
        return self.params["n"] * 8

    def iterations(self, sid: int) -> int:
        p = self.params
        return int(round(p["iters"] * (1 + p["skew"] * sid / max(1, p["shards"] - 1))))

    def rates(self, shard) -> np.ndarray:
        r = self._r.get(shard.id)
        if r is None:
            (rows,) = shard.index
            r = 3.5 + 0.5 * np.arange(rows.start, rows.stop) / self.params["n"]
            self._r[shard.id] = r
        return r

    def shard_map(self, size):
        p = self.params
        return rows_map(p["n"], None, p["shards"], "<f8", size,
                        class_by_fraction(p["shards"], p["eu_fraction"]))

    def initial(self, shard):
        return np.random.default_rng([self.seed, shard.id]).uniform(0.1, 0.9, shard.shape)

    def work_estimate(self, shard, step):
        return float(shard.shape[0] * self.iterations(shard.id))

    def compute(self, shard, arr, step):
        iters = self.iterations(shard.id)
        return logistic(arr, self.rates(shard), iters), float(arr.size * iters)

    def forget(self, sid):
        self._r.pop(sid, None)

    def result_axes(self, shape, steps):
        (n,) = shape
        return [Axis("r", 3.5 + 0.5 * np.arange(n) / n, "1", "growth rate")]

    def summary(self):
        return {"iterations_per_step": [self.iterations(s) for s in (0, self.params["shards"] - 1)]}


__all__ = ["LOGISTIC_KERNEL", "Logistic", "logistic", "logistic_reference"]
