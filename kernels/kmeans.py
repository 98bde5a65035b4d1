"""``kmeans``: one shard's part of a Lloyd iteration.

For points ``X`` (n × d) and centroids ``C`` (k × d) it returns

* ``labels`` (n,) int64: the index of the nearest centroid (squared Euclidean
  distance ``Σ_f (x_f − c_f)²`` summed over features in order; ties go to the
  lowest index);
* ``sums`` (k × d) float64: the sum of the points assigned to each centroid;
* ``counts`` (k,) int64: how many points each centroid got.

The caller combines shards (``Σ sums / Σ counts``, e.g. with an MPI Allreduce)
to get the new centroids. Distances use the direct form rather than the BLAS
expansion ``‖x‖² − 2x·c + ‖c‖²``: for the small ``d`` (2–16) of this workload
the k·d loop per point is cheaper than a GEMM plus temporaries, and it does not
cancel catastrophically, so labels agree exactly with the reference.

Partial sums go to fixed chunks of ``CHUNK`` points (one private ``k × d``
buffer each) that are added in chunk order afterwards: the result does not
depend on the thread count.

Example
-------
>>> import numpy as np
>>> from kernels.kmeans import kmeans
>>> labels, sums, counts = kmeans(np.array([[0.0], [1.0], [9.0]]), np.array([[0.0], [10.0]]))
>>> labels.tolist(), sums.ravel().tolist(), counts.tolist()
([0, 0, 1], [1.0, 9.0], [2, 1])
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from kernels import _checks as chk

CHUNK = 4096


@njit(cache=True, parallel=True)
def _kmeans(points, centroids):
    n, d = points.shape
    k = centroids.shape[0]
    labels = np.empty(n, dtype=np.int64)
    nchunks = (n + CHUNK - 1) // CHUNK
    psums = np.zeros((nchunks, k, d), dtype=np.float64)
    pcounts = np.zeros((nchunks, k), dtype=np.int64)
    for c in prange(nchunks):  # each thread owns chunk c and its private buffers
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            best = 0
            best_d2 = np.inf
            for m in range(k):
                d2 = 0.0
                for f in range(d):
                    t = np.float64(points[i, f]) - centroids[m, f]
                    d2 += t * t
                if d2 < best_d2:
                    best_d2 = d2
                    best = m
            labels[i] = best
            pcounts[c, best] += 1
            for f in range(d):
                psums[c, best, f] += points[i, f]
    sums = np.zeros((k, d), dtype=np.float64)
    counts = np.zeros(k, dtype=np.int64)
    for c in range(nchunks):
        for m in range(k):
            counts[m] += pcounts[c, m]
            for f in range(d):
                sums[m, f] += psums[c, m, f]
    return labels, sums, counts


def kmeans(points: np.ndarray, centroids: np.ndarray):
    """Assignment plus partial sums and counts for one shard: ``(labels, sums, counts)``."""
    chk.array("kmeans", "points", points, ndim=2)
    chk.array("kmeans", "centroids", centroids, ndim=2, dtype=points.dtype)
    if centroids.shape[0] < 1:
        raise chk.InvalidArgument("kmeans: centroids must have at least one row")
    if centroids.shape[1] != points.shape[1]:
        raise chk.InvalidArgument(
            f"kmeans: points have {points.shape[1]} features but centroids have "
            f"{centroids.shape[1]}; they must match")
    return _kmeans(points, centroids)


def kmeans_reference(points, centroids):
    """numpy twin (broadcast distances in blocks, ``np.add.at`` for the sums)."""
    n, d = points.shape
    k = centroids.shape[0]
    labels = np.empty(n, dtype=np.int64)
    c64 = centroids.astype(np.float64)
    for lo in range(0, n, 8192):
        p = points[lo:lo + 8192].astype(np.float64)
        d2 = np.zeros((p.shape[0], k))
        for f in range(d):  # feature order as in the kernel, so near-ties resolve alike
            t = p[:, f, None] - c64[None, :, f]
            d2 += t * t
        labels[lo:lo + 8192] = np.argmin(d2, axis=1)
    sums = np.zeros((k, d))
    np.add.at(sums, labels, points.astype(np.float64))
    counts = np.bincount(labels, minlength=k).astype(np.int64)
    return labels, sums, counts


def make_inputs(n_units: int, dtype=np.float64, seed: int = 0, k: int = 8, d: int = 4):
    """``n_units`` points from ``k`` blobs in ``d`` dimensions and ``k`` starting centroids."""
    n = chk.n_units_arg("kmeans", n_units)
    g = chk.rng(seed)
    centres = g.uniform(-5, 5, size=(k, d))
    pts = centres[g.integers(0, k, size=n)] + g.standard_normal((n, d))
    start = centres + g.normal(0, 0.5, size=(k, d))
    return (np.ascontiguousarray(pts, dtype=dtype), np.ascontiguousarray(start, dtype=dtype))


def work_units(points, centroids) -> float:
    """Points assigned (each costs k·d multiply-adds)."""
    return float(points.shape[0])
