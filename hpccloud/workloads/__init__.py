"""The workloads ``hpccloud run`` can run; see :class:`hpccloud.workloads.base.Workload`."""

from __future__ import annotations

from hpccloud.errors import InvalidArgument

WORKLOADS = {
    "stencil2d": "hpccloud.workloads.stencil:Stencil2D",
    "particles": "hpccloud.workloads.particles:Particles",
    "kmeans": "hpccloud.workloads.kmeans:KMeans",
    "mandelbrot": "hpccloud.workloads.mandelbrot:Mandelbrot",
    "spmv": "hpccloud.workloads.spmv:SpMV",
}


def make_workload(name: str, params=None, seed: int = 0):
    """Instantiate workload ``name`` with ``params`` (a dict of overrides)."""
    import importlib

    if name not in WORKLOADS:
        raise InvalidArgument(f"unknown workload {name!r}. Fix: use one of {sorted(WORKLOADS)}")
    module, cls = WORKLOADS[name].split(":")
    return getattr(importlib.import_module(module), cls)(params, seed)
