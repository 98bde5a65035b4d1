"""Where a moving load goes next: a motion-compensated forecast of the shards' work.

A load balancer plans on the last window's measurement, which is the right
forecast for a load that stays put and the wrong one for a load that moves:
a hot spot drifting across the field is, by the next window, on shards the
plan treated as cool, and the ranks that hold them are overloaded (with a
hot spot moving by its own width per window, planning on the last window made
``topo`` lose to a placement-blind greedy scatter).

:func:`forecast_work` compares the last two windows. If the pattern of work
(its deviation from the mean) correlates best with the window before at a
shift ``d`` along the shard order, the load has moved by ``d`` shards per
window, and the forecast is the last window's work moved by ``d`` once more.
On a 2-D tiled field numbered row by row, a translation by ``(dy, dx)`` tiles
is a shift of ``dy · gx + dx`` along that order (up to the row ends), so the
same search finds it. A load that does not move correlates best at ``d = 0``
and the forecast is the last window itself (returned as None). Shards the
moved pattern leaves uncovered (at the start of the order for ``d > 0``) keep
their last measurement.

>>> import numpy as np
>>> before = np.array([1., 1., 4., 4., 1., 1., 1., 1.])
>>> last = np.array([1., 1., 1., 4., 4., 1., 1., 1.])     # moved one shard right
>>> work, shift = forecast_work(last, before)
>>> shift, work.tolist()
(1, [1.0, 1.0, 1.0, 1.0, 4.0, 4.0, 1.0, 1.0])
>>> forecast_work(last, last) is None                      # no movement: plan on the last window
True
>>> rng = np.random.default_rng(0)                         # noise only: no pattern to follow
>>> forecast_work(1 + 0.05 * rng.standard_normal(4096), 1 + 0.05 * rng.standard_normal(4096)) is None
True
"""

from __future__ import annotations

import numpy as np

#: the smallest normalised correlation between the moved old pattern and the new one
MIN_MATCH = 0.5


def _cross_correlation(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(shifts, c)`` with ``c[i] = Σ_s a[s] · b[s − shifts[i]]`` (no wrap), by FFT."""
    n = a.size
    size = 1 << int(2 * n - 1).bit_length()
    c = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    shifts = np.concatenate([np.arange(n), np.arange(-(n - 1), 0)])
    return shifts, c[shifts % size]


def forecast_work(latest, previous) -> tuple[np.ndarray, int] | None:
    """The next window's work per shard, if the load moved between ``previous`` and ``latest``.

    Returns ``(work, shift)`` — ``latest`` moved by ``shift`` shards — or None when
    the best match is no shift (or either window has no pattern to follow).
    """
    a = np.asarray(latest, np.float64)
    b = np.asarray(previous, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2 or not (np.all(np.isfinite(a))
                                                               and np.all(np.isfinite(b))):
        return None
    da, db = a - a.mean(), b - b.mean()
    scale = float(np.sqrt(np.dot(da, da) * np.dot(db, db)))
    if scale <= 0.0:
        return None
    shifts, c = _cross_correlation(da, db)
    best = int(np.argmax(c))
    d = int(shifts[best])
    # no shift unless it matches better than none, and well: the pattern moved must explain
    # at least half of the new one (normalised correlation >= MIN_MATCH). Two windows of
    # pure measurement noise match best at some random shift, but weakly (~sqrt(2 ln n / n))
    if d == 0 or c[best] <= c[shifts == 0][0] + 1e-9 * scale or c[best] < MIN_MATCH * scale:
        return None
    work = a.copy()  # shards the moved pattern leaves uncovered keep their last measurement
    if d > 0:
        work[d:] = a[:-d]
    else:
        work[:d] = a[-d:]
    return work, d


__all__ = ["forecast_work"]
