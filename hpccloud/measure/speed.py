"""The compute model: rank r runs kernel k at ``v_rk`` work units per second.

Rates come from timed kernel runs on real data (the speed probe, then every
step window of the runner, :mod:`hpccloud.runner.window`); a shard's work units belong to the shard, so the same
shard predicts different times on ranks of different speed. A model built from
given numbers (simulator, tests) has provenance ``"synthetic"``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from hpccloud.errors import ConfigError


class SpeedModel:
    """Per-rank, per-kernel throughput in work units per second.

    Attributes
    ----------
    units_per_s : (P,) rates of the reference kernel (the one the speed probe ran).
    per_kernel : kernel name -> (P,) rates; NaN where a rank has no sample yet.
    """

    def __init__(self, size: int, reference_kernel: str = "stencil2d", provenance: str = "measured"):
        self.size = int(size)
        self.reference_kernel = reference_kernel
        self.provenance = provenance
        self.per_kernel: dict[str, np.ndarray] = {}

    @property
    def units_per_s(self) -> np.ndarray:
        return self.per_kernel.get(self.reference_kernel, np.full(self.size, np.nan))

    def rate(self, kernel: str | None = None) -> np.ndarray:
        """(P,) rates for ``kernel``; ranks without a sample fall back to the reference kernel
        scaled by the median ratio of the ranks that have both (so relative speeds survive)."""
        if kernel is None or kernel == self.reference_kernel:
            return self.units_per_s.copy()
        mine = self.per_kernel.get(kernel)
        ref = self.units_per_s
        if mine is None:
            return ref.copy()
        out = mine.copy()
        missing = ~np.isfinite(out)
        if missing.any():
            both = np.isfinite(mine) & np.isfinite(ref)
            scale = np.median(mine[both] / ref[both]) if both.any() else 1.0
            out[missing] = ref[missing] * scale
        return out

    def set_rates(self, kernel: str, units_per_s) -> None:
        """Replace all ranks' rates for ``kernel`` (e.g. after an allgather of measurements)."""
        arr = np.asarray(units_per_s, dtype=np.float64)
        if arr.shape != (self.size,):
            raise ValueError(f"expected {self.size} rates, got shape {arr.shape}")
        self.per_kernel[kernel] = arr.copy()

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "provenance": self.provenance,
            "reference_kernel": self.reference_kernel,
            "units_per_s": {k: [None if not np.isfinite(x) else float(x) for x in v]
                            for k, v in self.per_kernel.items()},
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any], source: str = "<speed model>") -> SpeedModel:
        try:
            rates = doc["units_per_s"]
            model = cls(int(doc["size"]), doc.get("reference_kernel", "stencil2d"),
                        doc.get("provenance", "measured"))
            for k, v in rates.items():
                model.set_rates(k, [np.nan if x is None else float(x) for x in v])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{source}: not a speed model ({exc!r}). Fix: use the JSON written "
                              "by hpccloud") from None
        return model

    @classmethod
    def synthetic(cls, units_per_s, kernel: str = "stencil2d") -> SpeedModel:
        arr = np.asarray(units_per_s, dtype=np.float64)
        model = cls(arr.shape[0], kernel, provenance="synthetic")
        model.set_rates(kernel, arr)
        return model


#: windows of measured rates an estimate draws on (the machine drifts: older ones go)
RATE_WINDOWS = 6
#: a rank whose newest window departs from its earlier ones by more than this many times
#: their noise changed speed: its earlier windows are dropped
JUMP_SIGMAS = 3.0


class RateEstimate:
    """The planner's rank speeds: each window's measured rates, shrunk towards the speed
    probe's by how much the ranks' rates scatter from window to window.

    A window's rate is a sample. Where ranks keep their relative speeds window after
    window (k-means, particles, mandelbrot: the next window's relative rates within
    0.3-3 % rms of this one's), the window is the estimate. Where they do not, a
    difference between ranks in one window is mostly noise: the stencil job's hot
    spot, moving over the tiles, changes which rank computes while the others wait
    at the step's sync (with the memory bandwidth to itself), and its ranks'
    relative rates changed by 19-25 % rms from one window to the next on the matrix
    layouts (±4 % with the hot spot off). The planner then moved tiles to ranks
    that were fast only in the window it planned on.

    The estimate is empirical Bayes (James-Stein) on the log rates relative to
    the probe's — both measured in this run, the probe with every rank busy at once:

    * ``z[w, r]``: window ``w``'s log rate of rank ``r`` less the probe's, less its
      mean over the ranks (the level, which follows the kernel and the machine's
      drift, comes from the newest window alone);
    * ``s2``: the scatter of a rank's ``z`` from window to window (pooled over the
      ranks), the noise of one window; ``tau2``: the spread of the ranks' mean
      ``z`` beyond what that noise explains;
    * estimate: the probe's log rate + the level + ``B`` × the rank's mean ``z``,
      ``B = tau2 / (tau2 + s2 / n)`` over the last :data:`RATE_WINDOWS` windows.

    ``B`` is 1 (the newest window as measured) until two windows are in, and
    without a measured prior; a rank whose newest window jumped away from its
    earlier ones (:data:`JUMP_SIGMAS`) starts afresh and is taken as measured.
    Replayed over 569 kept runs of the matrix (``benchmarks/rate_replay.py``),
    the estimate predicted the next window's relative rates at least as well as
    the newest window in 20 of 26 workload/layout cells: stencil rms 0.17-0.21
    against 0.19-0.25, spmv 0.03-0.05 against 0.04-0.07; k-means 2+1 0.024
    against 0.020 and particles 0.002-0.003 worse where it lost.

    >>> est = RateEstimate(np.array([1.0, 1.0]))
    >>> est.add(np.array([1.0, 2.0])).tolist(), est.shrink   # one window: as measured
    ([1.0, 2.0], 1.0)
    >>> r = est.add(np.array([2.0, 1.0]))                     # it flipped: noise
    >>> round(est.shrink, 6), bool(np.allclose(r, r[0]))
    (0.0, True)
    """

    def __init__(self, prior: np.ndarray | None, most: int = RATE_WINDOWS):
        p = None if prior is None else np.asarray(prior, np.float64)
        ok = p is not None and p.size > 0 and bool(np.all(np.isfinite(p) & (p > 0)))
        self.log_prior = np.log(p) if ok and p is not None else None
        self.rows: deque[np.ndarray] = deque(maxlen=most)
        self.shrink = 1.0  #: ``B`` of the newest estimate
        self.noise = float("nan")  #: ``sqrt(s2)``: one window's scatter of a rank's log rate

    def add(self, rates: np.ndarray) -> np.ndarray:
        """One window's measured rates (NaN: no sample on that rank); return the estimate."""
        r = np.asarray(rates, np.float64)
        if self.log_prior is None or r.shape != self.log_prior.shape:
            return r.copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(np.isfinite(r) & (r > 0), np.log(r), np.nan)
        dev = x - self.log_prior
        if not np.isfinite(dev).any():
            return r.copy()
        level = float(np.nanmean(dev))
        self.rows.append(dev - level)
        self._forget_before_jumps()
        z = np.array(self.rows)
        seen = np.isfinite(z).sum(axis=0)
        twice = seen >= 2
        if not twice.any():
            self.shrink, self.noise = 1.0, float("nan")
            return r.copy()
        s2 = _pooled_var(z[:, twice])
        zbar = _mean_seen(z, seen)
        zbar[seen > 0] -= zbar[seen > 0].mean()
        n = float(seen[twice].mean())
        tau2 = max(0.0, float(np.mean(zbar[seen > 0] ** 2)) - s2 / n)
        self.noise = float(np.sqrt(s2))
        self.shrink = tau2 / (tau2 + s2 / n) if tau2 + s2 > 0 else 1.0
        # a rank with one window since it changed (or since it had shards) is taken as measured
        return np.exp(self.log_prior + level + np.where(seen >= 2, self.shrink, 1.0) * zbar)

    def _forget_before_jumps(self) -> None:
        """Drop a rank's older windows when its newest left them by more than
        :data:`JUMP_SIGMAS` times the windows' noise: its speed changed (another job
        arrived on its cores, its clock dropped), and what it ran at before is no
        longer a sample of what it runs at now."""
        if len(self.rows) < 3:
            return
        past, now = np.array(list(self.rows)[:-1]), self.rows[-1]
        seen = np.isfinite(past).sum(axis=0)
        ok = (seen >= 2) & np.isfinite(now)
        if not ok.any():
            return
        s2 = _pooled_var(past[:, ok])
        jump = ok & (np.abs(now - _mean_seen(past, seen)) > JUMP_SIGMAS * np.sqrt(s2 * (1.0 + 1.0 / np.maximum(seen, 1))))
        for row in list(self.rows)[:-1]:
            row[jump] = np.nan


def _pooled_var(z: np.ndarray) -> float:
    """The per-column variance over the rows (NaN: no sample), pooled over the columns."""
    return float(np.mean(np.nanvar(z, axis=0, ddof=1)))


def _mean_seen(z: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Column means over the finite rows (0 where a column has none)."""
    return np.nansum(z, axis=0) / np.maximum(seen, 1)
